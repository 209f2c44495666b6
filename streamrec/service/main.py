"""`python -m streamrec.service` (what `streamrec run` calls): flags → settings → `run()`.

Every failure an operator can cause (bad settings, no checkpoint key, a port in use, no broker,
a refused checkpoint, a reset log) ends as one line on stderr and exit code 1, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict

import orjson

from streamrec.errors import StreamrecError
from streamrec.flags import add_setting_flags, settings_from_args, settings_help
from streamrec.service.loop import run
from streamrec.service.state import Progress

log = logging.getLogger(__name__)


# -- `python -m streamrec.service` / `streamrec run` -------------------------------------------

DESCRIPTION = (
    "Run the streamrec Kafka consumer: consume, learn, publish recommendations, checkpoint, "
    "commit. Flags override the config file, which overrides STREAMREC_* environment variables. "
    "kafka.consumer / kafka.producer are passed to librdkafka untouched (SASL, SSL, any option)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `streamrec run` (and `python -m streamrec.service`)."""
    add_setting_flags(
        parser,
        "kafka.bootstrap_servers",
        "kafka.topics",
        "kafka.group_id",
        "service.state_dir",
        "service.checkpoint_every_events",
        "service.checkpoint_every_seconds",
        "service.batch_size",
        "service.metrics_port",
    )
    parser.add_argument("--max-events", type=int, help="stop after this many records")
    parser.add_argument(
        "--stop-when-idle", type=float, metavar="SECONDS", help="stop after this long idle"
    )
    parser.add_argument(
        "--progress", action="store_true", help="print one JSON line of counters per batch"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m streamrec.service [FLAGS]`."""
    parser = argparse.ArgumentParser(
        prog="python -m streamrec.service",
        description=DESCRIPTION,
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_command(parser.parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """Settings from the flags, then `run()`; an operator's mistake is one line and exit 1."""
    from streamrec.obs.logs import configure_logging

    json_logs = False
    try:
        settings = settings_from_args(args)
        configure_logging(settings.service.log_format, settings.service.log_level)
        json_logs = settings.service.log_format == "json"

        def print_progress(progress: Progress) -> None:
            sys.stdout.write(orjson.dumps(asdict(progress)).decode() + "\n")
            sys.stdout.flush()

        summary = run(
            settings,
            max_events=args.max_events,
            stop_when_idle=args.stop_when_idle,
            on_batch=print_progress if args.progress else None,
        )
    except StreamrecError as exc:
        # One line: as a JSON log record where logs are shipped as JSON, else plain text.
        if json_logs:
            log.error("%s", exc)
        else:
            print(f"streamrec: error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"summary": asdict(summary)}).decode(), flush=True)
    return 0
