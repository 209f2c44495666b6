"""The item catalog: records, state, content features, business rules and readable reasons."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from streamrec.contract.catalog import CatalogItem, RetireItem, Rule, decode_catalog_record
from streamrec.contract.records import DeadLetter, Record
from streamrec.core.content import ContentIndex
from streamrec.core.pipeline import Pipeline
from streamrec.core.preprocess import Preprocessor
from streamrec.core.recommend import recommend
from streamrec.core.rules import RuleMeter
from streamrec.data.movielens import convert_catalog, is_catalog_file, read_catalog
from streamrec.settings import ModelSettings

CAT = "catalog"
T0 = 1_767_225_600_000  # 2026-01-01, epoch ms


def item(item_id: str, title: str, *categories: str, **extra: Any) -> Record:
    body = {"type": "item", "item_id": item_id, "title": title, "categories": list(categories)}
    return Record(orjson.dumps({**body, **extra}), key=item_id.encode(), topic=CAT)


def rule(**fields: Any) -> Record:
    return Record(orjson.dumps({"type": "rule", **fields}), topic=CAT)


def click(n: int, user: str, item_id: str, **context: Any) -> Record:
    event = {
        "event_id": f"e{n}",
        "type": "click",
        "user_id": user,
        "item_id": item_id,
        "timestamp": T0 + n * 1000,
    }
    if context:
        event["context"] = context
    return Record(orjson.dumps(event), key=user.encode(), topic="events")


CATALOG = [
    item("toy", "Toy Story (1995)", "Animation", "Comedy"),
    item("bug", "A Bug's Life (1998)", "Animation", "Comedy"),
    item("alien", "Alien (1979)", "Sci-Fi", "Horror"),
    item("aliens", "Aliens (1986)", "Sci-Fi", "Horror"),
    item("shrek", "Shrek (2001)", "Animation", "Comedy"),  # no event ever names it
    item("ring", "The Ring (2002)", "Horror"),
]


def world(**settings: Any) -> Pipeline:
    """A pipeline that knows the catalog and a few users: fans of animation, fans of sci-fi."""
    pipeline = Pipeline(
        ModelSettings(**{"exploration": "none", **settings}), catalog_topic=CAT, decision_log=True
    )
    pipeline.process(CATALOG, refresh=False)
    events, n = [], 0
    for u in range(6):
        for item_id in ("toy", "bug") if u % 2 == 0 else ("alien", "aliens"):
            events.append(click(n, f"u{u}", item_id))
            n += 1
    events.append(click(n, "u0", "ring"))
    pipeline.process(events, refresh=False)
    return pipeline


def lists_for(pipeline: Pipeline, user: str, **context: Any) -> list[Any]:
    model = pipeline.model
    meter = RuleMeter()
    (slots,) = recommend(
        model, [model.user_index[user]], 5, pipeline.policy, [context or None], meter
    )
    return [(model.item_ids[s.item], s.source, s.reason, s.propensity) for s in slots], meter


# ---- contract --------------------------------------------------------------------------------


def test_catalog_records_decode_and_bad_ones_say_why() -> None:
    record = decode_catalog_record(b'{"type":"item","item_id":"m1","title":"Toy Story"}')
    assert isinstance(record, CatalogItem) and record.available and record.categories == []
    assert isinstance(decode_catalog_record(b'{"type":"retire","item_id":"m1"}'), RetireItem)
    assert isinstance(
        decode_catalog_record(b'{"type":"rule","name":"c","action":"cap","limit":2}'), Rule
    )
    for bad in (
        b'{"type":"item","title":"no id"}',
        b'{"type":"item","item_id":"m1","attributes":{"price":"cheap"}}',
        b'{"type":"rule","name":"b","action":"boost","items":["m1"],"weight":5}',
        b'{"type":"rule","name":"p","action":"pin"}',
    ):
        with pytest.raises(ValidationError):
            decode_catalog_record(bad)


def test_preprocessor_turns_tombstones_into_retirements_and_bad_records_into_dead_letters() -> None:
    pre = Preprocessor(ModelSettings())
    assert pre.check_catalog(Record(None, key=b"m1", topic=CAT)) == RetireItem(
        type="retire", item_id="m1"
    )
    dead = pre.check_catalog(Record(b'{"type":"item","item_id":"m1","available":"no"}'))
    assert isinstance(dead, DeadLetter) and dead.reason == "invalid_catalog"
    assert "available" in dead.error
    dead = pre.check_catalog(Record(b'{"type":"movie"}'))
    assert isinstance(dead, DeadLetter) and dead.reason == "unknown_type"
    dead = pre.check_catalog(Record(None))
    assert isinstance(dead, DeadLetter) and dead.reason == "empty_value"


def test_pipeline_sends_bad_catalog_records_to_dead_letters_and_learns_no_event() -> None:
    pipeline = Pipeline(ModelSettings(), catalog_topic=CAT)
    result = pipeline.process([CATALOG[0], Record(b"{oops", topic=CAT)])
    assert [d.reason for d in result.dead_letters] == ["invalid_json"]
    assert result.learned == 0 and pipeline.events_learned == 0
    assert result.report is not None and result.report.catalog_records == 1
    assert pipeline.model.item_ids == ["toy"]  # known before its first event


# ---- content features and reasons ------------------------------------------------------------


def test_a_new_item_with_a_catalog_record_ranks_for_the_right_users_before_any_event() -> None:
    pipeline = world()
    animation_fan, _ = lists_for(pipeline, "u2")
    scifi_fan, _ = lists_for(pipeline, "u1")
    assert "shrek" in [i for i, *_ in animation_fan]  # shares Animation + Comedy
    assert "shrek" not in [i for i, *_ in scifi_fan]
    reason = next(r for i, _, r, _ in animation_fan if i == "shrek")
    assert reason in ("because you liked Toy Story (1995)", "because you liked A Bug's Life (1998)")


def test_without_content_weight_a_never_clicked_item_cannot_rank() -> None:
    pipeline = world(content_weight=0.0)
    animation_fan, _ = lists_for(pipeline, "u2")
    assert "shrek" not in [i for i, *_ in animation_fan]


def test_reasons_name_titles_and_categories() -> None:
    pipeline = world()
    slots, _ = lists_for(pipeline, "u4")
    reasons = {i: r for i, _, r, _ in slots}
    assert all("u" not in r.split()[-1] for r in reasons.values())  # no user/item ids
    popular = [r for i, s, r, _ in slots if s == "popular"]
    assert all(r.startswith("popular in ") and r.endswith(" this week") for r in popular)
    model = [r for i, s, r, _ in slots if s == "model"]
    assert model and all(r.startswith("because you liked ") for r in model)
    assert all(r.removeprefix("because you liked ").endswith(")") for r in model)  # a title


def test_content_vectors_depend_on_the_catalog_not_on_its_edit_order() -> None:
    a, b = ContentIndex(), ContentIndex()
    a.upsert(0, "Old title", ["Drama"])
    a.upsert(1, "Alien", ["Sci-Fi"])
    a.upsert(0, "Toy Story", ["Comedy"])  # replaces: the old words leave the frequencies
    a.upsert(2, "gone", ["Horror"])
    a.remove(2)
    b.upsert(1, "Alien", ["Sci-Fi"])
    b.upsert(0, "Toy Story", ["Comedy"])
    assert pickle.dumps(a.__getstate__()) == pickle.dumps(b.__getstate__())
    assert (a.matrix().data == b.matrix().data).all()


# ---- availability and rules ------------------------------------------------------------------


def test_unavailable_and_retired_items_are_never_shown_and_filtering_is_metered() -> None:
    pipeline = world()
    first, _ = lists_for(pipeline, "u2")
    assert "shrek" in [i for i, *_ in first]
    pipeline.process([item("shrek", "Shrek (2001)", "Animation", available=False)], refresh=False)
    hidden, meter = lists_for(pipeline, "u2")
    assert "shrek" not in [i for i, *_ in hidden]
    assert meter.counts.get(("unavailable", "filtered"), 0) >= 1
    pipeline.process([item("shrek", "Shrek (2001)", "Animation")], refresh=False)
    assert "shrek" in [i for i, *_ in lists_for(pipeline, "u2")[0]]
    pipeline.process([Record(None, key=b"shrek", topic=CAT)], refresh=False)  # tombstone
    pipeline.process([item("shrek", "Shrek (2001)", "Animation")], refresh=False)
    assert "shrek" not in [i for i, *_ in lists_for(pipeline, "u2")[0]]  # retired for good


def test_exclude_rule_applies_only_to_matching_request_contexts() -> None:
    kids = {"name": "kids", "action": "exclude", "categories": ["Horror"], "when": {"p": "kids"}}
    pipeline = world(rules=[kids])
    everyone, _ = lists_for(pipeline, "u3")
    kid, meter = lists_for(pipeline, "u3", p="kids")
    assert any(i in ("ring", "alien", "aliens") for i, *_ in everyone)
    assert not any(i in ("ring", "alien", "aliens") for i, *_ in kid)
    assert meter.counts.get(("kids", "filtered"), 0) >= 1
    assert {i for i, *_ in kid} == {"toy", "bug"}  # every eligible item the sources offer


def test_rules_from_the_stream_replace_configured_ones_and_can_be_removed() -> None:
    configured = {"name": "no-horror", "action": "exclude", "categories": ["Horror"]}
    pipeline = world(rules=[configured])
    assert "ring" not in [i for i, *_ in lists_for(pipeline, "u1")[0]]
    pipeline.process(
        [rule(name="no-horror", action="exclude", items=["toy"])], refresh=False
    )  # same name: replaces the configured rule
    shown = [i for i, *_ in lists_for(pipeline, "u1")[0]]
    assert "ring" in shown and "toy" not in shown
    pipeline.process(
        [rule(name="no-horror", action="exclude", items=["toy"], active=False)], refresh=False
    )  # removed: the configured rule of that name is back
    assert "ring" not in [i for i, *_ in lists_for(pipeline, "u1")[0]]


def test_pin_takes_the_first_slot_with_propensity_one_and_no_bandit_update() -> None:
    pin = {"name": "campaign", "action": "pin", "items": ["ring"], "limit": 1}
    pipeline = world(rules=[pin])
    slots, meter = lists_for(pipeline, "u2")
    assert slots[0][:2] == ("ring", "pinned") and slots[0][3] == 1.0
    assert slots[0][2] == "featured"
    assert meter.counts[("campaign", "pinned")] == 1
    seen_user, _ = lists_for(pipeline, "u0")  # u0 clicked "ring": never pinned to them
    assert "ring" not in [i for i, *_ in seen_user]
    result = pipeline.process([click(100, "u2", "toy")])
    assert result.recommendations[0].items[0].source == "pinned"
    pipeline.flush_pending()
    assert "pinned" not in getattr(pipeline.policy.policy, "_counts", {})


def test_boost_reorders_model_picks_within_a_bounded_factor() -> None:
    # Content weighs as much as co-occurrence here, so the two model picks score close.
    plain, _ = lists_for(world(content_weight=1.0), "u2")
    model_order = [i for i, s, *_ in plain if s == "model"]
    assert len(model_order) >= 2
    last = model_order[-1]
    boost = {"name": "push", "action": "boost", "items": [last], "weight": 1.0}
    boosted, meter = lists_for(world(content_weight=1.0, rules=[boost]), "u2")
    new_order = [i for i, s, *_ in boosted if s == "model"]
    assert new_order.index(last) < model_order.index(last)
    assert meter.counts[("push", "boosted")] == 1


def test_cap_limits_items_per_category_and_still_fills_k() -> None:
    cap = {"name": "diverse", "action": "cap", "categories": ["Animation"], "limit": 1}
    pipeline = world(rules=[cap])
    slots, meter = lists_for(pipeline, "u1")
    categories = pipeline.model.catalog.categories
    index = pipeline.model.item_index
    animated = [i for i, *_ in slots if "Animation" in categories.get(index[i], ())]
    assert len(animated) <= 1
    uncapped, _ = lists_for(world(), "u1")
    assert len(slots) == min(len(uncapped), len(slots))
    assert meter.counts.get(("diverse", "capped"), 0) >= 1 or len(animated) == len(
        [i for i, *_ in uncapped if "Animation" in categories.get(index[i], ())]
    )


def test_logged_propensities_match_the_draws_under_rules() -> None:
    """Off-policy evaluation needs P(item in slot) exactly: sample the first slot many times
    under an exclusion and a cap and compare frequencies with the logged propensities."""
    rules = [
        {"name": "no-toy", "action": "exclude", "items": ["toy"]},
        {"name": "diverse", "action": "cap", "categories": ["Sci-Fi"], "limit": 1},
    ]
    pipeline = world(rules=rules, exploration="epsilon_greedy", exploration_params={"epsilon": 0.5})
    model = pipeline.model
    # Give the policy enough pulls to leave burn-in, so the draw is a real mixture.
    for arm in ("model", "popular", "new"):
        for _ in range(200):
            pipeline.policy.update(arm, 0.0, 1.0)
    user = model.user_index["u2"]
    n = 3000
    firsts: Counter[str] = Counter()
    seconds: dict[str, Counter[str]] = {}
    logged: dict[tuple[str, ...], float] = {}
    for _ in range(n):
        (slots,) = recommend(model, [user], 5, pipeline.policy, [None])
        a, b = (model.item_ids[s.item] for s in slots[:2])
        assert "toy" not in (a, b)
        firsts[a] += 1
        seconds.setdefault(a, Counter())[b] += 1
        logged[(a,)] = slots[0].propensity
        logged[(a, b)] = slots[1].propensity  # given the first slot
    assert len(firsts) >= 2

    def close(seen: int, p: float, trials: int) -> bool:
        return abs(seen - p * trials) <= 4 * (trials * p * (1 - p)) ** 0.5 + 1

    for a, seen in firsts.items():
        assert close(seen, logged[(a,)], n), (a, seen, logged[(a,)])
    # The second slot, given the first: after "aliens" the cap keeps "alien" out of it.
    assert "alien" not in seconds.get("aliens", {})
    for a, following in seconds.items():
        for b, seen in following.items():
            assert close(seen, logged[(a, b)], firsts[a]), (a, b, seen, logged[(a, b)])
    assert max(len(following) for following in seconds.values()) >= 2


def test_catalog_state_survives_a_checkpoint_round_trip() -> None:
    pipeline = world(rules=[{"name": "c", "action": "cap", "limit": 1}])
    pipeline.process([rule(name="x", action="exclude", categories=["Horror"])], refresh=False)
    restored = Pipeline.from_state(
        pipeline.settings, pickle.loads(pickle.dumps(pipeline.state())), catalog_topic=CAT
    )
    assert restored.model_digest() == pipeline.model_digest()
    assert lists_for(restored, "u2")[0] == lists_for(pipeline, "u2")[0]


# ---- MovieLens item files --------------------------------------------------------------------


def test_convert_reads_ml100k_u_item_and_movielens_movies_csv(tmp_path: Path) -> None:
    u_item = tmp_path / "u.item"
    flags = ["0"] * 19
    comedy = flags.copy()
    comedy[5] = comedy[3] = "1"
    u_item.write_bytes(
        ("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(comedy) + "\n").encode("latin-1")
        + ("2|Café (1994)|01-Jan-1994||http://y|" + "|".join(["1", *flags[1:]]) + "\n").encode(
            "latin-1"
        )
    )
    movies = tmp_path / "movies.csv"
    movies.write_text(
        'movieId,title,genres\n1,"American President, The (1995)",Comedy|Drama|Romance\n'
        "2,Unknown Film,(no genres listed)\n"
    )
    assert is_catalog_file(u_item) and is_catalog_file(movies)
    assert read_catalog(u_item) == [
        {
            "type": "item",
            "item_id": "1",
            "title": "Toy Story (1995)",
            "categories": ["Animation", "Comedy"],
            "attributes": {"year": 1995.0},
        },
        {"type": "item", "item_id": "2", "title": "Café (1994)", "attributes": {"year": 1994.0}},
    ]
    out = tmp_path / "catalog.jsonl"
    assert convert_catalog(movies, out) == 2
    first, second = (orjson.loads(line) for line in out.read_bytes().splitlines())
    assert first["title"] == "American President, The (1995)"
    assert first["categories"] == ["Comedy", "Drama", "Romance"]
    assert "categories" not in second
    for line in out.read_bytes().splitlines():
        decode_catalog_record(line)  # every converted record is valid


def test_evaluation_lists_keep_k_items_under_a_cap_rule() -> None:
    """A cap rule makes the list builder ask for 3k model picks; the evaluated top-K must still
    be K long (a longer one once doubled Recall@10)."""
    from streamrec.core.recommend import popular_order, top_items

    pipeline = world(rules=[{"name": "c", "action": "cap", "limit": 1}])
    model = pipeline.model
    users = list(range(model.n_users))
    for shown in top_items(model, users, 1, popular_order(model, 10)):
        assert len(shown) <= 1
