"""Announce a delivered day to Airflow, so the nightly DAG runs for it right away.

A delivery (log shipper, importer) calls this once a day's files are complete::

    python -m ops.announce --ds 2026-11-20 [--api http://127.0.0.1:8080] [--user admin]

It logs in to the Airflow REST API and posts an event on asset ``freshrank_raw_delta`` with
``extra={"ds": ...}``; ``freshrank_nightly`` is scheduled on that asset (as well as nightly)
and processes the announced day. The password comes from ``AIRFLOW_PASSWORD`` or, for the
embedded setup, the generated ``simple_auth_manager_passwords.json.generated`` in
``AIRFLOW_HOME``; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from core.layout import check_ds

ASSET = "freshrank_raw_delta"


def call(url: str, method: str = "GET", body=None, token: str | None = None, timeout=30):
    """One JSON request; returns the decoded answer, raises HTTPError with the body on 4xx/5xx."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    with urllib.request.urlopen(req, timeout=timeout) as answer:
        return json.loads(answer.read() or b"{}")


def login(api: str, user: str, password: str) -> str:
    try:
        return call(f"{api}/auth/token", "POST", {"username": user, "password": password})[
            "access_token"
        ]
    except urllib.error.HTTPError as exc:
        raise PermissionError(f"Airflow at {api} refused the login of {user!r}: {exc}") from None


def default_password(user: str) -> str:
    if os.environ.get("AIRFLOW_PASSWORD"):
        return os.environ["AIRFLOW_PASSWORD"]
    home = Path(os.environ.get("AIRFLOW_HOME", "var/airflow"))
    path = home / "simple_auth_manager_passwords.json.generated"
    if not path.exists():
        raise FileNotFoundError(f"set AIRFLOW_PASSWORD: no generated password file at {path}")
    return json.loads(path.read_text())[user]


def announce(ds: str, api: str, token: str) -> dict:
    """Post the asset event for day ``ds``; returns the created event."""
    check_ds(ds)
    query = urllib.parse.urlencode({"name_pattern": ASSET})
    assets = call(f"{api}/api/v2/assets?{query}", token=token).get("assets", [])
    matches = [a for a in assets if a["name"] == ASSET]
    if not matches:
        raise LookupError(
            f"asset {ASSET!r} is unknown to {api}: has the DAG processor parsed freshrank_nightly?"
        )
    body = {"asset_id": matches[0]["id"], "extra": {"ds": ds}}
    return call(f"{api}/api/v2/assets/events", "POST", body, token)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ds", required=True, help="the delivered day, YYYY-MM-DD")
    parser.add_argument("--api", default=os.environ.get("AIRFLOW_API", "http://127.0.0.1:8080"))
    parser.add_argument("--user", default=os.environ.get("AIRFLOW_USER", "admin"))
    args = parser.parse_args(argv)
    token = login(args.api.rstrip("/"), args.user, default_password(args.user))
    event = announce(check_ds(args.ds), args.api.rstrip("/"), token)
    print(f"announced {args.ds} on asset {ASSET} (event {event.get('id')})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
