"""The catalog contract: what each item *is*, and the business rules over what may be shown.

A catalog stream (the `kafka.catalog_topic`, or a JSONL file given to `replay --catalog`) carries
three record types, told apart by `type` like events:

- `item`: the whole current description of one item, keyed by `item_id`; a later record for the
  same id replaces it;
- `retire`: the item is withdrawn for good (never recommended again). On Kafka a tombstone (key =
  item id, no value) means the same, so a compacted topic keeps only live items;
- `rule`: a business rule (see `Rule`), keyed by `rule:<name>`; a later record for the same name
  replaces it, `active: false` removes it.

Rules also come from settings (`model.rules`); a rule from the stream replaces a configured one of
the same name. `schemas/catalog.schema.json` is generated from these models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator

from streamrec.contract.events import ContextValue, Id
from streamrec.contract.timestamps import Timestamp

MAX_TITLE_LENGTH = 500
MAX_TEXT_LENGTH = 20_000
MAX_CATEGORIES = 32
MAX_ATTRIBUTES = 32
MAX_RULE_ITEMS = 1_000
MAX_BOOST = 1.0
"""A boost multiplies a model score by at most 1 + MAX_BOOST: a campaign nudges, never drowns the
model (a rule that must place an item whatever the model says is a `pin`)."""

Category = Annotated[str, Field(min_length=1, max_length=100)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False, strict=True)


class CatalogItem(_Record):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "item",
                    "item_id": "m1",
                    "title": "Toy Story (1995)",
                    "categories": ["Animation", "Children's", "Comedy"],
                    "attributes": {"year": 1995},
                },
                {"type": "item", "item_id": "sku-9", "title": "Mug", "available": False},
            ]
        }
    )

    type: Literal["item"]
    item_id: Id
    title: str = Field("", max_length=MAX_TITLE_LENGTH, description="Shown in reasons.")
    text: str = Field(
        "", max_length=MAX_TEXT_LENGTH, description="Free text (description, tags, credits)."
    )
    categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    available: bool = Field(True, description="False: kept, but never recommended meanwhile.")
    attributes: dict[str, float] = Field(
        default_factory=dict,
        max_length=MAX_ATTRIBUTES,
        description="Numeric attributes (price, year, ...) that rules can test.",
    )
    timestamp: Timestamp | None = Field(
        None, description="When the item appeared; default: when the record was written."
    )


class RetireItem(_Record):
    type: Literal["retire"]
    item_id: Id


class AttributeRange(_Record):
    """Items whose attribute `name` lies in [min, max] (either end open)."""

    name: Annotated[str, Field(min_length=1, max_length=100)]
    min: float | None = None
    max: float | None = None


class Rule(_Record):
    """One business rule, applied before each list's top-K is chosen (never after), so a list
    still holds K items whenever K eligible ones exist.

    The items a rule concerns are those named in `items`, or in one of `categories`, or whose
    attribute lies in `attribute`'s range (any of the three). `when` restricts the rule to
    requests whose context (the `context` of the event that refreshed the list) has all these
    values.

    - `exclude`: those items are not shown;
    - `boost`: their model scores are multiplied by 1 + `weight` (0 < weight <= 1);
    - `pin`: the first of them the user has not seen take the first `limit` slots, in `items`
      order (source "pinned", propensity 1);
    - `cap`: at most `limit` items of any one category per list (only `categories`, if given).
    """

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"type": "rule", "name": "no-horror-for-kids", "action": "exclude",
                 "categories": ["Horror"], "when": {"profile": "kids"}},
                {"type": "rule", "name": "spring-campaign", "action": "boost",
                 "items": ["m50", "m181"], "weight": 0.5},
                {"type": "rule", "name": "diversity", "action": "cap", "limit": 3},
            ]
        }
    )  # fmt: skip

    type: Literal["rule"] = "rule"
    name: Id
    action: Literal["exclude", "boost", "pin", "cap"]
    items: list[Id] = Field(default_factory=list, max_length=MAX_RULE_ITEMS)
    categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    attribute: AttributeRange | None = None
    when: dict[str, ContextValue] = Field(default_factory=dict, max_length=16)
    weight: float = Field(0.0, ge=0.0, le=MAX_BOOST, description="boost: score × (1 + weight).")
    limit: int = Field(1, ge=1, le=1000, description="pin: slots taken; cap: items per category.")
    active: bool = Field(True, description="False (on the catalog stream): remove the rule.")

    @model_validator(mode="after")
    def _check(self) -> Rule:
        targets = bool(self.items or self.categories or self.attribute)
        if self.action in ("exclude", "boost") and not targets:
            raise ValueError(f"a {self.action} rule names items, categories or an attribute")
        if self.action == "pin" and not self.items:
            raise ValueError("a pin rule names the items it pins")
        if self.action == "boost" and self.weight <= 0.0 and self.active:
            raise ValueError("a boost rule has a weight in (0, 1]")
        return self


CatalogRecord = Annotated[CatalogItem | RetireItem | Rule, Field(discriminator="type")]
CATALOG_ADAPTER: TypeAdapter[CatalogItem | RetireItem | Rule] = TypeAdapter(CatalogRecord)
AnyCatalogRecord = CatalogItem | RetireItem | Rule


def decode_catalog_record(data: bytes | str) -> AnyCatalogRecord:
    """Parse and validate one catalog record; pydantic.ValidationError if it is bad."""
    return CATALOG_ADAPTER.validate_json(data)


def catalog_schema() -> dict[str, Any]:
    return CATALOG_ADAPTER.json_schema()
