"""Business rules, resolved to item indices for one request, and a meter of what each one did.

The rules in force are the configured ones (`model.rules`) with those from the catalog stream
replacing configured ones of the same name, plus the built-in `unavailable` (items the catalog
marks unavailable or retired are never shown). `resolve` turns them, for one request context, into
item sets the list builder applies *before* choosing each slot (`core/recommend.py`), so the
probabilities logged with each slot are the ones the draw used and off-policy estimates stay
valid. Resolutions are cached per catalog version, item count and context: a refresh resolves
once per distinct context, not once per list.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrec.contract.catalog import Rule
from streamrec.contract.events import ContextValue
from streamrec.core.catalog import Catalog
from streamrec.learners.base import IntArray

UNAVAILABLE = "unavailable"
"""The built-in rule's name (metric label)."""

_EMPTY = np.empty(0, dtype=np.int64)


@dataclass(frozen=True, eq=False)
class ListRules:
    """The rules of one request, as item indices."""

    excluded: IntArray  # sorted union of every exclusion
    exclusions: tuple[tuple[str, IntArray], ...]  # per rule, for the meter
    boosts: tuple[tuple[str, IntArray, float], ...]
    pins: tuple[tuple[str, tuple[int, ...], int], ...]
    caps: tuple[tuple[str, frozenset[str] | None, int], ...]

    @property
    def reorders(self) -> bool:
        """True when slots are not simply the model's order (pins or caps)."""
        return bool(self.pins or self.caps)


NO_RULES = ListRules(_EMPTY, (), (), (), ())


@dataclass
class RuleMeter:
    """Items affected per (rule, effect), for `streamrec_rule_items_total`."""

    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def add(self, rule: str, effect: str, n: int) -> None:
        if n:
            key = (rule, effect)
            self.counts[key] = self.counts.get(key, 0) + n


def rules_in_force(configured: Sequence[Rule], catalog: Catalog) -> list[Rule]:
    """Configured rules, replaced by stream rules of the same name; in name order."""
    merged = {rule.name: rule for rule in configured}
    merged.update(catalog.rules)
    return [merged[name] for name in sorted(merged)]


def _applies(rule: Rule, context: Mapping[str, ContextValue] | None) -> bool:
    if not rule.when:
        return True
    if not context:
        return False
    return all(context.get(key) == value for key, value in rule.when.items())


def targets(rule: Rule, catalog: Catalog, item_index: Mapping[str, int]) -> IntArray:
    """The items a rule concerns, sorted."""
    found: set[int] = {item_index[i] for i in rule.items if i in item_index}
    if rule.categories:
        wanted = set(rule.categories)
        found.update(i for i, cats in catalog.categories.items() if wanted.intersection(cats))
    if rule.attribute is not None:
        name, low, high = rule.attribute.name, rule.attribute.min, rule.attribute.max
        for i, attributes in catalog.attributes.items():
            value = attributes.get(name)
            if (
                value is not None
                and (low is None or value >= low)
                and (high is None or value <= high)
            ):
                found.add(i)
    return np.array(sorted(found), dtype=np.int64)


def resolve(
    configured: Sequence[Rule],
    catalog: Catalog,
    item_index: Mapping[str, int],
    context: Mapping[str, ContextValue] | None,
    cache: dict[tuple[object, ...], ListRules],
) -> ListRules:
    """The rules of a request with this context (`cache`: the caller's, per refresh)."""
    rules = rules_in_force(configured, catalog)
    if not rules and not catalog.unavailable:
        return NO_RULES
    applicable = [rule for rule in rules if _applies(rule, context)]
    key = (catalog.version, len(item_index), tuple(rule.name for rule in applicable))
    found = cache.get(key)
    if found is not None:
        return found
    blocked = catalog.blocked()
    exclusions: list[tuple[str, IntArray]] = [(UNAVAILABLE, blocked)] if len(blocked) else []
    boosts, pins, caps = [], [], []
    for rule in applicable:
        if rule.action == "exclude":
            exclusions.append((rule.name, targets(rule, catalog, item_index)))
        elif rule.action == "boost":
            boosts.append((rule.name, targets(rule, catalog, item_index), 1.0 + rule.weight))
        elif rule.action == "pin":
            pinned = tuple(item_index[i] for i in rule.items if i in item_index)
            pins.append((rule.name, pinned, rule.limit))
        else:
            caps.append((rule.name, frozenset(rule.categories) or None, rule.limit))
    excluded = (
        np.unique(np.concatenate([items for _, items in exclusions])) if exclusions else _EMPTY
    )
    resolved = ListRules(excluded, tuple(exclusions), tuple(boosts), tuple(pins), tuple(caps))
    cache[key] = resolved
    return resolved
