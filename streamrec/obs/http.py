"""The HTTP endpoint of a streamrec process: `/metrics` for Prometheus, `/healthz` and `/readyz`
for the orchestrator (Kubernetes probes, compose healthchecks).

Apart from the metrics themselves (streamrec.obs.metrics) because serving them is a different job:
a thread, a socket and a routing table, none of which the code that counts events should know.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import disable_created_metrics, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from streamrec.obs.metrics import Metrics


class _QuietHandler(WSGIRequestHandler):
    """Scrapes every few seconds would flood stderr with access log lines."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class MetricsServer:
    """A running metrics/health HTTP server; `port` is the bound port (useful with port 0)."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        address = server.server_address
        self.host: str = str(address[0])
        self.port: int = int(address[1])

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


WSGIEnviron = dict[str, Any]
StartResponse = Callable[..., Any]


def _health_app(
    metrics_app: Callable[[WSGIEnviron, StartResponse], Iterable[bytes]],
    ready: Callable[[], bool],
) -> Callable[[WSGIEnviron, StartResponse], Iterable[bytes]]:
    """Route /healthz and /readyz ourselves; everything else is prometheus-client's app."""

    def app(environ: WSGIEnviron, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            # Alive means "this thread can answer": a wedged process fails the probe by timeout.
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ok\n"]
        if path == "/readyz":
            try:
                is_ready = bool(ready())
            except Exception:
                logging.getLogger(__name__).exception("readiness check failed")
                is_ready = False
            status = "200 OK" if is_ready else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [b"ready\n" if is_ready else b"not ready\n"]
        if path in ("/", "/metrics"):
            return metrics_app(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    return app


def serve(
    metrics: Metrics,
    host: str = "127.0.0.1",
    port: int = 9108,
    ready: Callable[[], bool] | None = None,
) -> MetricsServer:
    """Serve `/metrics`, `/healthz` and `/readyz` from a daemon thread; returns at once.

    `port=0` binds a free port, reported as `server.port`. `ready` defaults to the `ready` gauge.
    A daemon thread, so a crashing consumer is never kept alive by its metrics server. Requests
    are handled on their own threads: a slow scraper cannot block a liveness probe.
    """
    # Text exposition turns each counter's `_created` timestamp into an extra gauge series per
    # label set: double the scrape for a value no dashboard uses. This is process-global, which
    # is fine for the process that serves metrics.
    disable_created_metrics()
    check = ready if ready is not None else metrics.is_ready
    app = _health_app(make_wsgi_app(metrics.registry), check)

    family, _, _, _, _ = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]

    class _Server(ThreadingWSGIServer):
        address_family = family

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(
        target=server.serve_forever, name="streamrec-metrics", kwargs={"poll_interval": 0.1}
    )
    thread.daemon = True
    thread.start()
    return MetricsServer(server, thread)


__all__ = ["MetricsServer", "serve"]
