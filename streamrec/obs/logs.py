"""Structured logging: text for a terminal, one JSON object per line for a log shipper.

Apart from the metrics (streamrec.obs.metrics) because it shares nothing with them but the
audience: `streamrec run` configures it once at start, before any metric exists.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

_STANDARD_RECORD_FIELDS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (Loki, Elasticsearch, CloudWatch).

    Fields passed with `extra={...}` become top-level keys, so
    `log.info("checkpoint written", extra={"bytes": n})` is searchable by `bytes`.
    """

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack_info"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        # RFC 3339 UTC with milliseconds: sortable and unambiguous across hosts.
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


_HANDLER_MARK = "_streamrec_handler"


def configure_logging(
    fmt: Literal["text", "json"] = "text", level: str | int = "INFO", stream: Any = None
) -> logging.Handler:
    """Send root logging to `stream` (stderr) as text or JSON lines; safe to call twice.

    Only the handler installed by a previous call is replaced, so handlers that tests (pytest's
    caplog) or embedding applications attached stay in place.
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be 'text' or 'json', not {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


__all__ = ["JsonFormatter", "configure_logging"]
