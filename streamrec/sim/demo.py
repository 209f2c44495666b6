"""`streamrec demo`: watch streamrec learn from its own users in about a minute, nothing to install.

It runs the whole deployed path on one machine: an embedded Kafka-protocol broker, the streamrec
consumer as its own process (`python -m streamrec.service`, exactly what `streamrec run` runs,
serving Prometheus metrics), and the closed-loop simulator (`streamrec.sim.run`) producing the
events of users with hidden tastes and reading the lists streamrec publishes back. The live line
shows streamrec's click-through rate next to what the best possible, a random and a popularity
list would earn for the same users at the same moments, so learning is something you can see.
Everything is stopped and removed at the end (state in a temporary directory unless
`--state-dir`); `--keep-running` leaves the consumer and broker up to look at `/metrics`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamrec.flags import add_setting_flags, settings_from_args
from streamrec.settings import Settings
from streamrec.sim.options import SIMULATION_MODEL_DEFAULTS, SimulationOptions
from streamrec.sim.report import SimulationReport, ctr_line, summary_table, write_report
from streamrec.sim.run import simulate
from streamrec.sim.service_process import ServiceProcess
from streamrec.store.checkpoint_key import STATE_DIR_KEY

DEMO_EVENTS = 30_000
"""About a minute on two cores, including broker start and the consumer joining its group
(measured: 20,000 events in 27 s)."""

DEMO_OPTIONS = SimulationOptions(events=DEMO_EVENTS, window_visits=1_000, batch_visits=50)

METRICS_SHOWN = (
    ("streamrec_events_learned_total", "events learned"),
    ("streamrec_recommendations_published_total", "lists published"),
    ("streamrec_bandit_decisions_total", "slots decided (all sources)"),
    ("streamrec_bandit_rewards_total", "slots rewarded (all sources)"),
)


def demo_settings(base: Settings | None = None) -> Settings:
    """The simulator's model defaults and metrics on a free local port."""
    from streamrec.io.embedded_broker import free_port

    base = base or Settings()
    model = base.model.model_copy(update=SIMULATION_MODEL_DEFAULTS)
    service = base.service.model_copy(
        update={"metrics_host": "127.0.0.1", "metrics_port": free_port()}
    )
    kafka = base.kafka
    if kafka.catalog_topic is None:  # the simulated items' titles and genres travel here
        kafka = kafka.model_copy(update={"catalog_topic": f"{kafka.topics[0]}.catalog"})
    return base.model_copy(update={"model": model, "service": service, "kafka": kafka})


def scrape(url: str, timeout_s: float = 5.0) -> dict[str, float]:
    """Sum of every sample of each metric family shown in the summary (labels added up)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        text = response.read().decode()
    wanted = {name for name, _ in METRICS_SHOWN}
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def run_demo(
    *,
    events: int = DEMO_EVENTS,
    state_dir: Path | None = None,
    bootstrap_servers: str | None = None,
    settings: Settings | None = None,
    report_path: Path | None = None,
    keep_running: bool = False,
    console: Console | None = None,
    options: SimulationOptions = DEMO_OPTIONS,
) -> int:
    """Broker → consumer process → simulated users over Kafka → summary. Returns the exit code."""
    console = console or Console(stderr=True)
    settings = demo_settings(settings)
    metrics_url = f"http://127.0.0.1:{settings.service.metrics_port}/metrics"
    live = console.is_terminal
    options = replace(options, events=events, progress=live)
    scraped: dict[str, float] = {}

    def on_service(service: ServiceProcess, used: Settings) -> None:
        where = "embedded broker" if bootstrap_servers is None else "broker"
        console.print(f"[bold]streamrec demo[/] · {where} at {used.kafka.bootstrap_servers}")
        console.print(
            f"  consumer pid {service.pid} reads [cyan]{', '.join(used.kafka.topics)}[/], "
            f"publishes [cyan]{used.kafka.recommendations_topic}[/]; state in "
            f"{used.service.state_dir}"
        )
        if used.service.checkpoint_key is None and used.service.checkpoint_key_file is None:
            console.print(f"  checkpoints signed with the state dir's own key, {STATE_DIR_KEY}")
        console.print(f"  metrics: {metrics_url} (also /healthz, /readyz)")
        console.print(
            f"  {options.users} simulated users, {options.items} items (+{options.new_items} "
            f"arriving), K={used.model.k}, exploration {used.model.exploration}; "
            f"{options.events:,} events"
        )

    def on_window(point: dict[str, Any]) -> None:
        if not live:  # no live line without a terminal: one plain line per window instead
            rate = point["events_per_second"] or 0.0
            console.print(f"  {point['events']:>7,} events · {rate:>6,.0f}/s · {ctr_line(point)}")

    def before_stop() -> None:
        try:
            scraped.update(scrape(metrics_url))
        except OSError as exc:  # a summary without metrics beats a failed demo
            console.print(f"[yellow]could not read {metrics_url}: {exc}[/]")
        if keep_running:
            console.print(
                f"simulation done; consumer and broker keep running: {metrics_url} · Ctrl-C stops"
            )
            try:
                threading.Event().wait()
            except KeyboardInterrupt:
                console.print("stopping…")

    with tempfile.TemporaryDirectory(prefix="streamrec-demo-") as workdir:
        started = time.monotonic()
        report = simulate(
            settings,
            options,
            transport="kafka",
            bootstrap_servers=bootstrap_servers,
            on_window=on_window,
            on_service=on_service,
            before_stop=before_stop,
            workdir=Path(workdir),
            state_dir=state_dir,
        )
        elapsed = time.monotonic() - started
    console.print(summary_table(report))
    for example in report.examples:
        console.print(example_table(example))
    console.print(summary(report, scraped, metrics_url, elapsed))
    if report_path is not None:
        write_report(report, report_path)
        console.print(f"report written to {report_path} (plot it: streamrec report {report_path})")
    return 0


def example_table(example: dict[str, Any]) -> Table:
    """One list a simulated user last received: item, source, reason."""
    table = Table(title=f"the list {example['user_id']} holds now")
    table.add_column("#", justify="right")
    table.add_column("item")
    table.add_column("source")
    table.add_column("reason")
    for rank, (item, source, reason) in enumerate(
        zip(example["items"], example["sources"], example["reasons"], strict=True), start=1
    ):
        table.add_row(str(rank), item, source, reason)
    return table


def summary(
    report: SimulationReport, scraped: dict[str, float], metrics_url: str, elapsed: float
) -> Table:
    """What happened, in a few lines a newcomer can read."""
    table = Table(title="demo summary", show_header=False)
    h = report.second_half

    def rate(key: str) -> str:
        value = h.get(key)
        return "—" if value is None else f"{value:.3f}"

    table.add_row("took", f"{elapsed:.0f} s ({report.events:,} events, {report.visits:,} visits)")
    table.add_row(
        "second-half CTR",
        f"streamrec {rate('ctr')} · oracle {rate('oracle_ctr')} · random {rate('random_ctr')} · "
        f"popular {rate('popular_ctr')}",
    )
    d = report.discovery
    median = d.median_visits_known_to_shown
    table.add_row(
        "new items",
        f"{d.shown} of {d.new_items} reached a list; median "
        f"{'—' if median is None else f'{median:.0f}'} visits after streamrec first saw them",
    )
    consumer = report.consumer or {}
    if consumer:
        table.add_row(
            "consumer",
            f"learned {consumer.get('learned', 0):,} events, published "
            f"{consumer.get('published', 0):,} lists, {consumer.get('checkpoints', 0)} "
            f"checkpoints, stopped by {consumer.get('stopped_by', '?')}",
        )
    for name, label in METRICS_SHOWN:
        if name in scraped:
            table.add_row(name, f"{scraped[name]:,.0f} {label}")
    table.add_row("metrics were served at", metrics_url)
    return table


# ---- command line: `streamrec demo` ----------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events", type=int, default=DEMO_EVENTS, help="simulated events (default ~1 minute)"
    )
    parser.add_argument("--state-dir", type=Path, help="keep consumer checkpoints here")
    add_setting_flags(
        parser,
        "kafka.bootstrap_servers",
        help={"kafka.bootstrap_servers": "use this Kafka instead of starting an embedded broker"},
    )
    parser.add_argument("--report", type=Path, help="write the simulation report (JSON) here")
    parser.add_argument(
        "--keep-running",
        action="store_true",
        help="after the simulation keep the consumer and broker up (to look at /metrics)",
    )


def main(args: argparse.Namespace) -> int:
    """`streamrec demo`."""
    settings = settings_from_args(args)
    try:
        return run_demo(
            events=args.events,
            state_dir=args.state_dir,
            bootstrap_servers=args.bootstrap_servers,
            settings=settings,
            report_path=args.report,
            keep_running=args.keep_running,
        )
    except KeyboardInterrupt:
        print("demo interrupted; everything it started was stopped", file=sys.stderr)
        return 130


__all__ = ["DEMO_EVENTS", "add_arguments", "demo_settings", "main", "run_demo", "scrape"]
