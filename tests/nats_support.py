"""A private nats-server with JetStream for tests and benchmarks: a free port, its store in a
temporary directory, killed (SIGKILL) and started again on the same port and store."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class NatsServer:
    """One private JetStream server; ``url`` stays the same across restarts."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> NatsServer:
        self.process = subprocess.Popen(
            [
                NATS_SERVER,
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


async def _with_js(url: str, work: Any) -> Any:
    import nats

    nc = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=5)
    try:
        return await work(nc.jetstream())
    finally:
        await nc.close()


def add_stream(url: str, name: str, subjects: list[str]) -> None:
    async def work(js: Any) -> None:
        await js.add_stream(name=name, subjects=subjects)

    asyncio.run(_with_js(url, work))


def publish(url: str, subject: str, messages: Iterable[tuple[str | None, bytes]]) -> int:
    """Publish ``(msg id, body)`` pairs, each acknowledged by the stream; returns how many."""

    async def work(js: Any) -> int:
        count = 0
        for msg_id, body in messages:
            headers = {"Nats-Msg-Id": msg_id} if msg_id else None
            await js.publish(subject, body, headers=headers)
            count += 1
        return count

    return int(asyncio.run(_with_js(url, work)))


def publish_json(url: str, subject: str, events: Iterable[dict[str, Any]]) -> int:
    return publish(url, subject, ((None, json.dumps(e).encode()) for e in events))


def consumer_state(url: str, stream: str, durable: str) -> tuple[int, int]:
    """``(num_pending, num_ack_pending)`` of a durable consumer."""

    async def work(js: Any) -> tuple[int, int]:
        info = await js.consumer_info(stream, durable)
        return int(info.num_pending), int(info.num_ack_pending)

    result: tuple[int, int] = asyncio.run(_with_js(url, work))
    return result


def wait_for(condition: Any, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
