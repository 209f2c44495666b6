"""Replay an event log through the production pipeline, with prequential evaluation.

The same `Pipeline` class the Kafka service runs; only the source (a JSONL file) and the sink
(JSONL files) differ. Progress (events/s) goes to stderr; the report is a JSON document.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streamrec.contract.records import Record
from streamrec.core.pipeline import BatchResult, Pipeline
from streamrec.core.quality import PrequentialEvaluator
from streamrec.io.edges import Sink, Source
from streamrec.io.file_sink import DecisionLogFile, JsonlSink
from streamrec.io.file_source import FileSource
from streamrec.settings import ModelSettings


@dataclass(frozen=True)
class ReplayOptions:
    k: int = 10
    window: int = 5_000
    batch_size: int = 1_000
    recs_out: Path | None = None
    dlq_out: Path | None = None
    decisions_out: Path | None = None
    progress: bool = True
    catalog: Path | None = None  # a catalog log, applied whole before the first event


def replay(
    path: Path, settings: ModelSettings, options: ReplayOptions = ReplayOptions()
) -> tuple[dict[str, Any], Pipeline]:
    """Run the pipeline over `path`; return (report, pipeline)."""
    settings = settings.model_copy(update={"k": options.k})
    evaluator = PrequentialEvaluator(k=options.k, window=options.window)
    pipeline = Pipeline(
        settings,
        observer=evaluator,
        decision_log=options.decisions_out is not None,
        catalog_topic=None if options.catalog is None else str(options.catalog),
    )
    records = invalid = duplicates = published = 0
    invalid_by_reason: dict[str, int] = {}
    total_bytes = max(path.stat().st_size, 1)
    console = Console(stderr=True)
    started = time.perf_counter()
    with (
        JsonlSink(options.recs_out, options.dlq_out) as sink,
        DecisionLogFile(options.decisions_out) as decisions,
        FileSource(path) as source,
        Progress(
            TextColumn("[bold]replay[/]"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[events]:,} events · {task.fields[rate]:,.0f} events/s"),
            TimeElapsedColumn(),
            console=console,
            disable=not options.progress,
            transient=True,
        ) as progress,
    ):
        task = progress.add_task("replay", total=total_bytes, events=0, rate=0.0)
        catalog_records = 0
        if options.catalog is not None:
            with FileSource(options.catalog) as catalog:
                for batch in _batches(catalog, options.batch_size):
                    result = pipeline.process(batch, refresh=False)
                    _hand_on(result, sink, decisions)
                    catalog_records += len(batch) - len(result.dead_letters)
                    invalid += len(result.dead_letters)
                    for dead in result.dead_letters:
                        invalid_by_reason[dead.reason] = invalid_by_reason.get(dead.reason, 0) + 1
        consumed_bytes = 0
        for batch in _batches(source, options.batch_size):
            result = pipeline.process(batch)
            _hand_on(result, sink, decisions)
            records += len(batch)
            invalid += len(result.dead_letters)
            duplicates += result.duplicates
            published += len(result.recommendations)
            for dead in result.dead_letters:
                invalid_by_reason[dead.reason] = invalid_by_reason.get(dead.reason, 0) + 1
            consumed_bytes += sum(len(r.value or b"") + 1 for r in batch)
            elapsed = time.perf_counter() - started
            progress.update(
                task,
                completed=consumed_bytes,
                events=records,
                rate=records / elapsed if elapsed > 0 else 0.0,
            )
        decisions.write(pipeline.flush_pending())
    elapsed = time.perf_counter() - started
    evaluator.close_window()
    report: dict[str, Any] = {
        "input": str(path),
        "events": records,
        "catalog_records": catalog_records,
        "learned": pipeline.events_learned,
        "invalid": invalid,
        "invalid_by_reason": invalid_by_reason,
        "duplicates": duplicates,
        "users": pipeline.n_users,
        "items": pipeline.n_items,
        "recommendations_published": published,
        "seconds": elapsed,
        "events_per_second": records / elapsed if elapsed > 0 else None,
        "rating_model": settings.rating_model,
        "ranker": settings.ranker,
        "model_digest": pipeline.model_digest(),
    }
    report.update(evaluator.report(pipeline.n_items))
    return report, pipeline


def _batches(source: Source, size: int) -> Iterator[list[Record]]:
    """Every batch of a finite source (it returns an empty one only once exhausted)."""
    while batch := source.poll(size, 0.0):
        yield batch


def _hand_on(result: BatchResult, sink: Sink, decisions: DecisionLogFile) -> None:
    """What one batch produced, to the outputs."""
    sink.publish(result.recommendations)
    sink.dead_letter(result.dead_letters)
    decisions.write(result.decisions)


def write_report(report: dict[str, Any], path: Path) -> None:
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")


def summary_table(report: dict[str, Any]) -> Table:
    """The end-of-replay summary a person reads."""

    def fmt(value: Any, spec: str = ".4f") -> str:
        return "—" if value is None else format(value, spec)

    table = Table(title=f"replay of {report['input']}", show_header=False)
    k = report["k"]
    rows = [
        ("events read", f"{report['events']:,}"),
        ("learned", f"{report['learned']:,}"),
        ("invalid (dead letters)", f"{report['invalid']:,}"),
        ("duplicates dropped", f"{report['duplicates']:,}"),
        ("users / items", f"{report['users']:,} / {report['items']:,}"),
        ("RMSE / MAE", f"{fmt(report['rmse'])} / {fmt(report['mae'])}"),
        (f"Recall@{k} / NDCG@{k}", f"{fmt(report['recall_at_k'])} / {fmt(report['ndcg_at_k'])}"),
        (
            "evaluated ratings / positives",
            f"{report['evaluated_ratings']:,} / {report['evaluated_positive']:,}",
        ),
        ("catalog coverage", fmt(report["coverage"], ".1%")),
        ("throughput", f"{fmt(report['events_per_second'], ',.0f')} events/s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
