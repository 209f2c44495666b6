"""Where tests find MovieLens-100K, which is never committed: $STREAMREC_ML100K, else the shared
data folder beside the checkout. Tests that need it skip when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def ml100k_path() -> Path | None:
    candidates = [
        os.environ.get("STREAMREC_ML100K"),
        Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k" / "u.data",
    ]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


needs_ml100k = pytest.mark.skipif(ml100k_path() is None, reason="ML-100K u.data not available")
