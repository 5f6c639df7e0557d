"""A private NATS server with JetStream for one test: a free port, a temporary store."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.apps.faults import free_port

NATS_SERVER = "/usr/sbin/nats-server"


class PrivateNats:
    def __init__(self, store_dir: Path, *args: str) -> None:
        self.args = list(args)  # more nats-server flags (--auth TOKEN)
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self._store = store_dir
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PrivateNats:
        self._store.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [
                NATS_SERVER,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self._store),
                *self.args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the private nats-server did not start") from None
                time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None

    # -- JetStream, as a test reads it --------------------------------------------------------

    def run(self, work: Any) -> Any:
        async def go() -> Any:
            import nats

            nc = await nats.connect(self.url)
            try:
                return await work(nc.jetstream())
            finally:
                await nc.close()

        return asyncio.run(go())

    def add_stream(self, name: str, subjects: list[str]) -> None:
        async def add(js: Any) -> None:
            await js.add_stream(name=name, subjects=subjects)

        self.run(add)

    def messages(self, stream: str, subject: str) -> list[tuple[str | None, bytes]]:
        """Every message in ``stream`` on ``subject``: (its Nats-Msg-Id, its data)."""

        async def read(js: Any) -> list[tuple[str | None, bytes]]:
            info = await js.stream_info(stream)
            found: list[tuple[str | None, bytes]] = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                if info.state.messages == 0:
                    break
                msg = await js.get_msg(stream, seq)
                if msg.subject == subject or subject == ">":
                    found.append(((msg.headers or {}).get("Nats-Msg-Id"), msg.data))
            return found

        return list(self.run(read))
