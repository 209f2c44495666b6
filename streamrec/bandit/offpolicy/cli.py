"""`streamrec evaluate-policy`: flags in, a rich table (or JSON) out, exit code 2 on bad input.

The only part of off-policy evaluation that prints; kept apart so the estimators stay a library.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from streamrec.bandit.offpolicy.estimators import evaluate_policy
from streamrec.bandit.offpolicy.logs import OffPolicyError
from streamrec.bandit.offpolicy.targets import POLICY_HELP

__all__ = ["add_arguments", "main", "print_report", "run_cli"]


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Render a report from `evaluate_policy` as a rich table."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()

    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.5f}"

    title = f"policy {report['policy']} on {report.get('log', 'log')} ({report.get('format', '')})"
    table = Table(title=title)
    table.add_column("estimator")
    table.add_column("value", justify="right")
    level = round(100 * report["ci_level"])
    table.add_column(f"{level}% CI", justify="right")
    table.add_column("note", style="dim")
    for row in report["estimates"]:
        ci = "—" if row["ci_low"] is None else f"[{fmt(row['ci_low'])}, {fmt(row['ci_high'])}]"
        table.add_row(row["estimator"], fmt(row["value"]), ci, row["note"])
    console.print(table)
    d = report["diagnostics"]
    console.print(
        f"rows {report['rows']}, lists {report['lists']}, actions {report['actions']}, "
        f"clip {report['clip']}, bootstrap {report['n_bootstrap']} (seed {report['seed']}); "
        f"weights: mean {d['mean_weight']:.3f}, max {d['max_weight']:.3g}, "
        f"ESS {d['effective_sample_size']:.1f}"
    )


DESCRIPTION = "Estimate a policy's value from a logged-decision file (off-policy)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `streamrec evaluate-policy` (it reads a log, not the service's settings)."""
    parser.add_argument("log", help="streamrec JSONL decision log or Open Bandit Dataset CSV")
    parser.add_argument("--policy", required=True, help="policy to evaluate (see below)")
    parser.add_argument("--format", default="auto", choices=["auto", "streamrec", "obd"])
    parser.add_argument("--bootstrap", type=int, default=500, help="resamples (0: no CI)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clip", type=float, default=None, help="cap importance weights")
    parser.add_argument("--ci-level", type=float, default=0.95)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run_cli(argv: Sequence[str]) -> int:
    """`streamrec evaluate-policy LOG --policy SPEC [...]` from an argument list."""
    parser = argparse.ArgumentParser(
        prog="streamrec evaluate-policy", description=DESCRIPTION, epilog=POLICY_HELP
    )
    add_arguments(parser)
    return main(parser.parse_args(list(argv)))


def main(args: argparse.Namespace) -> int:
    """Run the estimators on parsed flags; returns the exit code (2 on a bad log or policy)."""
    try:
        report = evaluate_policy(
            args.log,
            args.policy,
            fmt=args.format,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
            clip=args.clip,
            ci_level=args.ci_level,
        )
    except OffPolicyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0
