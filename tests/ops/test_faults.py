"""Faults (``ops.faults``): kill -9 during preprocessing, training and promotion, a full disk
and an unreachable MLflow store, each in a real child process, against its documented
outcome. The scenarios carry their own checks; the tests here assert that every one holds
and spot-check what users see."""

from __future__ import annotations

import pytest

from ops import faults

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    found = faults.run_faults(list(faults.FAULTS), tmp_path_factory.mktemp("faults"))
    return {r["name"]: r for r in found}


@pytest.mark.parametrize("name", list(faults.FAULTS))
def test_fault_meets_its_documented_outcome(results, name):
    result = results[name]
    assert result["problems"] == [], result
    assert result["verdict"] == "PASS"


def test_what_users_see(results):
    assert results["disk_full_preprocess"]["observed"].startswith(
        "preprocess: StorageFullError (File too large)"
    )
    assert results["disk_full_training"]["observed"].startswith(
        "fine_tune: StorageFullError (File too large)"
    )
    assert "killed: champion/previous 1/1; retry 2/1" == results["kill9_promotion"]["observed"]
    assert "retry resumed at epoch" in results["kill9_training"]["observed"]
    table = faults.format_table(list(results.values()))
    assert all(name in table for name in faults.FAULTS) and "FAIL" not in table


def test_disk_full_reason_reads_python_and_jvm_errors():
    from core.errors import disk_full_reason

    assert disk_full_reason(OSError(28, "No space left on device", "/d/x")) == (
        "No space left on device",
        "/d/x",
    )
    jvm = RuntimeError(
        "Task failed while writing rows to file:/d/.dt=1.staging/part-0.parquet\n"
        "Caused by: java.io.IOException: No space left on device"
    )
    wrapped = ValueError("stage failed")
    wrapped.__cause__ = jvm
    assert disk_full_reason(wrapped) == (
        "No space left on device",
        "/d/.dt=1.staging/part-0.parquet",
    )
    assert disk_full_reason(OSError(2, "No such file or directory")) is None
    assert disk_full_reason(RuntimeError("boom")) is None
