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
from pathlib import Path

import orjson

from streamrec.errors import StreamrecError
from streamrec.service.loop import run
from streamrec.service.state import Progress
from streamrec.settings import Settings

log = logging.getLogger(__name__)


# -- `python -m streamrec.service` -------------------------------------------------------------


def settings_help() -> str:
    """Every setting with its environment variable, default and description (for --help)."""
    lines = [
        "settings (environment variable, default: description); a --config file (JSON/TOML) "
        "uses the same",
        'sections and names, e.g. {"kafka": {"consumer": {"security.protocol": "SASL_SSL"}}}:',
    ]
    for section, field in Settings.model_fields.items():
        model = field.annotation
        for name, info in getattr(model, "model_fields", {}).items():
            default = info.get_default(call_default_factory=True)
            if name == "checkpoint_key":
                default = "no default: required, unless CHECKPOINT_KEY_FILE is set"
            described = f" {info.description}" if info.description else ""
            lines.append(f"  STREAMREC_{section.upper()}__{name.upper()} ({default!s}):{described}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m streamrec.service",
        description="Run the streamrec Kafka consumer (what `streamrec run` calls): consume, "
        "learn, publish recommendations, checkpoint, commit. Flags override the config file, "
        "which overrides STREAMREC_* environment variables. kafka.consumer / kafka.producer "
        "are passed to librdkafka untouched (SASL, SSL, any option).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="settings file (JSON or TOML)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers, HOST:PORT[,...]")
    parser.add_argument("--topics", help="event topics, comma-separated")
    parser.add_argument("--group-id", help="consumer group id")
    parser.add_argument("--state-dir", type=Path, help="where checkpoints are kept")
    parser.add_argument("--max-events", type=int, help="stop after this many records")
    parser.add_argument(
        "--stop-when-idle", type=float, metavar="SECONDS", help="stop after this long idle"
    )
    parser.add_argument("--checkpoint-every-events", type=int)
    parser.add_argument("--checkpoint-every-seconds", type=float)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--metrics-port", type=int, help="0 disables /metrics, /healthz, /readyz")
    parser.add_argument(
        "--progress", action="store_true", help="print one JSON line of counters per batch"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from streamrec.obs.metrics import configure_logging
    from streamrec.settings import load_settings

    args = _parser().parse_args(argv)
    json_logs = False
    try:
        settings = load_settings(
            args.config,
            kafka={
                "bootstrap_servers": args.bootstrap_servers,
                "topics": args.topics.split(",") if args.topics else None,
                "group_id": args.group_id,
            },
            service={
                "state_dir": args.state_dir,
                "checkpoint_every_events": args.checkpoint_every_events,
                "checkpoint_every_seconds": args.checkpoint_every_seconds,
                "batch_size": args.batch_size,
                "metrics_port": args.metrics_port,
            },
        )
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
