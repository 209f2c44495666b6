"""`streamrec simulate`: flags to settings and options, run (or compare policies), print, report."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

import orjson
from rich.console import Console

from streamrec.errors import StreamrecError
from streamrec.flags import add_setting_flags, settings_from_args
from streamrec.settings import Settings
from streamrec.sim.options import POLICY_NAMES, SIMULATION_MODEL_DEFAULTS, SimulationOptions
from streamrec.sim.report import (
    PolicyFailure,
    SimulationReport,
    comparison_table,
    summary_table,
    write_report,
)
from streamrec.sim.run import compare_policies, simulate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `streamrec simulate`; other settings come from --config / STREAMREC_*."""
    d = SimulationOptions()
    parser.add_argument("--events", type=int, default=d.events, help="stop after ~this many")
    parser.add_argument("--users", type=int, default=d.users)
    parser.add_argument("--items", type=int, default=d.items, help="catalog size at the start")
    parser.add_argument("--new-items", type=int, default=d.new_items, help="items added later")
    parser.add_argument(
        "--new-item-every", type=int, default=d.new_item_every, help="visits between arrivals"
    )
    parser.add_argument(
        "--browse-probability", type=float, default=d.browse_probability, help="per visit"
    )
    parser.add_argument(
        "--position-bias",
        type=float,
        default=d.position_bias,
        help="rank r is looked at with probability r^-X (0: every slot is seen)",
    )
    parser.add_argument("--batch-visits", type=int, default=d.batch_visits)
    parser.add_argument("--window", type=int, default=d.window_visits, help="visits per row")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--policies",
        help="compare these exploration policies in-process, comma-separated, or 'all'",
    )
    parser.add_argument("--transport", choices=("in-process", "kafka"), default="in-process")
    add_setting_flags(
        parser,
        "model.k",
        "model.exploration",
        "model.rating_model",
        "model.ranker",
        "kafka.bootstrap_servers",
        "service.metrics_port",
        help={
            "model.rating_model": "default here: biased_mf (lists do not use the rating model)",
            "kafka.bootstrap_servers": "Kafka to use (default: start an embedded broker)",
            "service.metrics_port": "consumer's /metrics port (default here: 0, off)",
        },
        choices={"model.exploration": POLICY_NAMES},
    )
    parser.add_argument(
        "--no-consumer",
        action="store_true",
        help="do not start the streamrec consumer: one is already running (`streamrec run`)",
    )
    parser.add_argument("--state-dir", type=Path, help="consumer checkpoints (default: temp dir)")
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--quiet", action="store_true", help="no live progress or table")


def settings_of(args: argparse.Namespace) -> Settings:
    """The simulator's model defaults under the flags (and over --config / STREAMREC_*)."""
    return settings_from_args(args, model=SIMULATION_MODEL_DEFAULTS, service={"metrics_port": 0})


def options_from_args(args: argparse.Namespace) -> SimulationOptions:
    return SimulationOptions(
        events=args.events,
        users=args.users,
        items=args.items,
        new_items=args.new_items,
        new_item_every=args.new_item_every,
        browse_probability=args.browse_probability,
        position_bias=args.position_bias,
        batch_visits=args.batch_visits,
        window_visits=args.window,
        seed=args.seed,
        progress=not args.quiet and sys.stderr.isatty(),
    )


def main(args: argparse.Namespace) -> int:
    """`streamrec simulate`: run, print the table on stderr, write the report if asked."""
    settings = settings_of(args)
    options = options_from_args(args)
    console = Console(stderr=True)
    if not console.is_terminal:
        console = Console(stderr=True, width=140)  # piped or logged: no terminal to fit
    if args.policies:
        policies = POLICY_NAMES if args.policies == "all" else tuple(args.policies.split(","))
        unknown = [p for p in policies if p not in POLICY_NAMES]
        if unknown:
            raise StreamrecError(
                f"unknown policies {unknown}; choose from {', '.join(POLICY_NAMES)}"
            )
        reports = compare_policies(settings, options, policies)
        if not args.quiet:
            console.print(comparison_table(reports))
        if args.report:
            runs = [r.as_dict() if isinstance(r, SimulationReport) else asdict(r) for r in reports]
            args.report.parent.mkdir(parents=True, exist_ok=True)
            args.report.write_bytes(
                orjson.dumps(
                    {"kind": "simulation-comparison", "runs": runs}, option=orjson.OPT_INDENT_2
                )
                + b"\n"
            )
        return 1 if any(isinstance(r, PolicyFailure) for r in reports) else 0
    if args.transport != "kafka" and (args.bootstrap_servers or args.no_consumer):
        raise StreamrecError(
            "--bootstrap-servers and --no-consumer only apply with --transport kafka "
            "(in-process runs the pipeline here, without a broker)"
        )
    report = simulate(
        settings,
        options,
        transport=args.transport,
        bootstrap_servers=args.bootstrap_servers,
        start_consumer=not args.no_consumer,
        state_dir=args.state_dir,
    )
    if not args.quiet:
        console.print(summary_table(report))
    if args.report:
        write_report(report, args.report)
        if not args.quiet:
            console.print(f"report written to {args.report}")
    return 0
