"""The one pipeline, list in → list out: learning, the recommendation contract, state rules."""

from __future__ import annotations

import math
import pickle
import tracemalloc

import orjson
import pytest

from streamrec.bandit.policies import SlotPolicy
from streamrec.contract.records import Record
from streamrec.core.pipeline import Pipeline
from streamrec.core.quality import PrequentialEvaluator
from streamrec.core.recommend import popular_order, top_items
from streamrec.data.synthetic import generate_events
from streamrec.io.file_source import from_values
from streamrec.settings import ModelSettings

FAST = ModelSettings(rating_model="biased_mf")


def batches(n: int, size: int = 500, **kwargs: object) -> list[list[Record]]:
    return list(from_values(generate_events(n, **kwargs), batch_size=size))  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=["knn", "mf"])
def trained(request: pytest.FixtureRequest) -> Pipeline:
    pipeline = Pipeline(ModelSettings(ranker=request.param))
    for batch in batches(4_000, n_users=200, n_items=150):
        pipeline.process(batch)
    return pipeline


def test_batch_learns_and_refreshes_touched_users() -> None:
    pipeline = Pipeline(FAST)
    (batch,) = batches(300, size=300, n_users=40, n_items=60)
    result = pipeline.process(batch)
    assert result.learned == 300 and not result.dead_letters
    touched = {orjson.loads(r.value or b"")["user_id"] for r in batch}
    assert {rec.user_id for rec in result.recommendations} == touched
    assert pipeline.events_learned == 300


def test_recommendation_contract(trained: Pipeline) -> None:
    model = trained.model
    users = list(range(model.n_users))
    recs = trained.refresh(users)
    assert len(recs) == len(users)
    sources = set()
    for rec in recs:
        u = model.user_index[rec.user_id]
        seen = {model.item_ids[i] for i in model.seen[u]}
        items = [item.item_id for item in rec.items]
        assert len(items) == len(set(items)) == trained.settings.k
        assert not seen & set(items), "seen items must be excluded"
        assert [item.rank for item in rec.items] == list(range(1, len(items) + 1))
        scores = [item.score for item in rec.items if item.source == "model"]
        assert scores == sorted(scores, reverse=True)
        for item in rec.items:
            assert 0.0 <= item.propensity <= 1.0
            assert item.reason.strip()
            sources.add(item.source)
            if item.source == "model" and item.reason.startswith("because you liked "):
                anchor = item.reason.removeprefix("because you liked ")
                assert anchor in seen, "explanations name an item from the user's history"
        assert rec.model_version == model.events_learned
    assert "model" in sources
    assert len({rec.rec_id for rec in recs}) == len(recs)


def test_evaluated_lists_hold_k_items_at_most(trained: Pipeline) -> None:
    """What the evaluator scores is the top K, never longer: a longer list would count hits at
    ranks beyond K (a regression once inflated replay Recall@10 from 0.185 to 0.58)."""
    model = trained.model
    popular = popular_order(model, 10 + model.settings.history_length)
    lengths = {len(shown) for shown in top_items(model, range(model.n_users), 10, popular)}
    assert max(lengths) == 10
    assert [len(shown) for shown in top_items(model, [0], 3, popular)] == [3]


def test_cold_start_user_gets_popular_items_with_reason(trained: Pipeline) -> None:
    record = Record(
        orjson.dumps(
            {
                "event_id": "cold-1",
                "type": "rating",
                "rating": 1,
                "user_id": "newcomer",
                "item_id": "i1",
                "timestamp": 1_767_225_600_000,
            }
        )
    )
    state = pickle.loads(pickle.dumps(trained.state()))
    state.policy = SlotPolicy("none")
    pipeline = Pipeline.from_state(trained.settings, state)
    (rec,) = pipeline.process([record]).recommendations
    assert rec.user_id == "newcomer"
    if trained.settings.ranker == "mf":  # one rating already gives MF a user bias to rank by
        assert all(item.source == "model" for item in rec.items)
        return
    assert all(item.source == "popular" for item in rec.items)
    assert all("trending" in item.reason for item in rec.items)
    assert all(item.propensity == 1.0 for item in rec.items)
    assert "i1" not in {item.item_id for item in rec.items}


def test_reading_never_creates_state(trained: Pipeline) -> None:
    model = trained.model
    before = model.digest()
    sizes = (model.n_users, model.n_items)
    tracemalloc.start()
    try:
        evaluator = PrequentialEvaluator(k=10)
        for n in range(2_000):
            model.predict_rating(f"ghost-{n}", f"phantom-{n}")
            model.predict_rating("u1", f"phantom-{n}")
            model.predict_rating(f"ghost-{n}", "i1")
            model.has_seen(f"ghost-{n}", "i1")
        trained.refresh(list(range(model.n_users)))
        first, _ = tracemalloc.get_traced_memory()
        for n in range(2_000, 20_000):
            model.predict_rating(f"ghost-{n}", f"phantom-{n}")
            model.predict_rating("u1", f"phantom-{n}")
        trained.refresh(list(range(model.n_users)))
        second, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (model.n_users, model.n_items) == sizes
    assert model.digest() == before, "predicting or recommending changed the model"
    assert second - first < 200_000, f"memory grew by {second - first} bytes under read traffic"
    assert evaluator.total.events == 0


def test_model_does_not_depend_on_batch_boundaries() -> None:
    values = list(generate_events(3_000, n_users=80, n_items=90, seed=3, duplicate_fraction=0.05))
    digests = set()
    for size in (1, 250, 3_000):
        pipeline = Pipeline(ModelSettings())
        for batch in from_values(values, batch_size=size):
            pipeline.process(batch)
        digests.add(pipeline.model_digest())
    assert len(digests) == 1


def test_state_round_trip_continues_identically() -> None:
    data = batches(2_000, size=400, n_users=60, n_items=70, seed=5)
    straight = Pipeline(ModelSettings())
    for batch in data:
        straight.process(batch)
    first = Pipeline(ModelSettings())
    for batch in data[:2]:
        first.process(batch)
    resumed = Pipeline.from_state(ModelSettings(), pickle.loads(pickle.dumps(first.state())))
    for batch in data[2:]:
        resumed.process(batch)
    assert resumed.model_digest() == straight.model_digest()
    assert resumed.events_learned == straight.events_learned == 2_000


def test_dead_letters_do_not_stop_the_batch() -> None:
    pipeline = Pipeline(FAST)
    good = list(generate_events(50, n_users=5, n_items=5))
    records = [Record(b"garbage")] + [Record(v) for v in good] + [Record(None)]
    result = pipeline.process(records)
    assert result.learned == 50
    assert [d.reason for d in result.dead_letters] == ["invalid_json", "empty_value"]


def test_state_from_another_format_is_refused_up_front() -> None:
    from streamrec.errors import CheckpointError

    state = Pipeline(FAST).state()
    state.format_version = 0
    with pytest.raises(CheckpointError, match="state format 0"):
        Pipeline.from_state(FAST, state)


def test_a_click_on_a_list_rewards_its_source_in_metrics_and_decision_log() -> None:
    from prometheus_client import CollectorRegistry

    from streamrec.obs.metrics import Metrics

    registry = CollectorRegistry()
    pipeline = Pipeline(FAST, metrics=Metrics(registry), decision_log=True)
    warmup = [Record(v) for v in generate_events(300, n_users=20, n_items=40)]
    (shown,) = (r for r in pipeline.process(warmup).recommendations if r.user_id == "u1")
    clicked = shown.items[2]
    click = orjson.dumps(
        {
            "event_id": "the-click",
            "type": "click",
            "user_id": "u1",
            "item_id": clicked.item_id,
            "rec_id": shown.rec_id,
            "timestamp": 1_767_225_600_000,
        }
    )
    result = pipeline.process([Record(click)])  # refreshes u1: the clicked list is superseded
    line = next(d for d in result.decisions if d["rec_id"] == shown.rec_id and d["reward"])
    assert (line["item_id"], line["source"], line["position"]) == (
        clicked.item_id,
        clicked.source,
        3,
    )
    value = registry.get_sample_value(
        "streamrec_bandit_reward_value_total", {"source": clicked.source}
    )
    assert value == FAST.click_reward
    assert not Pipeline(FAST).process(warmup).decisions  # no log unless asked for


def test_a_batch_is_reported_once_by_whoever_finishes_it() -> None:
    """Alone, the pipeline reports each batch; with `report=False` (the service, which publishes
    first) it reports nothing, and the caller's report of `result.report` counts the same."""
    from prometheus_client import CollectorRegistry

    from streamrec.obs.metrics import Metrics

    def counted(registry: CollectorRegistry) -> dict[str, float | None]:
        return {  # NaN (an empty quality window) as None, so that it equals itself
            f"{s.name}{sorted(s.labels.items())}": None if math.isnan(s.value) else s.value
            for family in registry.collect()
            for s in family.samples
            if not s.name.startswith("streamrec_batch_duration_seconds")
            and not s.name.endswith("_created")
        }

    settings = FAST.model_copy(update={"online_eval_every": 3})
    data = batches(900, size=300, n_users=30, n_items=40, invalid_fraction=0.1)
    alone, deferred = CollectorRegistry(), CollectorRegistry()
    metrics = Metrics(deferred, process_metrics=False)
    by_pipeline = Pipeline(settings, metrics=Metrics(alone, process_metrics=False))
    by_caller = Pipeline(settings, metrics=metrics)
    untouched = counted(deferred)
    for batch in data:
        by_pipeline.process(batch)
        result = by_caller.process(batch, report=False)
        assert counted(deferred) == untouched
        assert result.report is not None
        metrics.record_batch(result.report)
        untouched = counted(deferred)
    assert counted(deferred) == counted(alone)
    assert alone.get_sample_value("streamrec_dead_letters_total", {"reason": "invalid_json"})
    stages = alone.get_sample_value("streamrec_batch_duration_seconds_count", {"stage": "learn"})
    assert stages == len(data)
