"""Report plots: a replay report becomes a readable PNG, whatever gaps its windows have."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamrec.evaluate.report import DPI, FIGURE_WIDTH_IN, ReportError, render_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which the PNG format puts first."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, "not a PNG file"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def synthetic_report(windows: int = 12, *, ctr: bool = False) -> dict[str, Any]:
    series = []
    for i in range(windows):
        window: dict[str, Any] = {
            "events": (i + 1) * 1000,
            "rmse": 1.2 - 0.02 * i,
            "mae": 0.95 - 0.015 * i,
            # Windows without positive events report null: the line must show a gap, not 0.
            "recall_at_k": None if i == 3 else 0.08 + 0.01 * i,
            "ndcg_at_k": None if i == 3 else 0.04 + 0.005 * i,
            "events_per_second": 40_000 + 500 * (i % 3),
        }
        if ctr:
            window["ctr"] = 0.02 + 0.002 * i
        series.append(window)
    return {
        "events": windows * 1000,
        "invalid": 7,
        "duplicates": 2,
        "rmse": 1.05,
        "mae": 0.84,
        "recall_at_k": 0.13,
        "ndcg_at_k": 0.07,
        "k": 10,
        "evaluated_positive": 4_000,
        "coverage": 0.41,
        "events_per_second": 40_512.5,
        "series": series,
    }


def test_renders_a_png_with_three_panels(tmp_path: Path) -> None:
    out = render_report(synthetic_report(), tmp_path / "report.png")
    assert out == tmp_path / "report.png"
    width, height = png_size(out)
    assert width == FIGURE_WIDTH_IN * DPI
    assert height > width * 0.5  # three stacked panels, taller than a single strip
    assert out.stat().st_size > 20_000  # lines, labels and legends, not an empty canvas


def test_ctr_panel_is_added_for_simulator_runs(tmp_path: Path) -> None:
    plain = png_size(render_report(synthetic_report(), tmp_path / "plain.png"))
    with_ctr = png_size(render_report(synthetic_report(ctr=True), tmp_path / "ctr.png"))
    assert with_ctr[0] == plain[0] and with_ctr[1] > plain[1]


def test_reads_a_report_file_and_creates_the_output_directory(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_bytes(orjson.dumps(synthetic_report()))
    out = render_report(path, tmp_path / "plots" / "run.png")
    assert png_size(out)[0] > 0


@pytest.mark.parametrize(
    "series",
    [
        pytest.param(
            [
                {
                    "events": 10,
                    "rmse": 0.9,
                    "mae": None,
                    "recall_at_k": None,
                    "ndcg_at_k": None,
                    "events_per_second": 5.0,
                }
            ],
            id="single-window",
        ),
        pytest.param(
            [
                {
                    "events": 10,
                    "rmse": None,
                    "mae": None,
                    "recall_at_k": None,
                    "ndcg_at_k": None,
                    "events_per_second": None,
                }
            ],
            id="all-null",
        ),
        pytest.param([], id="no-windows"),
        pytest.param([{"rmse": 1.0}, {"rmse": 0.9}], id="no-event-counts"),
    ],
)
def test_degenerate_series_still_render(tmp_path: Path, series: list[dict[str, Any]]) -> None:
    report = synthetic_report()
    report["series"] = series
    for key in ("rmse", "recall_at_k"):
        report[key] = None
    out = render_report(report, tmp_path / "report.png")
    assert png_size(out)[0] > 0


def test_svg_output_by_suffix(tmp_path: Path) -> None:
    out = render_report(synthetic_report(), tmp_path / "report.svg")
    assert out.read_text().lstrip().startswith("<?xml")


def test_reports_without_series_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="series"):
        render_report({"events": 3}, tmp_path / "x.png")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        render_report(broken, tmp_path / "x.png")
    with pytest.raises(ReportError, match="cannot read"):
        render_report(tmp_path / "missing.json", tmp_path / "x.png")
