"""The JSON Schema files `schemas/` holds, generated from the contract's models
(`streamrec schemas --out schemas/`; a test keeps the files equal to this)."""

from __future__ import annotations

from typing import Any

from streamrec.contract.catalog import catalog_schema
from streamrec.contract.events import EVENT_ADAPTER, RECOMMENDATION_ADAPTER


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema files that `schemas/` must contain, by file name."""
    return {
        "event.schema.json": EVENT_ADAPTER.json_schema(),
        "recommendation.schema.json": RECOMMENDATION_ADAPTER.json_schema(),
        "catalog.schema.json": catalog_schema(),
    }
