"""`streamrec run`: the Kafka run loop. Poll a batch → learn and publish it → commit when due.

Delivery semantics (DESIGN.md, "State and delivery semantics"):

* Model updates are effectively-once. A checkpoint holds the pipeline state and, for every
  partition this instance owns, the next offset that state has not learned. On start the newest
  verified checkpoint is restored; on assignment each partition starts at its checkpoint offset
  (or, if the group's committed offset is further, there: another instance learned those events
  since), else at the committed offset, else at `auto.offset.reset` (earliest). Records below a
  partition's position are never learned, so a replayed tail cannot be learned twice; a log that
  no longer holds the position is a log reset (streamrec.io.partitions), never a silent skip.
* Offsets are committed only after the checkpoint that holds them is durable, and a checkpoint is
  written only after every output of the events it covers was delivered (streamrec.service.commit
  writes the order down). Lost partitions, lost outputs and a fatal producer roll the model back
  to its last checkpoint (streamrec.service.worker).
* Recommendations and dead letters are at-least-once: after a crash or a rollback the replayed
  tail publishes again. Recommendations are keyed by user_id and carry the model version, so
  consumers keep the latest per key and a duplicate is harmless.
* After a fallback to an older checkpoint (the newest failed verification, see checkpoint.py)
  its offsets win over the group's, so this model relearns the events it lost. With several
  instances, events another instance learned meanwhile from those partitions are learned again.

Several instances: without `kafka.learn_log_topic` each learns only the partitions it owns (its
own model). With it, each forwards its partitions into the learn log and learns the whole log as
a replica (streamrec.service.forwarder), so all hold one model; checkpoints and offsets above
are then the replica's, on the learn log.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict

from streamrec.contract.records import Record
from streamrec.errors import StreamrecError
from streamrec.io.kafka_source import KafkaSource
from streamrec.obs.http import MetricsServer
from streamrec.obs.http import serve as serve_metrics
from streamrec.obs.metrics import Metrics
from streamrec.service.commit import Outcome
from streamrec.service.forwarder import Forwarder, replica_settings
from streamrec.service.state import Progress, RunSummary
from streamrec.service.worker import Worker
from streamrec.settings import ServiceSettings, Settings
from streamrec.store.checkpoint import CheckpointStore
from streamrec.store.checkpoint_key import signing_key

log = logging.getLogger(__name__)

DEFAULT_METRICS_PORT = 9108
"""Where /metrics is served when `service.metrics_port` is not set (if it is free)."""

GC_THRESHOLDS = (20_000, 20, 100)
"""CPython's cyclic collector thresholds while the service runs (the defaults are 700, 10, 10).

The loop allocates a few container objects per event (record, event, its field dict) that
reference counting frees, but each batch keeps its ~2,000 events alive until the batch ends. Under
the defaults they survive young collections, get promoted, and trigger a full collection every
~15k events, each walking every live object (pending lists, the bench's own data): measured at
~4 µs per event, a quarter of the end-to-end budget. With these thresholds a batch's objects die
before a collection sees them, and cyclic garbage is still collected, just less often.
"""


def run(
    settings: Settings,
    *,
    max_events: int | None = None,
    stop_when_idle: float | None = None,
    metrics: Metrics | None = None,
    on_batch: Callable[[Progress], None] | None = None,
    stop: threading.Event | None = None,
    handle_signals: bool = True,
) -> RunSummary:
    """Consume, learn, publish and checkpoint until told to stop.

    Stops on SIGTERM/SIGINT (when called from the main thread), when `stop` is set, after
    `max_events` consumed records, or after `stop_when_idle` seconds without a record once
    partitions were assigned; every way ends with a final checkpoint and commit. Raises
    StreamrecError (CheckpointError, LogResetError...) on failures that must stop the service;
    the last durable checkpoint is then what the next start resumes from. A broker outage is not
    one of them: the loop waits it out (see streamrec.service.worker).
    """
    started = time.monotonic()
    service = settings.service
    metrics = metrics if metrics is not None else Metrics()
    stop = stop if stop is not None else threading.Event()
    # First thing: without a key that was set on purpose nothing starts, not even /metrics.
    store = CheckpointStore(service.state_dir, signing_key(service), service.checkpoints_kept)
    forwarder: Forwarder | None = None
    if settings.kafka.learn_log_topic is not None:
        replica, instance_id = replica_settings(settings)
        forwarder = Forwarder(settings, instance_id, metrics)
        settings = replica
        worker = Worker(settings, store, metrics, instance_id=instance_id)
    else:
        worker = Worker(settings, store, metrics)
    # Serving before the restore: /healthz answers while a large checkpoint loads, /readyz waits.
    server = start_metrics_server(service, metrics, worker.ready)
    stopped_by = "stop"
    try:
        worker.restore()
        worker.connect()
        if forwarder is not None:
            forwarder.check_learn_log(service.connect_timeout_s)
        source = worker.source
        assert source is not None
        # Idle time counts from the last record or the last rebalance, whichever is later, and
        # only while partitions are owned: waiting for the group is not being idle.
        last_record: float | None = None
        rebalances_seen = -1
        with (
            _stop_on_signals(stop, service.shutdown_timeout_s, handle_signals) as signals,
            _collector_tuned(),
        ):
            while not stop.is_set():
                want = service.batch_size
                if max_events is not None:
                    want = min(want, max_events - worker.progress.consumed)
                    if want <= 0:
                        stopped_by = "max_events"
                        break
                records = source.poll(want, service.poll_timeout_s)
                if (
                    forwarder is not None
                    and not forwarder.started
                    and caught_up(source, records, want)
                ):
                    # Only a replica that has caught up with the learn log takes event
                    # partitions: until then, the lists it published would be from an old model.
                    forwarder.start(service.connect_timeout_s)
                now = time.monotonic()
                if records:
                    worker.handle(records)
                    last_record = now
                    if on_batch is not None:
                        on_batch(worker.snapshot())
                rebalances, joined = source.rebalances, True
                if forwarder is not None:  # the events' group counts too, once it was joined
                    rebalances += forwarder.source.rebalances
                    joined = forwarder.source.rebalances > 0
                if not source.positions or not joined:
                    last_record = None
                elif last_record is None or rebalances != rebalances_seen:
                    last_record, rebalances_seen = now, rebalances
                worker.tick()
                if forwarder is not None:
                    forwarder.check()
                if (
                    stop_when_idle is not None
                    and last_record is not None
                    and now - last_record >= stop_when_idle
                ):
                    stopped_by = "idle"
                    break
            if stop.is_set():
                stopped_by = "signal" if signals.get("signal") else "stop"
            _final_commit_point(worker, stopped_by, service.shutdown_timeout_s)
    except BaseException:
        worker.failed = True  # the revoke inside close() must not checkpoint a failed state
        raise
    finally:
        if forwarder is not None:
            forwarder.close()
        worker.close()
        if server is not None:
            server.close()
    summary = RunSummary(
        **asdict(worker.snapshot()),
        stopped_by=stopped_by,
        elapsed_s=time.monotonic() - started,
        model_digest=worker.state.digest(),
        checkpoint=str(worker.state.last_checkpoint_path)
        if worker.state.last_checkpoint_path
        else None,
    )
    log.info("stopped (%s): %s", stopped_by, summary)
    return summary


def caught_up(source: KafkaSource, records: list[Record], want: int) -> bool:
    """A replica stands at the end of the learn log: assigned, and a poll came back short."""
    return bool(source.positions) and len(records) < want


def _final_commit_point(worker: Worker, reason: str, deadline_s: float) -> None:
    """The last commit point, given most of the shutdown deadline to deliver what is pending."""
    if not worker.committer.changed or worker.sink is None:
        return
    if worker.commit_point(reason, wait_s=max(1.0, deadline_s * 0.8)) is not Outcome.DONE:
        log.error(
            "stopping with %d outputs not delivered: no final checkpoint was written; the next "
            "start replays from the last one (%s)",
            worker.sink.undelivered,
            worker.state.last_checkpoint_path or "none",
        )


def start_metrics_server(
    service: ServiceSettings, metrics: Metrics, ready: Callable[[], bool]
) -> MetricsServer | None:
    """/metrics, /healthz and /readyz, or None when `service.metrics_port` is 0.

    Unset, the port is 9108, or any free port when 9108 is taken (logged); set, it is that port
    or a one-line error saying which setting to change.
    """
    if service.metrics_port == 0:
        return None
    host = service.metrics_host
    port = service.metrics_port if service.metrics_port is not None else DEFAULT_METRICS_PORT
    try:
        return serve_metrics(metrics, host, port, ready=ready)
    except socket.gaierror as exc:
        raise StreamrecError(
            f"service.metrics_host {host!r} is not an address of this host ({exc.strerror})"
        ) from None
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise StreamrecError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror}; set service.metrics_host"
                " / service.metrics_port (STREAMREC_SERVICE__METRICS_HOST / _PORT), or "
                "--metrics-port 0 to disable"
            ) from None
        if service.metrics_port is not None:
            raise StreamrecError(
                f"metrics port {port} on {host} is already in use (another streamrec on this "
                "host?): choose a free one with --metrics-port or STREAMREC_SERVICE__METRICS_PORT,"
                " or 0 to disable /metrics"
            ) from None
    server = serve_metrics(metrics, host, 0, ready=ready)
    log.warning(
        "metrics port %d is in use: serving /metrics, /healthz and /readyz at %s instead (set "
        "service.metrics_port to choose)",
        port,
        server.url,
    )
    return server


@contextmanager
def _collector_tuned() -> Iterator[None]:
    """GC_THRESHOLDS for the consume loop; what was there before afterwards.

    Objects alive at the start (the restored model, the process's own data) are frozen: they are
    long-lived, and a full collection need not walk them again.
    """
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        gc.unfreeze()


@contextmanager
def _stop_on_signals(
    stop: threading.Event, deadline_s: float, enabled: bool
) -> Iterator[dict[str, str]]:
    """SIGTERM/SIGINT ask the loop to stop; if the shutdown then overruns `deadline_s`, exit 70.

    The forced exit is a crash as far as state goes: the next start replays from the checkpoint.
    """
    info: dict[str, str] = {}
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield info
        return

    def force_exit() -> None:
        log.error("shutdown did not finish within %.0f s; exiting without checkpoint", deadline_s)
        logging.shutdown()
        os._exit(70)

    def handler(signum: int, _frame: object) -> None:
        if stop.is_set():
            return
        info["signal"] = signal.Signals(signum).name
        log.info("%s received: finishing the batch, then checkpoint and commit", info["signal"])
        stop.set()
        timer = threading.Timer(deadline_s, force_exit)
        timer.daemon = True
        timer.start()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield info
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
