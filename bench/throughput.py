"""Events per second: streamrec end to end through a broker, beside what a user would otherwise run.

All rows learn the same events (the `Events` of this run) with the same BiasedMF hyper-parameters
(`streamrec.learners.make_rating_model("biased_mf")`), on the same machine in the same run, so the
ratios mean something:

- e2e      `streamrec.service.run`: consumer group, validation, DLQ, metrics, refresh + publish of
           every touched user's list, checkpoints at the default interval; timed from the first
           handled batch to the last.
- replay   `streamrec.evaluate.replay.replay` over the same events as a JSONL file (it always
           evaluates prequentially: RMSE, and a top-K per evaluable positive event).
- pipeline `Pipeline.process` in memory, batches of the service's size, metrics on, no Kafka: the
           difference to e2e is the cost of Kafka I/O.
- bare     `river.reco.BiasedMF`, `predict_one` + `learn_one` over (user, item, rating) tuples
           already in memory: the ceiling of any River-based design.
- naive    the consumer loop a user writes first: poll one message, `json.loads`, predict + learn,
           produce one small message per event.
- quix     Quix Streams + River doing only the learning, run by `bench/quix_app.py` under another
           interpreter (Quix pins its own confluent-kafka, so it lives in its own venv).
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import Events, Row, fresh_topic, produce_all, skipped

QUIX_PYTHON_ENV = "STREAMREC_BENCH_QUIX_PYTHON"
DEFAULT_QUIX_PYTHON = Path("/work/quixvenv/bin/python")
QUIX_APP = Path(__file__).with_name("quix_app.py")


def mf_params() -> dict[str, Any]:
    """The BiasedMF hyper-parameters streamrec's `biased_mf` uses, read from the factory (not
    copied), so the bare, naive and Quix loops learn exactly the same model."""
    from river import reco

    from streamrec.learners import make_rating_model

    model = make_rating_model("biased_mf")
    names = inspect.signature(reco.BiasedMF).parameters
    # Deep copies: optimizers keep state, and each loop must start from a fresh one.
    return {name: copy.deepcopy(getattr(model, name)) for name in names}


def mf_description() -> dict[str, Any]:
    params = mf_params()
    return {
        "n_factors": params["n_factors"],
        "bias_lr": params["bias_optimizer"].learning_rate,
        "latent_lr": params["latent_optimizer"].learning_rate,
        "seed": params["seed"],
    }


def bare_river(events: Events) -> Row:
    """`predict_one` + `learn_one` per event on River's own BiasedMF: the ceiling."""
    from river import reco

    model = reco.BiasedMF(**mf_params())
    predict, learn = model.predict_one, model.learn_one
    started = time.perf_counter()
    for user, item, rating in events.tuples:
        predict(user, item)
        learn(user, item, rating)
    elapsed = time.perf_counter() - started
    return Row(
        "bare",
        "bare River loop (predict_one + learn_one, in memory)",
        len(events) / elapsed,
        "events/s",
        dataset=events.name,
        settings={"model": "river.reco.BiasedMF", **mf_description()},
        extra={"events": len(events), "seconds": elapsed},
    )


def _service_settings(bootstrap: str, topic: str, state_dir: Path, ranker: str) -> Any:
    from streamrec.settings import KafkaSettings, ModelSettings, ServiceSettings, Settings
    from streamrec.store.checkpoint_key import state_dir_key

    return Settings(
        model=ModelSettings(rating_model="biased_mf", ranker=ranker),
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap,
            topics=[topic],
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            recommendations_topic=fresh_topic("recs"),
            dlq_topic=fresh_topic("dlq"),
        ),
        # metrics_port=0: no HTTP server (a fixed port could clash); the metrics are still kept.
        service=ServiceSettings(
            state_dir=state_dir,
            checkpoint_key=state_dir_key(state_dir),
            metrics_port=0,
            log_level="WARNING",
        ),
    )


def end_to_end(events: Events, bootstrap: str, ranker: str) -> Row:
    """`service.run` over the pre-produced events, `max_events` = all of them."""
    from streamrec.io.kafka_config import create_topics
    from streamrec.obs.metrics import Metrics
    from streamrec.service import Progress, run

    topic = fresh_topic("e2e")
    create_topics(bootstrap, [topic])
    produce_all(bootstrap, topic, events.values, events.keys)
    marks: list[tuple[float, int]] = []

    def on_batch(progress: Progress) -> None:
        marks.append((time.perf_counter(), progress.consumed))

    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as state:
        settings = _service_settings(bootstrap, topic, Path(state), ranker)
        create_topics(bootstrap, [settings.kafka.recommendations_topic, settings.kafka.dlq_topic])
        metrics = Metrics()
        started = time.perf_counter()
        summary = run(
            settings,
            max_events=len(events),
            metrics=metrics,
            on_batch=on_batch,
            handle_signals=False,
        )
        finished = time.perf_counter()
        checkpoint_s = metrics.registry.get_sample_value(
            "streamrec_checkpoint_duration_seconds_sum"
        )
        checkpoints = metrics.registry.get_sample_value(
            "streamrec_checkpoint_duration_seconds_count"
        )
        # Where the time went, from the service's own batch-stage histograms (the profile the
        # README's Performance notes quote): µs per consumed event, whole run.
        stage_us = {
            stage: 1e6
            * (
                metrics.registry.get_sample_value(
                    "streamrec_batch_duration_seconds_sum", {"stage": stage}
                )
                or 0.0
            )
            / len(events)
            for stage in ("decode", "learn", "refresh", "publish", "checkpoint", "total")
        }
    if summary.learned != len(events) or len(marks) < 2:
        raise RuntimeError(f"e2e learned {summary.learned} of {len(events)} events")
    # The first batch only marks the start: its processing ends before on_batch, so it is left
    # out of both the events and the time.
    (t0, n0), (t1, n1) = marks[0], marks[-1]
    rate = (n1 - n0) / (t1 - t0)
    s = settings.service
    return Row(
        f"e2e_{ranker}",
        f"streamrec end to end, ranker={ranker} (service.run through the broker)",
        rate,
        "events/s",
        dataset=events.name,
        settings={
            "rating_model": settings.model.rating_model,
            "ranker": settings.model.ranker,
            "exploration": settings.model.exploration,
            "online_eval_every": settings.model.online_eval_every,
            "batch_size": s.batch_size,
            "checkpoint_every_events": s.checkpoint_every_events,
            "checkpoint_every_seconds": s.checkpoint_every_seconds,
            "partitions": 1,
            **mf_description(),
        },
        note="validation, DLQ, metrics, refresh + publish, checkpoints on; µs/event: "
        + ", ".join(
            f"{stage} {stage_us[stage]:.1f}" for stage in ("decode", "learn", "refresh", "publish")
        )
        + f", consume + loop + commits {1e6 / rate - stage_us['total']:.1f}",
        extra={
            "events": len(events),
            "published": summary.published,
            "checkpoints": int(checkpoints or 0),
            "checkpoint_seconds_total": checkpoint_s,
            "timed_events": n1 - n0,
            "timed_seconds": t1 - t0,
            "run_seconds_incl_join_and_final_checkpoint": finished - started,
            "stage_us_per_event": {k: round(v, 2) for k, v in stage_us.items()},
        },
    )


def replay_in_process(events: Events, ranker: str) -> Row:
    """`streamrec.evaluate.replay.replay` on the same events written as a JSONL log."""
    from streamrec.evaluate.replay import ReplayOptions, replay
    from streamrec.settings import ModelSettings

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        path = Path(tmp) / "events.jsonl"
        path.write_bytes(b"\n".join(events.values) + b"\n")
        options = ReplayOptions(progress=False)
        settings = ModelSettings(rating_model="biased_mf", ranker=ranker)
        report, _pipeline = replay(path, settings, options)
    return Row(
        f"replay_{ranker}",
        f"streamrec replay, ranker={ranker} (in process, JSONL file)",
        report["events_per_second"],
        "events/s",
        dataset=events.name,
        settings={
            "rating_model": report["rating_model"],
            "ranker": report["ranker"],
            "batch_size": options.batch_size,
        },
        note="includes prequential evaluation of every event (RMSE, top-K hits)",
        extra={"rmse": report["rmse"], "recall_at_k": report["recall_at_k"]},
    )


def pipeline_in_memory(events: Events, ranker: str) -> Row:
    """`Pipeline.process` alone (metrics on, live quality sampled as in the service)."""
    from streamrec.core.pipeline import Pipeline
    from streamrec.io.file_source import from_values
    from streamrec.obs.metrics import Metrics
    from streamrec.settings import ModelSettings, ServiceSettings

    settings = ModelSettings(rating_model="biased_mf", ranker=ranker)
    batch_size = ServiceSettings().batch_size
    batches = list(from_values(events.values, batch_size))
    pipeline = Pipeline(settings, metrics=Metrics())
    started = time.perf_counter()
    for batch in batches:
        pipeline.process(batch)
    elapsed = time.perf_counter() - started
    return Row(
        f"pipeline_{ranker}",
        f"streamrec Pipeline.process, ranker={ranker} (in memory, no Kafka)",
        len(events) / elapsed,
        "events/s",
        dataset=events.name,
        settings={
            "rating_model": settings.rating_model,
            "ranker": settings.ranker,
            "batch_size": batch_size,
            "online_eval_every": settings.online_eval_every,
        },
        note="what e2e costs without the broker",
    )


def naive_consumer(events: Events, bootstrap: str) -> Row:
    """Poll one message, json.loads, predict + learn, produce one small message, per event."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from river import reco

    from streamrec.io.kafka_config import create_topics

    topic, out = fresh_topic("naive"), fresh_topic("naive-out")
    create_topics(bootstrap, [topic, out])
    produce_all(bootstrap, topic, events.values, events.keys)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-naive-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    model = reco.BiasedMF(**mf_params())
    # assign, not subscribe: the clock starts at the first record anyway, and skipping the group
    # join keeps the smoke test short.
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    seen, started = 0, None
    deadline = time.monotonic() + 60 + len(events) / 1000
    try:
        while seen < len(events):
            if time.monotonic() > deadline:
                raise RuntimeError(f"naive loop consumed {seen} of {len(events)} events")
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            if started is None:
                started = time.perf_counter()
            event = json.loads(message.value() or b"null")
            user, item = event["user_id"], event["item_id"]
            score = model.predict_one(user, item)
            model.learn_one(user, item, event["rating"])
            reply = json.dumps({"user_id": user, "item_id": item, "score": score})
            while True:
                try:
                    producer.produce(out, reply.encode(), user.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            seen += 1
        finished = time.perf_counter()
        producer.flush(30)
    finally:
        consumer.close()
    assert started is not None
    return Row(
        "naive",
        "naive consumer loop (poll 1, json.loads, learn, produce 1)",
        (seen - 1) / (finished - started),
        "events/s",
        dataset=events.name,
        settings={"model": "river.reco.BiasedMF", **mf_description()},
        note="no validation, no checkpoints, auto-commit",
    )


def quix_python() -> Path | None:
    """The interpreter that has quixstreams and river: $STREAMREC_BENCH_QUIX_PYTHON, then
    /work/quixvenv, then this one if it happens to have quixstreams."""
    configured = os.environ.get(QUIX_PYTHON_ENV)
    candidates = [Path(configured)] if configured else [DEFAULT_QUIX_PYTHON]
    for candidate in candidates:
        if candidate.is_file():
            probe = subprocess.run(
                [str(candidate), "-c", "import quixstreams, river"],
                capture_output=True,
                timeout=60,
            )
            if probe.returncode == 0:
                return candidate
    try:
        import quixstreams  # noqa: F401
        import river  # noqa: F401
    except ImportError:
        return None
    return Path(sys.executable)


def quix_streams(events: Events, bootstrap: str) -> Row:
    """Quix Streams consuming the same events and learning them with River's BiasedMF."""
    python = quix_python()
    name = "Quix Streams + River (learning only)"
    if python is None:
        return skipped(
            "quix",
            name,
            "events/s",
            "quixstreams not installed; python3 -m venv /work/quixvenv && "
            "/work/quixvenv/bin/pip install quixstreams river "
            f"(or set {QUIX_PYTHON_ENV})",
        )
    from streamrec.io.kafka_config import create_topics

    topic = fresh_topic("quix")
    create_topics(bootstrap, [topic])
    produce_all(bootstrap, topic, events.values, events.keys)
    params = mf_description()
    command = [
        str(python),
        str(QUIX_APP),
        "--bootstrap-servers",
        bootstrap,
        "--topic",
        topic,
        "--events",
        str(len(events)),
        "--n-factors",
        str(params["n_factors"]),
        "--bias-lr",
        str(params["bias_lr"]),
        "--latent-lr",
        str(params["latent_lr"]),
        "--seed",
        str(params["seed"]),
    ]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1")}
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=600 + len(events) / 500, env=env
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return skipped("quix", name, "events/s", f"Quix run failed: {' | '.join(tail)}")
    result = json.loads(lines[-1])
    return Row(
        "quix",
        name,
        result["events_per_second"],
        "events/s",
        dataset=events.name,
        settings={
            "quixstreams": result["quixstreams"],
            "interpreter": str(python),
            "model": "river.reco.BiasedMF",
            **params,
        },
        note="StreamingDataFrame.update(learn); no output topic, at-least-once commits",
        extra={"events": result["events"], "seconds": result["seconds"]},
    )
