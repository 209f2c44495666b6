"""Smoke test of the benchmark entry point: `python -m bench --quick` runs and prints every row.

Benchmarks are not tests (DESIGN.md): nothing here looks at a measured number, only that each row
was measured (or skipped with a reason) and printed, so the README's `make bench` cannot rot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parent.parent

EXPECTED_ROWS = {
    "bare",
    "pipeline_knn",
    "pipeline_mf",
    "e2e_knn",
    "e2e_mf",
    "naive",
    "quix",  # measured when a Quix venv exists, else a skipped row with the reason
    "replay_knn",
    "replay_mf",
    "fresh_10000_knn",
    "fresh_10000_mf",
    "fresh_saturation_mf",
    "overload_rss_peak",
    "overload_drain",
    "overload_tail_fresh_p99",
    "topk_500",
    "topk_2000",
    "topk_river_500",
    "topk_speedup",
    "memory_mf",
    "memory_model_knn",
    "memory_model_mf",
    "checkpoint",
    "recovery",
    "ratio_e2e_knn_bare",
    "ratio_e2e_mf_bare",
    "ratio_e2e_knn_quix",
    "ratio_e2e_mf_quix",
}


def test_quick_bench_prints_every_row(kafka_bootstrap: str, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--bootstrap-servers",
            kafka_bootstrap,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    rows = {row["key"]: row for row in results["rows"]}
    assert set(rows) >= EXPECTED_ROWS, sorted(EXPECTED_ROWS - set(rows))
    for key, row in rows.items():
        # A row either has a value or says why not; a crash is never silent.
        assert row["value"] is not None or row["note"].startswith("skipped"), (key, row["note"])
        assert row["machine"]["cpu"] and row["date"], key
        assert row["name"] in done.stdout, f"{key} not printed"
    assert results["quick"] is True
    # README's Performance table is generated from this file, one line per row.
    table = subprocess.run(
        [sys.executable, "-m", "bench", "--markdown", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for row in rows.values():
        assert f"| {row['name']} |" in table, row["key"]
