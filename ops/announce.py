"""Announce a delivered day to Airflow, so the nightly DAG runs for it right away.

A delivery (log shipper, importer) calls this once a day's files are complete::

    python -m ops.announce --ds 2026-11-20 [--api http://127.0.0.1:8080] [--user admin]

It logs in to the Airflow REST API and posts an event on asset ``freshrank_raw_delta`` with
``extra={"ds": ...}``; ``freshrank_nightly`` is scheduled on that asset (as well as nightly)
and processes the announced day. With ``--hour HH`` it announces one delivered hour on
``freshrank_raw_hour`` (``extra={"ds": ..., "hour": HH}``), which ``freshrank_intraday``
is scheduled on. The password comes from ``AIRFLOW_PASSWORD`` or, for the
embedded setup, the generated ``simple_auth_manager_passwords.json.generated`` in
``AIRFLOW_HOME``; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import requests
from airflow_client.client import (
    ApiClient,
    AssetApi,
    AssetEventResponse,
    Configuration,
    CreateAssetEventsBody,
)
from airflow_client.client.exceptions import ApiException

from core.layout import check_ds, check_hour

ASSET = "freshrank_raw_delta"
HOUR_ASSET = "freshrank_raw_hour"
TIMEOUT = 30  # seconds, for each request (the generated client has no default)


def api_client(api: str, token: str | None = None) -> ApiClient:
    """A client of the Airflow REST API (``/api/v2``) at ``api`` that sends the bearer token;
    a new token goes into ``client.configuration.access_token``."""
    return ApiClient(Configuration(host=api.rstrip("/"), access_token=token))


def login(api: str, user: str, password: str) -> str:
    """A JWT for ``user``. ``/auth/token`` belongs to the auth manager, outside the /api/v2 spec
    that apache-airflow-client covers, so a plain POST with requests (as its docs do)."""
    url = f"{api}/auth/token"
    answer = requests.post(url, json={"username": user, "password": password}, timeout=TIMEOUT)
    if 400 <= answer.status_code < 500:
        raise PermissionError(
            f"Airflow at {api} refused the login of {user!r}: POST {url} answered "
            f"HTTP {answer.status_code} {answer.reason}"
        )
    answer.raise_for_status()  # 5xx: HTTPError naming the status and the URL
    return answer.json()["access_token"]


def default_password(user: str) -> str:
    if os.environ.get("AIRFLOW_PASSWORD"):
        return os.environ["AIRFLOW_PASSWORD"]
    home = Path(os.environ.get("AIRFLOW_HOME", "var/airflow"))
    path = home / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        raise FileNotFoundError(f"set AIRFLOW_PASSWORD: no generated password file at {path}")
    return json.loads(path.read_text())[user]


def announce(ds: str, api: str, token: str, hour: int | None = None) -> AssetEventResponse:
    """Post the asset event for day ``ds`` (or its ``hour``); returns the created event."""
    check_ds(ds)
    asset, extra = (ASSET, {"ds": ds}) if hour is None else (HOUR_ASSET, {"ds": ds, "hour": hour})
    dag = "freshrank_nightly" if hour is None else "freshrank_intraday"
    assets_api = AssetApi(api_client(api, token))
    request = f"GET {api}/api/v2/assets?name_pattern={asset}"
    try:
        assets = assets_api.get_assets(name_pattern=asset, _request_timeout=TIMEOUT).assets
        matches = [a for a in assets if a.name == asset]
        if not matches:
            raise LookupError(
                f"asset {asset!r} is unknown to {api}: has the DAG processor parsed {dag}?"
            )
        request = f"POST {api}/api/v2/assets/events"
        body = CreateAssetEventsBody(asset_id=matches[0].id, extra=extra)
        return assets_api.create_asset_event(body, _request_timeout=TIMEOUT)
    except ApiException as exc:
        raise RuntimeError(
            f"announcing {ds}: {request} answered HTTP {exc.status} {exc.reason}: {exc.body}"
        ) from exc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True, help="the delivered day, YYYY-MM-DD")
    parser.add_argument("--api", default=os.environ.get("AIRFLOW_API", "http://127.0.0.1:8080"))
    parser.add_argument("--user", default=os.environ.get("AIRFLOW_USER", "admin"))
    parser.add_argument("--hour", type=int, help="announce one delivered hour (0-23)")
    args = parser.parse_args(argv)
    hour = None if args.hour is None else check_hour(args.hour)
    token = login(args.api.rstrip("/"), args.user, default_password(args.user))
    event = announce(check_ds(args.ds), args.api.rstrip("/"), token, hour)
    what = args.ds if hour is None else f"{args.ds} hour {hour:02d}"
    print(f"announced {what} on asset {ASSET if hour is None else HOUR_ASSET} (event {event.id})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
