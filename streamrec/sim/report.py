"""What a simulation run says: the JSON report, the live progress line and the rich tables.

Presentation only: the numbers are computed by `streamrec.sim.users` and `streamrec.sim.run`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrec.sim.options import SimulationOptions
from streamrec.sim.users import Discovery


@dataclass
class SimulationReport:
    """One run's numbers: what `--report` writes (JSON) and the tables show."""

    transport: str
    exploration: str
    rating_model: str
    ranker: str
    k: int
    seed: int
    events: int
    visits: int
    users: int
    items: int  # catalog size at the end
    seconds: float
    events_per_second: float | None
    lists_received: int
    sync_timeouts: int  # Kafka: batches whose lists did not all arrive within the deadline
    overall: dict[str, float | None]
    second_half: dict[str, float | None]  # after the model had time to learn: judge this
    ctr_by_source: dict[str, float | None]
    slots_by_source: dict[str, int]
    discovery: Discovery
    series: list[dict[str, Any]]
    options: dict[str, Any]
    consumer: dict[str, Any] | None = None  # Kafka: the consumer's run summary, if we ran it
    # A few of the last lists users held, with sources and reasons (what the demo prints).
    examples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; top-level `ctr` and friends are the overall rates (what plots compare)."""
        data = asdict(self)
        data["kind"] = "simulation"
        data.update(self.overall)
        return data


def write_report(report: SimulationReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")


@contextmanager
def live_progress(
    options: SimulationOptions, exploration: str
) -> Iterator[Callable[[dict[str, Any]], None] | None]:
    """A one-line live display on stderr, updated every window; nothing when progress is off."""
    if not options.progress:
        yield None
        return
    with Progress(
        TextColumn(f"[bold]simulate[/] ({exploration})"),
        TextColumn("{task.fields[events]:>8,} events · {task.fields[rate]:>7,.0f}/s"),
        TextColumn("{task.fields[line]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task("simulate", events=0, rate=0.0, line="waiting for lists…")

        def update(point: dict[str, Any]) -> None:
            progress.update(
                task,
                events=point["events"],
                rate=point["events_per_second"] or 0.0,
                line=ctr_line(point),
            )

        yield update


def ctr_line(point: dict[str, Any]) -> str:
    """`CTR 0.41 · oracle 0.88 · random 0.21 · popular 0.30` for one window (or the run)."""

    def fmt(x: Any) -> str:
        return "—" if x is None else f"{x:.3f}"

    return (
        f"CTR {fmt(point.get('ctr'))} · oracle {fmt(point.get('oracle_ctr'))} · "
        f"random {fmt(point.get('random_ctr'))} · popular {fmt(point.get('popular_ctr'))}"
    )


# ---- tables ---------------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def summary_table(report: SimulationReport) -> Table:
    """Per-window CTR beside the three references, then the run's totals."""
    table = Table(
        title=f"simulation ({report.transport}, exploration {report.exploration}, K={report.k})"
    )
    for column in ("events", "visits", "items", "CTR", "expected", "oracle", "random", "popular"):
        table.add_column(column, justify="right")
    for point in report.series:
        table.add_row(
            f"{point['events']:,}",
            f"{point['visits']:,}",
            str(point["items"]),
            _fmt(point["ctr"]),
            _fmt(point["expected_ctr"]),
            _fmt(point["oracle_ctr"]),
            _fmt(point["random_ctr"]),
            _fmt(point["popular_ctr"]),
        )
    table.add_section()
    for name, rates in (("overall", report.overall), ("second half", report.second_half)):
        table.add_row(
            name,
            "",
            "",
            _fmt(rates["ctr"]),
            _fmt(rates["expected_ctr"]),
            _fmt(rates["oracle_ctr"]),
            _fmt(rates["random_ctr"]),
            _fmt(rates["popular_ctr"]),
        )
    d = report.discovery
    table.caption = (
        f"{report.events:,} events in {report.seconds:.1f} s "
        f"({_fmt(report.events_per_second, ',.0f')}/s) · CTR by source: "
        + ", ".join(f"{s} {_fmt(v)}" for s, v in report.ctr_by_source.items())
        + f" · new items: {d.shown}/{d.new_items} shown, median visits to shown "
        f"{_fmt(d.median_visits_to_shown, '.0f')} (never shown counts as ∞)"
    )
    return table


@dataclass
class PolicyFailure:
    """A policy whose run raised: the comparison goes on and shows why this row is missing."""

    exploration: str
    error: str


def comparison_table(reports: Sequence[SimulationReport | PolicyFailure]) -> Table:
    """One row per exploration policy: second-half CTRs and new-item discovery."""
    table = Table(title="exploration policies, second half of each run (expected CTR per slot)")
    for column in (
        "policy",
        "CTR",
        "expected",
        "oracle",
        "random",
        "popular",
        "vs oracle",
        "new shown",
        "visits→shown",
        "known→shown",
        "shown ≤250",
    ):
        table.add_column(column, justify="right")
    failures = [r for r in reports if isinstance(r, PolicyFailure)]
    if failures:
        table.caption = "; ".join(f"{f.exploration} failed: {f.error}" for f in failures)
    for r in reports:
        if isinstance(r, PolicyFailure):
            table.add_row(r.exploration, "[red]failed[/]", *[""] * 9)
            continue
        h, d = r.second_half, r.discovery
        ratio = (
            h["expected_ctr"] / h["oracle_ctr"] if h["expected_ctr"] and h["oracle_ctr"] else None
        )
        table.add_row(
            r.exploration,
            _fmt(h["ctr"]),
            _fmt(h["expected_ctr"]),
            _fmt(h["oracle_ctr"]),
            _fmt(h["random_ctr"]),
            _fmt(h["popular_ctr"]),
            _fmt(ratio, ".0%"),
            f"{d.shown}/{d.new_items}",
            _fmt(d.median_visits_to_shown, ".0f"),
            _fmt(d.median_visits_known_to_shown, ".0f"),
            _fmt(d.shown_within.get("250"), ".0%"),
        )
    return table
