"""The served model seen from outside, for tests and benchmarks: ``mlflow models serve`` in
a process group, requests to it, and the raw request rows behind logged examples."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from core.layout import Layout


@contextlib.contextmanager
def model_server(uri: str, tracking_uri: str, log_path: Path, timeout: float = 180):
    """``mlflow models serve -m uri`` on 127.0.0.1 (one worker, this environment); yields
    its base URL once ``/ping`` answers, stops the whole process group after."""
    from jobs.spark import free_port

    port = free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    cmd = [mlflow_bin, "models", "serve", "-m", uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
        try:
            deadline = time.time() + timeout
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"mlflow models serve exited ({proc.returncode}): {log_path}"
                    )
                try:
                    with urllib.request.urlopen(f"{url}/ping", timeout=2):
                        break
                except OSError:
                    if time.time() > deadline:
                        raise TimeoutError(
                            f"{url} not ready after {timeout}s: {log_path}"
                        ) from None
                    time.sleep(1)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def invoke(url: str, rows: pd.DataFrame) -> np.ndarray:
    """The scores the server answers for ``rows`` (``dataframe_split`` JSON)."""
    body = {"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}
    req = urllib.request.Request(
        f"{url}/invocations",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return np.asarray(json.loads(r.read())["predictions"], np.float32).ravel()


def request_rows(layout: Layout, ds: str, examples: pd.DataFrame, catalog: bool = True):
    """The raw rows a search service sent for ``examples`` of day ``ds`` (a shop with
    impressions): the ids, the query, price and position shown (the day's impressions) and,
    with ``catalog``, the item's category, brand and title from the day's catalog."""
    from serving.inputs import RAW_COLUMNS

    events = pd.read_parquet(layout.clean_events(ds))
    shown = events[events["event_type"] == "impression"].drop_duplicates(["request_id", "item_id"])
    keys = ["request_id", "item_id"]
    raw = examples[[*keys, "user_id"]].merge(
        shown[[*keys, "query", "price", "position"]], on=keys, how="left"
    )
    if catalog:
        items = pd.read_parquet(layout.item_state(ds))[["item_id", "category", "brand", "title"]]
        raw = raw.merge(items, on="item_id", how="left")
    if len(raw) != len(examples):
        raise ValueError(f"{len(examples)} examples of {ds} matched {len(raw)} impressions")
    return raw[[c for c in RAW_COLUMNS if c in raw]]
