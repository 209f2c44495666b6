"""The streamrec consumer service as a child process of the simulator (Kafka transport, demo).

Its own module because it is process management (config file, environment, signals, log tail),
not simulation: the loop only needs `check()` while it waits and the run summary at the end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson

from streamrec.errors import StreamrecError
from streamrec.settings import Settings
from streamrec.store.checkpoint_key import KEY_ENV, KEY_FILE_ENV, state_dir_key


class ServiceProcess:
    """The streamrec consumer (`python -m streamrec.service`, what `streamrec run` runs) as a
    child process with these settings.

    A process, not a thread: on two cores the consumer and the simulated users then run in
    parallel instead of taking turns on one interpreter lock, and the demo shows the service as
    it is deployed, stopped by SIGTERM (finish the batch, checkpoint, commit, exit 0). Settings go
    through a config file, except the checkpoint key, which goes through the environment. Without
    a configured key (or key file) it uses the state dir's own random key (`state_dir_key`): a
    throwaway consumer needs no secret from its user, and a reused state dir keeps its key. Its
    logs go to `workdir/service.log`; `check()` raises with their tail if it dies.
    """

    def __init__(self, settings: Settings, workdir: Path, *, log_level: str = "WARNING") -> None:
        self.workdir = workdir
        self.log_path = workdir / "service.log"
        self.out_path = workdir / "service.out"
        self.summary: dict[str, Any] = {}  # its RunSummary, once stopped
        config = settings.model_dump(mode="json")
        config["service"].pop("checkpoint_key", None)
        config["service"]["log_level"] = log_level
        config_path = workdir / "service-config.json"
        config_path.write_bytes(orjson.dumps(config))
        # The key the settings say (a key file goes through the config), not whatever the
        # environment holds: both set would be refused.
        env = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, KEY_FILE_ENV)}
        env["OPENBLAS_NUM_THREADS"] = "1"  # DESIGN.md: multithreaded BLAS slows the refresh
        service = settings.service
        if service.checkpoint_key is not None:
            env[KEY_ENV] = service.checkpoint_key.get_secret_value()
        elif service.checkpoint_key_file is None:
            env[KEY_ENV] = state_dir_key(service.state_dir)
        command = [sys.executable, "-m", "streamrec.service", "--config", str(config_path)]
        with self.log_path.open("wb") as log_file, self.out_path.open("wb") as out_file:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out_file, stderr=log_file, env=env
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def check(self) -> None:
        code = self.process.poll()
        if code is not None:
            raise StreamrecError(
                f"the streamrec consumer exited with code {code}; its log ends:\n{self._log_tail()}"
            )

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM, wait for the graceful exit; returns the run summary it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                raise StreamrecError(
                    f"the streamrec consumer did not stop within {timeout_s:.0f} s; killed it"
                ) from None
        if self.process.returncode != 0:
            raise StreamrecError(
                f"the streamrec consumer exited with code {self.process.returncode}; its log "
                f"ends:\n{self._log_tail()}"
            )
        for line in reversed(self.out_path.read_bytes().splitlines()):
            with contextlib.suppress(orjson.JSONDecodeError):
                data = orjson.loads(line)
                if isinstance(data, dict) and "summary" in data:
                    self.summary = dict(data["summary"])
                    break
        return self.summary
