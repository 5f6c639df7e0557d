"""``aevos doctor``: reachability, schema revision, size, write-ahead log and the free space
beside it, as text, JSON and Prometheus gauges, on real databases."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from aevos.cli import cli
from aevos.storage import open_store
from aevos.storage.health import _warnings, check_storage
from aevos.storage.migration import head_revision


def doctor(url: str, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--database-url", url, "doctor", *args])
    return result.exit_code, result.output


def test_a_healthy_database_reports_its_figures(database_url: str) -> None:
    open_store(database_url).close()  # migrated
    code, output = doctor(database_url, "--json")
    assert code == 0, output
    report = json.loads(output)
    assert report["reachable"] is True and report["ok"] is True
    assert report["revision"] == report["head"] == head_revision()
    assert report["size_bytes"] > 0
    assert report["latency_seconds"] < 5
    if report["backend"] == "sqlite":
        assert report["free_bytes"] > 0 and report["wal_bytes"] is not None
    code, text = doctor(database_url)
    assert code == 0 and "reachable     yes" in text and f"{head_revision()} (head)" in text


def test_a_large_write_ahead_log_is_measured(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA wal_autocheckpoint=0")  # the log only grows, as under a full disk
        conn.execute("CREATE TABLE filler (x BLOB)")
        conn.execute("INSERT INTO filler SELECT randomblob(100000) FROM generate_series(1, 30)")
    except sqlite3.OperationalError:  # no generate_series in this SQLite build
        for _ in range(30):
            conn.execute("INSERT INTO filler VALUES (randomblob(100000))")
    health = check_storage(f"sqlite:///{path}")
    conn.close()
    assert health.wal_bytes is not None and health.wal_bytes > 3_000_000
    assert health.free_bytes is not None and health.warnings == ()


def test_less_free_space_than_the_log_is_a_warning() -> None:
    (warning,) = _warnings(wal=50_000_000, free=10_000_000)
    assert "checkpoint cannot complete" in warning and "50.0 MB" in warning
    assert _warnings(wal=10_000_000, free=50_000_000) == ()
    assert _warnings(wal=None, free=10) == ()  # PostgreSQL: the server's disk is not visible


def test_a_database_without_schema_says_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    code, output = doctor(f"sqlite:///{path}")
    assert code == 1
    assert "none (run aevos migrate)" in output


def test_an_unreachable_database_exits_1_naming_the_cause() -> None:
    url = "postgresql://aevos:hunter2@127.0.0.1:1/aevos"
    code, output = doctor(url, "--json")
    assert code == 1
    report = json.loads(output)
    assert report["reachable"] is False and "storage_unavailable" in report["error"]
    assert "hunter2" not in output
    code, text = doctor(url, "--prometheus")
    assert code == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["aevos_storage_up"].samples[0].value == 0.0
    assert "aevos_storage_size_bytes" not in families  # unknown is absent, not 0


def test_the_same_figures_as_prometheus_gauges(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    open_store(url).close()
    code, text = doctor(url, "--prometheus")
    assert code == 0, text
    values = {f.name: f.samples[0].value for f in text_string_to_metric_families(text) if f.samples}
    assert values["aevos_storage_up"] == 1.0
    assert values["aevos_storage_schema_current"] == 1.0
    assert values["aevos_storage_size_bytes"] > 0
    assert values["aevos_storage_free_bytes"] > 0
    assert values["aevos_storage_checkpoint_room"] == 1.0
    assert "aevos_storage_wal_bytes" in values


def test_metrics_show_the_database_health_to_administrators_only(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from aevos import Aevos
    from aevos.server import create_app

    app = Aevos(f"sqlite:///{tmp_path / 'a.db'}")
    try:

        def token(role: str) -> dict[str, str]:
            issued = app.identity.create_token(tenant="acme", role=role, name=role, created_by="t")
            return {"Authorization": f"Bearer {issued.token}"}

        with TestClient(create_app(app)) as client:
            admin = client.get("/metrics", headers=token("admin"))
            operator = client.get("/metrics", headers=token("operator"))
        assert admin.status_code == operator.status_code == 200
        families = {f.name: f for f in text_string_to_metric_families(admin.text)}
        assert families["aevos_storage_up"].samples[0].value == 1.0
        assert families["aevos_storage_size_bytes"].samples[0].value > 0
        assert "aevos_runs" in families  # beside the tenant's own metrics
        assert "aevos_storage_up" not in operator.text
    finally:
        app.close()
