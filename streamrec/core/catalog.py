"""What each item is: the catalog state the model keeps beside what it learned from events.

Keyed by the model's item index (a catalog record for an item no event named yet adds the item, so
it can be recommended before its first click). Holds titles, categories, numeric attributes,
availability, retirements, the rules that came on the catalog stream, and the content vectors
(`ContentIndex`). It is part of the model, hence of every checkpoint and digest, and with a learn
log every instance applies the same catalog records in the same order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamrec.contract.catalog import CatalogItem, Rule
from streamrec.core.content import ContentIndex
from streamrec.learners.base import IntArray


class Catalog:
    def __init__(self) -> None:
        self.titles: dict[int, str] = {}
        self.categories: dict[int, tuple[str, ...]] = {}
        self.attributes: dict[int, dict[str, float]] = {}
        self.unavailable: set[int] = set()  # available: false, or retired
        self.retired: set[int] = set()
        self.rules: dict[str, Rule] = {}  # from the catalog stream, by name
        self.content = ContentIndex()
        self.version = 0  # bumped by every change: what caches of derived data compare
        self._blocked: tuple[int, IntArray] | None = None

    def __len__(self) -> int:
        return len(self.titles.keys() | self.categories.keys())

    def __getstate__(self) -> dict[str, Any]:
        # Sorted: the state (and digest) depends on the catalog's content, not on edit order.
        return {
            "titles": sorted(self.titles.items()),
            "categories": sorted(self.categories.items()),
            "attributes": sorted((i, sorted(a.items())) for i, a in self.attributes.items()),
            "unavailable": sorted(self.unavailable),
            "retired": sorted(self.retired),
            "rules": sorted((name, rule.model_dump()) for name, rule in self.rules.items()),
            "content": self.content,
            "version": self.version,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.titles = dict(state["titles"])
        self.categories = dict(state["categories"])
        self.attributes = {i: dict(a) for i, a in state["attributes"]}
        self.unavailable = set(state["unavailable"])
        self.retired = set(state["retired"])
        self.rules = {name: Rule.model_validate(rule) for name, rule in state["rules"]}
        self.content = state["content"]
        self.version = state["version"]
        self._blocked = None

    # ---- changes ---------------------------------------------------------------------------

    def upsert(self, item: int, record: CatalogItem) -> None:
        """Replace what the catalog says about `item` (a retired item stays retired)."""
        self._drop(item)
        if record.title:
            self.titles[item] = record.title
        if record.categories:
            self.categories[item] = tuple(dict.fromkeys(record.categories))
        if record.attributes:
            self.attributes[item] = dict(record.attributes)
        if not record.available or item in self.retired:
            self.unavailable.add(item)
        else:
            self.unavailable.discard(item)
        if item not in self.retired:
            self.content.upsert(item, f"{record.title} {record.text}", record.categories)
        self.version += 1

    def retire(self, item: int) -> None:
        """Withdraw `item` for good: never recommended again, its content forgotten."""
        self.retired.add(item)
        self.unavailable.add(item)
        self.content.remove(item)
        self.version += 1

    def set_rule(self, rule: Rule) -> None:
        """A rule from the stream: replaces the rule of that name; inactive removes it."""
        if rule.active:
            self.rules[rule.name] = rule
        else:
            self.rules.pop(rule.name, None)
        self.version += 1

    def _drop(self, item: int) -> None:
        self.titles.pop(item, None)
        self.categories.pop(item, None)
        self.attributes.pop(item, None)

    # ---- reading ---------------------------------------------------------------------------

    def blocked(self) -> IntArray:
        """Items never shown now (unavailable or retired), sorted."""
        if self._blocked is None or self._blocked[0] != self.version:
            items = np.array(sorted(self.unavailable), dtype=np.int64)
            self._blocked = (self.version, items)
        return self._blocked[1]

    def title(self, item: int, item_id: str) -> str:
        return self.titles.get(item, item_id)

    def first_category(self, item: int) -> str | None:
        categories = self.categories.get(item)
        return categories[0] if categories else None
