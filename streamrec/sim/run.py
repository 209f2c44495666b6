"""The closed-loop user simulator: users with hidden tastes answer streamrec's own lists.

Offline replays can only say how well a model predicts what users did under some *other* system.
A recommender changes what users see, so the only honest test of the whole loop (learning,
exploration, reward join, refresh) is to let simulated users react to its lists:

    users (hidden tastes, `TasteWorld`) ─ events ─▶ streamrec ─ lists ─▶ users ─ events ─▶ ...

This module runs that loop (`run_loop`, `simulate`), sets up the Kafka side of it (broker,
topics, consumer process: `kafka_loop`) and compares exploration policies on the same world
(`compare_policies`). The users are `streamrec.sim.users`, the transports `streamrec.sim.loops`.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamrec.errors import StreamrecError
from streamrec.settings import Settings
from streamrec.sim.loops import InProcessLoop, KafkaLoop, Loop
from streamrec.sim.options import DEFAULT_OPTIONS, SimulationOptions, Transport
from streamrec.sim.report import PolicyFailure, SimulationReport, live_progress
from streamrec.sim.service_process import ServiceProcess
from streamrec.sim.users import CtrTally, Users

log = logging.getLogger(__name__)


def run_loop(
    loop: Loop,
    users: Users,
    options: SimulationOptions,
    *,
    on_window: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[CtrTally, CtrTally, list[dict[str, Any]], int]:
    """Visit, exchange, repeat until `options.events` were sent.

    Returns (overall tally, second-half tally, series, lists received).
    """
    overall, window = CtrTally(), CtrTally()
    halves: list[CtrTally] = []
    series: list[dict[str, Any]] = []
    received = 0
    started = time.perf_counter()
    window_started, window_events = started, 0
    loop.publish_catalog([users.catalog_record(item) for item in range(users.available)])
    while users.events_made < options.events:
        users.begin_batch()
        events: list[tuple[bytes, bytes]] = []
        acted: set[str] = set()
        arrived: list[tuple[bytes, bytes]] = []
        for user in users.visitors(options.batch_visits).tolist():
            before = users.available
            users.maybe_add_item()
            if users.available > before:
                arrived.append(users.catalog_record(before))
            tally = CtrTally()
            made = users.visit(user, tally)
            if made:
                events.extend(made)
                acted.add(f"u{user}")
            window.add(tally)
            halves.append(tally)
            if users.visits % options.window_visits == 0:
                overall.add(window)
                now = time.perf_counter()
                point = _point(users, window, window_events + len(events), now - window_started)
                series.append(point)
                if on_window is not None:
                    on_window(point)
                window, window_started, window_events = CtrTally(), now, -len(events)
        loop.publish_catalog(arrived)
        lists = loop.exchange(events, acted)
        window_events += len(events)
        received += len(lists)
        users.receive(lists)
    if window.visits or window.visits_without_list:
        overall.add(window)
        series.append(_point(users, window, window_events, time.perf_counter() - window_started))
    second = CtrTally()
    for tally in halves[len(halves) // 2 :]:
        second.add(tally)
    return overall, second, series, received


def _point(users: Users, tally: CtrTally, events: int, seconds: float) -> dict[str, Any]:
    point: dict[str, Any] = {
        "events": users.events_made,
        "visits": users.visits,
        "items": users.available,
        "visits_with_list": tally.visits,
        "slots": tally.slots,
        "clicks": tally.clicks,
        "events_per_second": events / seconds if seconds > 0 else None,
    }
    point.update(tally.rates())
    return point


def simulate(
    settings: Settings,
    options: SimulationOptions = DEFAULT_OPTIONS,
    *,
    transport: Transport = "in-process",
    bootstrap_servers: str | None = None,
    start_consumer: bool = True,
    on_window: Callable[[dict[str, Any]], None] | None = None,
    on_service: Callable[[ServiceProcess, Settings], None] | None = None,
    before_stop: Callable[[], None] | None = None,
    workdir: Path | None = None,
    state_dir: Path | None = None,
) -> SimulationReport:
    """Run the closed loop once and report streamrec's CTR beside oracle, random and popular.

    `transport="kafka"`: events go to `settings.kafka.topics[0]` and lists are read from
    `settings.kafka.recommendations_topic` on `bootstrap_servers` (an embedded broker is started
    when it is None). With `start_consumer` the streamrec consumer runs as a child process, its
    checkpoints in `state_dir` (default: a temporary directory, whatever the settings say, so a
    simulation never resumes an unrelated model); without it, something else must be consuming
    (e.g. `streamrec run`). `on_service` is called
    once the consumer started, `before_stop` after the last batch while everything still runs;
    logs and state go to `workdir` (default: a temporary directory).
    """
    model_settings = settings.model
    k = model_settings.k
    started = time.perf_counter()
    services: list[ServiceProcess] = []
    with ExitStack() as stack:
        if transport == "in-process":
            users = Users(options, k)
            loop: Loop = InProcessLoop(model_settings)
        elif transport == "kafka":
            users = Users(options, k, run_token=f"-{uuid.uuid4().hex[:8]}")

            def remember(service: ServiceProcess, service_settings: Settings) -> None:
                services.append(service)
                if on_service is not None:
                    on_service(service, service_settings)

            loop = stack.enter_context(
                kafka_loop(
                    settings,
                    options,
                    bootstrap_servers,
                    start_consumer,
                    workdir=workdir,
                    state_dir=state_dir,
                    on_service=remember,
                )
            )
        else:
            raise StreamrecError(f"unknown transport {transport!r}: in-process or kafka")
        with live_progress(options, model_settings.exploration) as progress:
            overall, second, series, received = run_loop(
                loop, users, options, on_window=_both(on_window, progress)
            )
        timeouts = getattr(loop, "timeouts", 0)
        if before_stop is not None:
            before_stop()
    seconds = time.perf_counter() - started
    consumer = services[0].summary if services else None
    return SimulationReport(
        transport=transport,
        exploration=model_settings.exploration,
        rating_model=model_settings.rating_model,
        ranker=model_settings.ranker,
        k=k,
        seed=options.seed,
        events=users.events_made,
        visits=users.visits,
        users=options.users,
        items=users.available,
        seconds=seconds,
        events_per_second=users.events_made / seconds if seconds > 0 else None,
        lists_received=received,
        sync_timeouts=timeouts,
        overall=overall.rates(),
        second_half=second.rates(),
        ctr_by_source={
            source: users.source_clicks.get(source, 0) / slots
            for source, slots in sorted(users.source_slots.items())
        },
        slots_by_source=dict(sorted(users.source_slots.items())),
        discovery=users.discovery(),
        series=series,
        options=asdict(options),
        consumer=consumer,
        examples=_examples(users),
    )


def _examples(users: Users, n: int = 2) -> list[dict[str, Any]]:
    """The last `n` full lists users held, as the demo shows them."""
    full = [shown for shown in users.latest.values() if len(shown.items) == users.k]
    return [
        {"user_id": s.user_id, "items": s.items, "sources": s.sources, "reasons": s.reasons}
        for s in full[-n:]
    ]


@contextmanager
def kafka_loop(
    settings: Settings,
    options: SimulationOptions,
    bootstrap_servers: str | None,
    start_consumer: bool,
    *,
    workdir: Path | None = None,
    state_dir: Path | None = None,
    on_service: Callable[[ServiceProcess, Settings], None] | None = None,
) -> Iterator[KafkaLoop]:
    """Broker (embedded if no address) + topics + optional consumer process + the loop.

    The consumer's checkpoints go to `state_dir`, or `workdir/state`. Teardown runs in reverse:
    loop clients, consumer (graceful), broker. `on_service(process, settings)` is called once the
    consumer was started (the demo prints where its metrics are).
    """
    from streamrec.io.kafka_config import create_topics

    with ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="streamrec-")))
        if bootstrap_servers is None:
            from streamrec.io.embedded_broker import EmbeddedBroker

            broker = stack.enter_context(EmbeddedBroker(log_path=workdir / "broker.log"))
            bootstrap_servers = broker.bootstrap_servers
        kafka = settings.kafka.model_copy(update={"bootstrap_servers": bootstrap_servers})
        settings = settings.model_copy(update={"kafka": kafka})
        catalog = [kafka.catalog_topic] if kafka.catalog_topic else []
        create_topics(
            bootstrap_servers,
            [*kafka.topics, *catalog, kafka.recommendations_topic, kafka.dlq_topic],
        )
        service: ServiceProcess | None = None
        if start_consumer:
            state = state_dir or workdir / "state"
            state.mkdir(parents=True, exist_ok=True)
            service_settings = settings.service.model_copy(update={"state_dir": state})
            settings = settings.model_copy(update={"service": service_settings})
            service = ServiceProcess(settings, workdir)
            stack.push(_stopper(service))
            if on_service is not None:
                on_service(service, settings)
        loop = KafkaLoop(
            kafka,
            sync_timeout_s=options.sync_timeout_s,
            check=service.check if service is not None else None,
        )
        stack.callback(loop.close)
        yield loop


def _stopper(service: ServiceProcess) -> Callable[..., None]:
    """Exit callback: stop the consumer; after a failure, do not hide it behind a second one."""

    def stop(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            service.stop()
        else:
            with contextlib.suppress(StreamrecError):
                service.stop()

    return stop


def _both(
    a: Callable[[dict[str, Any]], None] | None, b: Callable[[dict[str, Any]], None] | None
) -> Callable[[dict[str, Any]], None] | None:
    if a is None or b is None:
        return a or b

    def call(point: dict[str, Any]) -> None:
        a(point)
        b(point)

    return call


def compare_policies(
    settings: Settings, options: SimulationOptions, policies: Sequence[str]
) -> list[SimulationReport | PolicyFailure]:
    """The same world, seed and budget in-process under each exploration policy.

    A policy that raises becomes a `PolicyFailure` row (logged with its traceback) instead of
    hiding the measurements of the others.
    """
    reports: list[SimulationReport | PolicyFailure] = []
    for policy in policies:
        model = settings.model.model_copy(update={"exploration": policy})
        try:
            reports.append(simulate(settings.model_copy(update={"model": model}), options))
        except Exception as exc:
            log.exception("exploration policy %s failed", policy)
            reports.append(PolicyFailure(policy, f"{type(exc).__name__}: {exc}"))
    return reports
