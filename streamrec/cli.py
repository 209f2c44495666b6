"""`streamrec ...`: thin subcommands over the library. Errors print one clear line, exit 2."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

# One BLAS thread: on 2 cores multithreaded BLAS made top-K refresh 3-7x slower (DESIGN.md).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from streamrec.errors import StreamrecError  # noqa: E402
from streamrec.flags import add_setting_flags  # noqa: E402

Handler = Callable[[argparse.Namespace], int]


def _scale(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.replace(",", ":").split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN:MAX, e.g. 0.5:5, got {text!r}") from None
    return low, high


def cmd_generate(args: argparse.Namespace) -> int:
    from streamrec.data.synthetic import generate_events, write_events

    n = write_events(
        args.out,
        generate_events(
            args.events,
            n_users=args.users,
            n_items=args.items,
            seed=args.seed,
            invalid_fraction=args.invalid_fraction,
            duplicate_fraction=args.duplicate_fraction,
        ),
    )
    print(f"wrote {n:,} events to {args.out}", file=sys.stderr)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from streamrec.data.movielens import convert, convert_catalog, is_catalog_file, read_ratings

    if args.source != "movielens":
        raise StreamrecError(f"unknown source format {args.source!r}; supported: movielens")
    if is_catalog_file(args.path):
        n = convert_catalog(args.path, args.out)
        print(f"wrote {n:,} catalog items to {args.out} (replay --catalog)", file=sys.stderr)
        return 0
    n = convert(args.path, args.out, as_type=args.as_type, min_rating=args.min_rating)
    print(f"wrote {n:,} {args.as_type} events to {args.out}", file=sys.stderr)
    if args.as_type == "rating":
        ratings = [r[2] for r in read_ratings(args.path)]
        low, high = min(ratings), max(ratings)
        if (low, high) != (1.0, 5.0):
            print(
                f"ratings span {low:g}-{high:g}: replay with --rating-scale {low:g}:{high:g}",
                file=sys.stderr,
            )
    return 0


def cmd_schemas(args: argparse.Namespace) -> int:
    import orjson

    from streamrec.contract.schemas import json_schemas

    args.out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = args.out / name
        path.write_bytes(
            orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
        )
        print(f"wrote {path}", file=sys.stderr)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.console import Console

    from streamrec.evaluate.replay import ReplayOptions, replay, summary_table, write_report
    from streamrec.flags import settings_from_args

    scale = dict(zip(("rating_min", "rating_max"), args.rating_scale or (), strict=False))
    settings = settings_from_args(args, model=scale)
    if not args.input.is_file():
        raise StreamrecError(f"event log {args.input} does not exist")
    if args.catalog is not None and not args.catalog.is_file():
        raise StreamrecError(f"catalog log {args.catalog} does not exist")
    options = ReplayOptions(
        k=args.k,
        window=args.window,
        batch_size=args.batch_size,
        recs_out=args.recs_out,
        dlq_out=args.dlq_out,
        decisions_out=args.decisions_out,
        progress=not args.quiet,
        catalog=args.catalog,
    )
    report, _ = replay(args.input, settings.model, options)
    if args.report:
        write_report(report, args.report)
    if not args.quiet:
        Console(stderr=True).print(summary_table(report))
        if args.report:
            print(f"report written to {args.report}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from streamrec.evaluate.report import render_report

    out = render_report(args.report, args.out)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streamrec.io.embedded_broker import serve

    def ready(address: str) -> None:
        print(address, flush=True)
        print(f"broker listening on {address}; Ctrl-C stops it", file=sys.stderr)

    return serve(args.port, args.host, on_ready=ready)


def cmd_produce(args: argparse.Namespace) -> int:
    from streamrec.flags import settings_from_args
    from streamrec.io.produce_file import produce_file

    kafka = settings_from_args(args).kafka
    topic = args.topic or kafka.topics[0]
    n = produce_file(
        args.input,
        kafka.bootstrap_servers,
        topic,
        args.rate,
        producer_options=dict(kafka.producer),
    )
    print(f"produced {n:,} messages to {topic}", file=sys.stderr)
    return 0


def cmd_inspect_checkpoint(args: argparse.Namespace) -> int:
    import orjson

    from streamrec.flags import settings_from_args
    from streamrec.store.checkpoint import inspect
    from streamrec.store.checkpoint_key import signing_key

    # The service's key, checked the same way: a checkpoint that does not verify against it is
    # not read, and nothing in one is unpickled unless it verifies.
    info = inspect(args.state_dir, signing_key(settings_from_args(args).service))
    if args.json:
        print(orjson.dumps(info, option=orjson.OPT_INDENT_2).decode())
    else:
        for name, value in info.items():
            print(f"{name:>16}: {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="An event-streaming recommender that learns online.",
    )
    parser.add_argument("--config", type=Path, help="settings file (JSON or TOML)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = add("generate", cmd_generate, "write a synthetic event log (users with hidden tastes)")
    p.add_argument("out", type=Path)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--items", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--invalid-fraction", type=float, default=0.0, help="share of corrupted lines")
    p.add_argument("--duplicate-fraction", type=float, default=0.0, help="share of re-sent lines")

    p = add("convert", cmd_convert, "convert a public dataset into a time-ordered event log")
    p.add_argument("source", choices=["movielens"])
    p.add_argument(
        "path",
        type=Path,
        help="ratings (u.data, ratings.csv, ratings.dat) → events; movies (u.item, movies.csv)"
        " → catalog records",
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--as", dest="as_type", choices=["rating", "click", "purchase"], default="rating"
    )
    p.add_argument("--min-rating", type=float, help="keep only ratings at or above this")

    p = add(
        "schemas", cmd_schemas, "write the JSON Schemas of the event and recommendation contract"
    )
    p.add_argument("--out", type=Path, default=Path("schemas"))

    p = add("replay", cmd_replay, "replay a JSONL event log through the pipeline, test-then-learn")
    p.add_argument("input", type=Path)
    p.add_argument("--report", type=Path, help="write the evaluation report (JSON) here")
    p.add_argument(
        "--catalog",
        type=Path,
        help="catalog log (JSONL: items, retirements, rules), applied before the first event",
    )
    p.add_argument("--k", type=int, default=10, help="list length and cut-off for Recall/NDCG")
    p.add_argument("--recs-out", type=Path, help="write every refreshed list here (JSONL)")
    p.add_argument("--dlq-out", type=Path, help="write rejected lines with reasons here (JSONL)")
    p.add_argument(
        "--decisions-out", type=Path, help="write the decision log for evaluate-policy (JSONL)"
    )
    p.add_argument("--window", type=int, default=5_000, help="events per report series point")
    p.add_argument("--batch-size", type=int, default=1_000)
    p.add_argument("--rating-scale", type=_scale, help="MIN:MAX of valid ratings (default 1:5)")
    add_setting_flags(p, "model.rating_model", "model.ranker")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    p = add("broker", cmd_broker, "start the embedded Kafka-compatible broker (Tansu)")
    p.add_argument("--port", type=int, help="default: a free port")
    p.add_argument("--host", default="127.0.0.1")

    p = add(
        "produce",
        cmd_produce,
        "publish a JSONL event log to Kafka (key = user_id; catalog records: item_id, rule:NAME)",
    )
    p.add_argument("input", type=Path)
    add_setting_flags(p, "kafka.bootstrap_servers")
    p.add_argument(
        "--topic", help="default: the first of STREAMREC_KAFKA__TOPICS (streamrec.events)"
    )
    p.add_argument("--rate", type=float, help="messages per second (default: as fast as possible)")

    p = add(
        "inspect-checkpoint",
        cmd_inspect_checkpoint,
        "show what a checkpoint holds (needs the service's key: STREAMREC_SERVICE__CHECKPOINT_KEY"
        " or _KEY_FILE)",
    )
    p.add_argument("state_dir", type=Path, help="state directory (or one checkpoint file)")
    p.add_argument("--json", action="store_true")
    add_setting_flags(p)

    from streamrec.bandit.offpolicy import cli as offpolicy
    from streamrec.flags import settings_help
    from streamrec.service import main as service  # the module, not service.main()

    p = sub.add_parser(
        "run",
        help="run the Kafka consumer service: consume, learn, publish, checkpoint, commit",
        description=service.DESCRIPTION,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=service.run_command)
    service.add_arguments(p)

    p = sub.add_parser(
        "evaluate-policy",
        help="off-policy estimates of a policy on a decision log",
        description=offpolicy.DESCRIPTION,
        epilog=offpolicy.POLICY_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=offpolicy.main)
    offpolicy.add_arguments(p)

    from streamrec.sim import cli as simulate_cli
    from streamrec.sim import demo

    p = add("demo", demo.main, "the whole loop on an embedded broker: consumer + simulated users")
    demo.add_arguments(p)

    p = add(
        "simulate",
        simulate_cli.main,
        "closed loop: simulated users with hidden tastes answer streamrec's lists",
    )
    simulate_cli.add_arguments(p)

    p = add("report", cmd_report, "plot a replay report's per-window series to a PNG")
    p.add_argument("report", type=Path)
    p.add_argument("--out", type=Path, default=Path("report.png"))

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except StreamrecError as exc:
        print(f"streamrec: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
