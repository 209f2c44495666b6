"""`python -m bench` (or `make bench`): every row of DESIGN.md's performance targets, in one run.

    OPENBLAS_NUM_THREADS=1 python -m bench                 # all rows, full sizes (~10-15 min)
    OPENBLAS_NUM_THREADS=1 python -m bench --quick         # small sizes (< 1 min), as the tests do
    python -m bench --only e2e,bare,topk                   # some rows

Prints a table and writes `bench/results.json`. Every row carries the machine, the date, the data
set and the settings it was measured with; ratios are computed from rows of the same run, never
from remembered numbers. Benchmarks print; they never assert.
"""

from __future__ import annotations

import os

# Before numpy loads: multithreaded BLAS made the refresh 3-7x slower on 2 cores (DESIGN.md).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import gc
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from bench.common import (
    Events,
    Row,
    broker,
    load_events,
    machine_info,
    ml100k_path,
    now_iso,
    ratio_row,
)

GROUPS = (
    "e2e",
    "replay",
    "pipeline",
    "bare",
    "naive",
    "quix",
    "fresh",
    "overload",
    "topk",
    "memory",
)
RESULTS = Path(__file__).with_name("results.json")
PARTIAL = Path(__file__).with_name("results-partial.json")
NEEDS_BROKER = {"e2e", "naive", "quix", "fresh", "overload", "memory"}
NEEDS_EVENTS = {"e2e", "replay", "pipeline", "bare", "naive", "quix", "fresh", "overload"}


@dataclass(frozen=True)
class Sizes:
    events: int | None  # None: every event of the data set
    fresh_events: int
    fresh_rate: float
    overload_events: int
    catalogs: tuple[int, ...]
    topk_users: int
    river_users: int
    topk_seconds: float
    memory_users: int
    memory_items: int
    factors: int
    recovery_tail: int


FULL = Sizes(
    events=None,
    fresh_events=30_000,
    fresh_rate=10_000,
    overload_events=500_000,
    catalogs=(1_000, 10_000, 100_000),
    topk_users=1_000,
    river_users=200,
    topk_seconds=2.0,
    memory_users=1_000_000,
    memory_items=100_000,
    factors=32,
    recovery_tail=20_000,
)
QUICK = Sizes(
    events=3_000,
    fresh_events=2_000,
    fresh_rate=10_000,
    overload_events=10_000,
    catalogs=(500, 2_000),
    topk_users=100,
    river_users=20,
    topk_seconds=0.2,
    memory_users=5_000,
    memory_items=500,
    factors=32,
    recovery_tail=500,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--only", help=f"comma-separated rows to run (default: all): {','.join(GROUPS)}"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke test, < 1 min)")
    parser.add_argument("--ml100k", type=Path, help="ML-100K u.data (else $STREAMREC_ML100K)")
    parser.add_argument(
        "--bootstrap-servers",
        help="an existing Kafka (else $STREAMREC_TEST_BROKER, else an embedded Tansu)",
    )
    parser.add_argument("--events", type=int, help="use only the first N events")
    parser.add_argument("--backlog", type=int, help="events waiting in the overload row")
    parser.add_argument("--memory-users", type=int)
    parser.add_argument("--memory-items", type=int)
    parser.add_argument(
        "--out",
        type=Path,
        help=f"results file (JSON; default: {RESULTS.name} for a full run, else {PARTIAL.name}, "
        f"so a partial or quick run never replaces the numbers README shows)",
    )
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="measure nothing: print the results file as README's Performance table",
    )
    return parser.parse_args(argv)


def selected(only: str | None) -> list[str]:
    if not only:
        return list(GROUPS)
    wanted = [g.strip() for g in only.split(",") if g.strip()]
    unknown = sorted(set(wanted) - set(GROUPS))
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; choose from {','.join(GROUPS)}")
    return wanted


def ratios(rows: dict[str, Row]) -> list[Row]:
    """The targets of DESIGN.md, from rows measured in this run."""
    out = []
    for ranker in ("knn", "mf"):
        e2e = rows.get(f"e2e_{ranker}")
        if e2e is None:
            continue
        if "bare" in rows:
            out.append(
                ratio_row(
                    f"ratio_e2e_{ranker}_bare",
                    f"e2e (ranker={ranker}) / bare River",
                    e2e,
                    rows["bare"],
                    0.8,
                )
            )
        if "quix" in rows:
            out.append(
                ratio_row(
                    f"ratio_e2e_{ranker}_quix",
                    f"e2e (ranker={ranker}) / Quix Streams + River",
                    e2e,
                    rows["quix"],
                    1.5,
                )
            )
        if "naive" in rows:
            out.append(
                ratio_row(
                    f"ratio_e2e_{ranker}_naive",
                    f"e2e (ranker={ranker}) / naive consumer loop",
                    e2e,
                    rows["naive"],
                    None,
                )
            )
    return out


def fmt_value(row: Row) -> str:
    if row.value is None:
        return "—"
    if row.unit == "×":
        return f"{row.value:.2f}×"
    if row.unit in ("s", "ms") and row.value < 100:
        return f"{row.value:,.1f} {row.unit}"
    return f"{row.value:,.0f} {row.unit}"


def markdown(results: dict[str, Any]) -> str:
    """README's Performance section body, generated from a results file (never typed by hand)."""
    machine = results["machine"]
    lines = [
        f"Measured {results['date'][:10]} on {machine['cpu']}, {machine['cores']} cores, "
        f"OPENBLAS_NUM_THREADS={machine['openblas_num_threads']}, broker: {results['broker']}; "
        f"`{results['command']}` ({results['seconds'] / 60:.0f} min).",
        "",
        "| row | value | target | data set | notes |",
        "|---|---:|---|---|---|",
    ]
    for data in results["rows"]:
        row = Row(**{k: v for k, v in data.items() if k in Row.__dataclass_fields__})
        met = "" if row.met is None else (" ✓" if row.met else " ✗")
        note = (row.note or "").replace("|", "/")
        target = (row.target + met).strip()
        lines.append(f"| {row.name} | {fmt_value(row)} | {target} | {row.dataset} | {note} |")
    return "\n".join(lines)


def table(rows: list[Row], machine: dict[str, Any], date: str, command: str) -> Table:
    title = (
        f"streamrec bench · {machine['cpu']} · {machine['cores']} cores · "
        f"OPENBLAS_NUM_THREADS={machine['openblas_num_threads']} · {date}"
    )
    t = Table(title=title, caption=command, show_lines=False)
    t.add_column("row")
    t.add_column("value", justify="right")
    t.add_column("target")
    t.add_column("data set")
    t.add_column("notes", overflow="fold")
    for row in rows:
        met = "" if row.met is None else (" ✓" if row.met else " ✗")
        t.add_row(row.name, fmt_value(row), (row.target + met).strip(), row.dataset, row.note or "")
    return t


def plan(
    groups: list[str],
    events: Events | None,
    sizes: Sizes,
    bootstrap: str | None,
    args: argparse.Namespace,
) -> list[tuple[str, Callable[[], Row | list[Row]]]]:
    """The measurements to run, in order: cheap in-memory rows first, the long ones last."""
    from bench import freshness, memory, overload, throughput, topk

    steps: list[tuple[str, Callable[[], Row | list[Row]]]] = []
    rankers = ("knn", "mf")  # the default configuration, and the speed one (DESIGN.md)
    if events is not None:
        if "bare" in groups:
            steps.append(("bare River loop", partial(throughput.bare_river, events)))
        if "pipeline" in groups:
            for r in rankers:
                steps.append((f"pipeline ({r})", partial(throughput.pipeline_in_memory, events, r)))
        if bootstrap is not None and "e2e" in groups:
            for r in rankers:
                steps.append((f"e2e ({r})", partial(throughput.end_to_end, events, bootstrap, r)))
        if bootstrap is not None and "naive" in groups:
            steps.append(("naive consumer", partial(throughput.naive_consumer, events, bootstrap)))
        if bootstrap is not None and "quix" in groups:
            steps.append(("Quix Streams", partial(throughput.quix_streams, events, bootstrap)))
        if "replay" in groups:
            for r in rankers:
                steps.append((f"replay ({r})", partial(throughput.replay_in_process, events, r)))
        if bootstrap is not None and "fresh" in groups:
            fresh = events.head(sizes.fresh_events)
            for rate, r in ((sizes.fresh_rate, "knn"), (sizes.fresh_rate, "mf"), (None, "mf")):
                steps.append(
                    (
                        f"freshness {rate or 'unpaced'} ({r})",
                        partial(freshness.freshness, fresh, bootstrap, rate, r),
                    )
                )
    if events is not None and bootstrap is not None and "overload" in groups:
        steps.append(
            (
                "overload",
                partial(
                    overload.overload, events, bootstrap, args.backlog or sizes.overload_events
                ),
            )
        )
    if "topk" in groups:
        steps.append(
            (
                "top-K refresh",
                partial(
                    topk.topk_rows,
                    sizes.catalogs,
                    sizes.topk_users,
                    sizes.river_users,
                    sizes.topk_seconds,
                ),
            )
        )
    if "memory" in groups:
        steps.append(
            (
                "memory, checkpoint, recovery",
                partial(
                    memory.memory_rows,
                    args.memory_users or sizes.memory_users,
                    args.memory_items or sizes.memory_items,
                    sizes.factors,
                    bootstrap,
                    sizes.recovery_tail,
                ),
            )
        )
    return steps


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is None:
        args.out = (
            RESULTS if not (args.only or args.quick or args.events or args.backlog) else PARTIAL
        )
    if args.markdown:
        print(markdown(orjson.loads(args.out.read_bytes())))
        return 0
    logging.basicConfig(level=logging.WARNING)
    groups = selected(args.only)
    sizes = QUICK if args.quick else FULL
    machine, date = machine_info(), now_iso()
    # Not a terminal (make bench | tee, CI): wide enough that rows stay one line each.
    console = Console(width=None if sys.stdout.isatty() else 200)
    command = "OPENBLAS_NUM_THREADS=1 python -m bench " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    started = time.perf_counter()

    path = ml100k_path(args.ml100k)
    events = load_events(path) if NEEDS_EVENTS & set(groups) else None
    if events is not None:
        n = args.events or sizes.events
        if n:
            events = events.head(n)
        if path is None:
            console.print("[yellow]ML-100K not found: using a synthetic log of 100k ratings[/]")

    rows: list[Row] = []

    def measure(label: str, fn: Callable[[], Row | list[Row]]) -> None:
        """Run one group; a failure becomes a row saying why, and the other groups still run."""
        console.print(f"[dim]… {label}[/]")
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception as exc:
            result = Row(label, label, None, "", note=f"failed: {type(exc).__name__}: {exc}")
        for row in result if isinstance(result, list) else [result]:
            rows.append(row.stamped(machine, date))
            console.print(f"  {row.name}: [bold]{fmt_value(row)}[/] {row.note}")
        console.print(f"[dim]  ({time.perf_counter() - t0:.1f} s)[/]")

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, contextlib.ExitStack() as stack:
        bootstrap, broker_desc = None, "none"
        if NEEDS_BROKER & set(groups):
            bootstrap, broker_desc = stack.enter_context(broker(args.bootstrap_servers, Path(tmp)))
        # Clients still referenced when the broker stops would log its going away.
        stack.callback(gc.collect)
        for label, fn in plan(groups, events, sizes, bootstrap, args):
            measure(label, fn)
        for row in ratios({row.key: row for row in rows}):
            rows.append(row.stamped(machine, date))
            console.print(f"  {row.name}: [bold]{fmt_value(row)}[/] {row.target}")

    elapsed = time.perf_counter() - started
    console.print(table(rows, machine, date, command))
    results = {
        "command": command,
        "date": date,
        "machine": machine,
        "broker": broker_desc,
        "quick": args.quick,
        "seconds": elapsed,
        "rows": [row.to_json() for row in rows],
    }
    args.out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    console.print(f"wrote {args.out} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
