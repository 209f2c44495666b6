"""Quality on real data through the production replay: ML-100K, when the file is present.

These guard the numbers README reports against regressions in either direction: a drop is a
worse model, a jump is usually an evaluation bug (a list longer than K once counted hits past
rank 10 and reported Recall@10 = 0.58).
"""

from __future__ import annotations

import math
from pathlib import Path

from ml100k import ml100k_path, needs_ml100k

from streamrec.data.movielens import convert
from streamrec.evaluate.replay import ReplayOptions, replay
from streamrec.settings import ModelSettings


@needs_ml100k
def test_knn_recall_at_10_on_ml100k_clicks(tmp_path: Path) -> None:
    """Ratings >= 4 as clicks, test-then-learn: 0.1850 measured (bench/quality_ml100k.py)."""
    path = ml100k_path()
    assert path is not None
    log = tmp_path / "clicks.jsonl"
    n = convert(path, log, as_type="click", min_rating=4.0)
    settings = ModelSettings(ranker="knn", rating_model="biased_mf", positive_threshold=4.0)
    report, _ = replay(log, settings, ReplayOptions(k=10, window=math.ceil(n / 2), progress=False))
    assert report["k"] == 10
    assert 0.18 <= report["recall_at_k"] <= 0.20
    # Settings were chosen on the first half; the second must not be worse.
    first, second = (window["recall_at_k"] for window in report["series"])
    assert second >= first
