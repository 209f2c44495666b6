"""Plots of a replay report, so a person can look at a run instead of reading JSON.

`streamrec replay` writes a report whose `series` holds one entry per window of events
(cumulative `events` at the window's end, and that window's `rmse`, `mae`, `recall_at_k`,
`ndcg_at_k`, `events_per_second`, and `ctr` for simulator runs). `render_report` draws each
quantity against events seen, which is how online learning is judged: does error fall as the
model sees more, and does it stay down when the stream drifts?

matplotlib is an optional extra (`streamrec[plots]`) and is imported only here, on use, so the
consumer neither needs it nor pays its import time. Drawing uses the object-oriented API with the
Agg canvas directly: no pyplot global state, no GUI backend, safe in threads and on servers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streamrec.errors import StreamrecError

if TYPE_CHECKING:
    from matplotlib.axes import Axes


class ReportError(StreamrecError):
    """A report file that cannot be read or drawn."""


FIGURE_WIDTH_IN = 10.0
PANEL_HEIGHT_IN = 2.6
DPI = 100


def load_report(path: Path) -> dict[str, Any]:
    """Read a replay report JSON file, with an error that names the file on failure."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise ReportError(f"cannot read report {path}: {exc}") from exc
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"report {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"report {path} must be a JSON object, found {type(data).__name__}")
    return data


def _number(value: Any) -> float:
    """A plottable float; null, missing or non-numeric becomes NaN (matplotlib leaves a gap)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _column(series: Sequence[Mapping[str, Any]], key: str) -> list[float]:
    return [_number(window.get(key)) for window in series]


def _has_values(values: Sequence[float]) -> bool:
    return any(math.isfinite(v) for v in values)


def _fmt(value: Any, digits: int = 4) -> str:
    number = _number(value)
    if not math.isfinite(number):
        return "n/a"
    if abs(number) >= 1000:
        return f"{number:,.0f}"
    return f"{number:.{digits}g}"


def _summary(report: Mapping[str, Any]) -> str:
    """One line of the run's totals for the figure title."""
    k = report.get("k", "K")
    parts = [
        f"events {_fmt(report.get('events'))}",
        f"invalid {_fmt(report.get('invalid'))}",
        f"duplicates {_fmt(report.get('duplicates'))}",
        f"RMSE {_fmt(report.get('rmse'))}",
        f"MAE {_fmt(report.get('mae'))}",
        f"Recall@{k} {_fmt(report.get('recall_at_k'))}",
        f"NDCG@{k} {_fmt(report.get('ndcg_at_k'))}",
        f"coverage {_fmt(report.get('coverage'))}",
        f"{_fmt(report.get('events_per_second'))} events/s",
    ]
    return "   ".join(parts)


def _draw(
    ax: Axes,
    x: Sequence[float],
    lines: Sequence[tuple[str, Sequence[float], float | None]],
    ylabel: str,
) -> None:
    """Plot each (label, values, overall) line; dashed horizontal line at the run's overall value.

    Markers are drawn too: a single-window run, or a window surrounded by nulls, would otherwise
    be an invisible zero-length line.
    """
    drawn = False
    for label, values, overall in lines:
        if not _has_values(values):
            continue
        (line,) = ax.plot(x, values, marker="o", markersize=3, linewidth=1.4, label=label)
        drawn = True
        if overall is not None and math.isfinite(overall):
            ax.axhline(
                overall,
                color=line.get_color(),
                linestyle="--",
                linewidth=0.8,
                alpha=0.7,
                label=f"{label} overall {_fmt(overall)}",
            )
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(loc="best", fontsize="small")
    else:
        ax.text(
            0.5,
            0.5,
            "no data in any window",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="grey",
        )


def render_report(report: Mapping[str, Any] | Path, out: Path) -> Path:
    """Draw the report's per-window series to `out` (format from the suffix; PNG by default).

    Panels: RMSE and MAE, Recall@K and NDCG@K, events/s, and CTR when the report has it.
    Returns the path written. Raises ReportError for a report without a `series` list.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise ReportError(
            "drawing reports needs matplotlib: pip install 'streamrec[plots]'"
        ) from exc

    data = load_report(report) if isinstance(report, Path) else report
    series = data.get("series")
    if not isinstance(series, list) or not all(isinstance(w, Mapping) for w in series):
        raise ReportError("report has no 'series' list of windows; was it written by replay?")

    x = _column(series, "events")
    if not _has_values(x):
        # Older or hand-made reports: number the windows instead of failing.
        x = [float(i + 1) for i in range(len(series))]
    k = data.get("k", "K")
    ctr = _column(series, "ctr")
    panels: list[tuple[str, list[tuple[str, Sequence[float], float | None]]]] = [
        (
            "rating error",
            [
                ("RMSE", _column(series, "rmse"), _number(data.get("rmse"))),
                ("MAE", _column(series, "mae"), _number(data.get("mae"))),
            ],
        ),
        (
            "top-N quality",
            [
                (f"Recall@{k}", _column(series, "recall_at_k"), _number(data.get("recall_at_k"))),
                (f"NDCG@{k}", _column(series, "ndcg_at_k"), _number(data.get("ndcg_at_k"))),
            ],
        ),
        (
            "events/s",
            [
                (
                    "throughput",
                    _column(series, "events_per_second"),
                    _number(data.get("events_per_second")),
                )
            ],
        ),
    ]
    if _has_values(ctr):
        # Simulator runs also carry the hidden-taste baselines for the same users and moments.
        ctr_lines: list[tuple[str, Sequence[float], float | None]] = [
            ("streamrec", ctr, _number(data.get("ctr")))
        ]
        for name in ("oracle", "popular", "random"):
            column = _column(series, f"{name}_ctr")
            if _has_values(column):
                ctr_lines.append((name, column, None))
        panels.append(("CTR", ctr_lines))

    figure = Figure(
        figsize=(FIGURE_WIDTH_IN, PANEL_HEIGHT_IN * len(panels) + 0.8),
        dpi=DPI,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (ylabel, lines) in zip(axes, panels, strict=True):
        _draw(ax, x, lines, ylabel)
    # Throughput from zero: a 5% wobble should look like one, not like a collapse.
    axes[2].set_ylim(bottom=0)
    axes[-1].set_xlabel("events seen (end of window)")
    axes[-1].ticklabel_format(axis="x", style="plain", useOffset=False)
    figure.suptitle(_summary(data), fontsize="small")

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lstrip(".").lower()
    figure.savefig(out, format=suffix if suffix in ("png", "svg", "pdf") else "png")
    return out
