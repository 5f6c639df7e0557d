"""A real Seldon MLServer on loopback, for the ``oip`` flavor's tests.

MLServer cannot be installed beside aevos: every release pins ``fastapi<0.116`` and aevos
pins a later one. So it lives in a virtual environment of its own, made on first use under
``~/.cache/aevos-test/`` (or ``$AEVOS_TEST_CACHE``), keyed by the MLServer, Python and
scikit-learn versions, and reused by every later run (making it takes about a minute and a
half; it needs PyPI). scikit-learn there is pinned to the version aevos runs with.

The served models are trained by that environment's own Python (MLServer loads them with
joblib, that is pickle: it is MLServer's model store, written here, never read by aevos).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import sklearn

MLSERVER = "1.7.1"
PACKAGES = [f"mlserver=={MLSERVER}", f"mlserver-sklearn=={MLSERVER}"]

TRAIN = r"""
import sys, joblib
from pathlib import Path
from sklearn.datasets import load_iris
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.tree import DecisionTreeClassifier

root = Path(sys.argv[1])
X, y = load_iris(return_X_y=True)
joblib.dump(LogisticRegression(max_iter=1000).fit(X, y), root / "iris" / "model.joblib")
joblib.dump(DecisionTreeClassifier(random_state=0, max_depth=2).fit(X, y),
            root / "iris-tree" / "model.joblib")
texts = ["where is my card", "my card has not arrived", "card delivery is late",
         "I want a refund", "refund my payment please", "charge back this refund"]
labels = ["card_arrival"] * 3 + ["refund"] * 3
joblib.dump(make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels),
            root / "intent" / "model.joblib")
"""


def cache_root() -> Path:
    return Path(os.environ.get("AEVOS_TEST_CACHE") or Path.home() / ".cache" / "aevos-test")


def mlserver_venv() -> Path:
    """The cached virtual environment with MLServer, made (once, under a lock) if missing."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    venv = root / f"mlserver-{MLSERVER}-{py}-sklearn-{sklearn.__version__}"
    done = venv / ".aevos-complete"
    with open(root / "mlserver.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # pytest-xdist workers build it once
        if not done.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            result = subprocess.run(
                [
                    str(venv / "bin" / "pip"),
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    *PACKAGES,
                    f"scikit-learn=={sklearn.__version__}",
                ],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"cannot install {' '.join(PACKAGES)} into {venv} (it needs PyPI):\n"
                    + result.stderr[-2000:]
                )
            done.write_text(" ".join(PACKAGES))
    return venv


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_models(venv: Path, root: Path) -> None:
    """Train and lay out the served models (iris, iris-tree, intent) under ``root``."""
    for name, version in (("iris", "v1"), ("iris-tree", "v1"), ("intent", "v1")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        settings = {
            "name": name,
            "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": version},
        }
        (folder / "model-settings.json").write_text(json.dumps(settings))
    subprocess.run([str(venv / "bin" / "python"), "-c", TRAIN, str(root)], check=True)


class MLServer:
    """One ``mlserver start`` process serving the models under ``root`` on ``port``."""

    def __init__(self, venv: Path, root: Path, port: int | None = None) -> None:
        self.venv = venv
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = root / f"mlserver-{self.port}.log"
        self.started_in = 0.0

    def start(self, timeout: float = 180.0) -> None:
        settings = {
            "host": "127.0.0.1",
            "http_port": self.port,
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "parallel_workers": 0,
            "debug": False,
        }
        (self.root / "settings.json").write_text(json.dumps(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL"))}
        env["OMP_NUM_THREADS"] = "1"
        began = time.monotonic()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.venv / "bin" / "mlserver"), "start", str(self.root)],
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlserver exited: {self.log.read_text()[-3000:]}")
            if self.ready():
                self.started_in = time.monotonic() - began
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"mlserver not ready in {timeout:g}s: {self.log.read_text()[-3000:]}")

    def ready(self) -> bool:
        try:
            with httpx.Client(timeout=2) as client:
                if client.get(f"{self.url}/v2/health/ready").status_code != 200:
                    return False
                return all(
                    client.get(f"{self.url}/v2/models/{m}/ready").status_code == 200
                    for m in ("iris", "iris-tree", "intent")
                )
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


@contextlib.contextmanager
def running(root: Path) -> Iterator[MLServer]:
    venv = mlserver_venv()
    write_models(venv, root)
    server = MLServer(venv, root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
