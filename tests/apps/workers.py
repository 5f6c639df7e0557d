"""Worker subprocesses for the crash tests: start, SIGKILL, restart, and always clean up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parents[2]


class WorkerPool:
    """``size`` worker processes of ``module``; each one's output goes to a file in ``log_dir``."""

    def __init__(
        self,
        module: str,
        database_url: str,
        log_dir: Path,
        size: int,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.module = module
        self.log_dir = log_dir
        self.env = {**os.environ, "AEVOS_DATABASE_URL": database_url, **(env or {})}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.killed: dict[int, float] = {}  # pid -> when it was SIGKILLed (epoch seconds)
        self.spawned = 0
        for _ in range(size):
            self.procs.append(self._spawn())

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.spawned += 1
        log = (self.log_dir / f"worker-{self.spawned}.log").open("wb")
        self.logs.append(log)
        return subprocess.Popen(
            [sys.executable, "-m", self.module],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def kill(self, index: int, *, restart: bool) -> int:
        """SIGKILL worker ``index`` (no chance to clean up); returns its pid."""
        proc = self.procs[index]
        proc.send_signal(signal.SIGKILL)
        # Taken before reaping: the process can do nothing after the signal is sent.
        self.killed[proc.pid] = time.time()
        proc.wait()
        if restart:
            self.procs[index] = self._spawn()
        return proc.pid

    def index_of(self, pid: int) -> int | None:
        for index, proc in enumerate(self.procs):
            if proc.pid == pid and proc.poll() is None:
                return index
        return None

    def check_alive(self) -> None:
        """Fail if a worker died that the test did not kill (a crash in the worker itself)."""
        for proc in self.procs:
            code = proc.poll()
            if code is not None and proc.pid not in self.killed:
                raise AssertionError(
                    f"worker pid {proc.pid} exited by itself with {code}:\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 40) -> str:
        out = []
        for log in self.logs:
            log.flush()
            text = Path(log.name).read_text(errors="replace").splitlines()
            if text:
                out.append(f"--- {Path(log.name).name}\n" + "\n".join(text[-lines:]))
        return "\n".join(out)

    def log_grep(self, needle: str) -> list[str]:
        hits = []
        for log in self.logs:
            text = Path(log.name).read_text(errors="replace")
            hits.extend(line for line in text.splitlines() if needle in line)
        return hits

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
            proc.wait()
        for log in self.logs:
            log.close()
