"""Audit log: appends per second, and the time to verify 1,000,000 records.

    python benchmarks/audit_append.py                        # SQLite (synchronous=FULL)
    python benchmarks/audit_append.py --postgres-url postgresql://postgres@127.0.0.1:5432/test
    python benchmarks/audit_append.py --verify-n 200000 --repeats 5 --json out.json
    python benchmarks/audit_append.py --strict               # exit 1 if the target is missed

Measured, each as the median of ``--repeats`` runs:

* single appends: one event per transaction, each committed durably before the next
  (``AuditLog.append``), one writer;
* batched appends: ``AuditLog.append_many`` of ``--batch`` events per transaction;
* verification: ``AuditLog.verify`` over a chain of ``--verify-n`` records, both unkeyed
  (SHA-256) and keyed (HMAC-SHA256). The chains are written with ``append_many`` in
  transactions of 10,000 records (the same code path as production, only batched).

Target (issue 4): verify 1,000,000 records in under 10 s on SQLite. On PostgreSQL the
benchmark uses a fresh database when the role may create one, otherwise its own tenants in
the given database (removed afterwards).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aevos.audit import AuditEvent, AuditLog
from aevos.storage import Store, open_store
from aevos.storage.dialect import redact_url
from aevos.storage.schema import audit, audit_heads

TARGET_SECONDS = 10.0
TARGET_RECORDS = 1_000_000
KEY = b"benchmark-audit-key-0123456789abcdef"
SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def _events(n: int, tenant: str) -> list[AuditEvent]:
    """Realistic records: ids and digests, ~300 bytes of payload each."""
    return [
        AuditEvent(
            action=("run.started", "model.called", "policy.decided")[i % 3],
            actor=f"svc:claims-{i % 7}",
            tenant=tenant,
            subject=f"claim:{i:08d}",
            run_id=f"{uuid.UUID(int=i).hex}",
            data={
                "workflow": "claims.intake",
                "input_digest": f"{i * 2654435761 % 2**256:064x}",
                "model": "triage@v7",
                "confidence": round((i % 100) / 100, 2),
            },
        )
        for i in range(n)
    ]


def _median_rate(runs: list[tuple[int, float]]) -> float:
    return statistics.median(count / seconds for count, seconds in runs)


def _timed(call: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = call()
    return count, time.perf_counter() - started


def _single(log: AuditLog, tenant: str, n: int) -> int:
    for event in _events(n, tenant):
        log.append(event)
    return n


def _batched(log: AuditLog, tenant: str, n: int, batch: int) -> int:
    events = _events(batch, tenant)
    for _ in range(n // batch):
        log.append_many(events)
    return (n // batch) * batch


def _fill(log: AuditLog, tenant: str, n: int) -> float:
    events = _events(10_000, tenant)
    started = time.perf_counter()
    written = 0
    while written < n:
        chunk = events[: min(len(events), n - written)]
        log.append_many(chunk)
        written += len(chunk)
        print(f"\r  writing {tenant}: {written:,}/{n:,}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return time.perf_counter() - started


def _mode(store: Store) -> str:
    if store.backend != "sqlite":
        with store.engine.connect() as conn:
            return "synchronous_commit=" + str(
                conn.exec_driver_sql("SHOW synchronous_commit").scalar()
            )
    raw = store.engine.raw_connection()
    try:
        value = raw.cursor().execute("PRAGMA synchronous").fetchone()[0]
    finally:
        raw.close()
    return f"synchronous={SYNCHRONOUS.get(value, value)}"


def _bench(store: Store, args: argparse.Namespace, verify_n: int, prefix: str) -> dict[str, Any]:
    plain, keyed = AuditLog(store), AuditLog(store, KEY)
    result: dict[str, Any] = {"backend": store.backend, "durability": _mode(store)}

    _single(plain, f"{prefix}warmup", 20)
    runs = [
        _timed(functools.partial(_single, plain, f"{prefix}single-{r}", args.n))
        for r in range(args.repeats)
    ]
    result["single_appends_per_s"] = _median_rate(runs)
    runs = [
        _timed(functools.partial(_batched, plain, f"{prefix}batch-{r}", args.n * 10, args.batch))
        for r in range(args.repeats)
    ]
    result["batched_records_per_s"] = _median_rate(runs)

    for name, log in (("sha256", plain), ("hmac", keyed)):
        if name == "hmac" and args.no_hmac:
            continue
        tenant = f"{prefix}verify-{name}"
        fill = _fill(log, tenant, verify_n)
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            report = log.verify(tenant)
            times.append(time.perf_counter() - started)
            if not report.ok or report.checked != verify_n:
                raise SystemExit(f"verification of {tenant} failed: {report.problems[:3]}")
        result[f"verify_{name}"] = {
            "records": verify_n,
            "seconds_median": statistics.median(times),
            "seconds_all": times,
            "fill_seconds": fill,
        }
    return result


@contextmanager
def _postgres(url: str) -> Iterator[tuple[str, str]]:
    """A fresh database (yield its URL, ""), or the given one with a tenant prefix."""
    name = f"aevos_bench_audit_{uuid.uuid4().hex[:8]}"
    parsed = sa.engine.make_url(url).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(parsed, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.DBAPIError:
        prefix = f"bench-{uuid.uuid4().hex[:6]}-"
        try:
            yield url, prefix
        finally:
            store = open_store(url)
            with store.engine.begin() as conn:
                for table in (audit, audit_heads):
                    conn.execute(sa.delete(table).where(table.c.tenant.startswith(prefix)))
            store.close()
        admin.dispose()
        return
    try:
        yield sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False), ""
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def _print(result: dict[str, Any]) -> None:
    title = "SQLite" if result["backend"] == "sqlite" else "PostgreSQL"
    print(f"\n{title} ({result['durability']}, {result['url']})")
    print(
        f"  single appends (1 per transaction):  {result['single_appends_per_s']:>12,.0f} appends/s"
    )
    print(
        f"  batched appends ({result['batch']} per transaction): {result['batched_records_per_s']:>11,.0f} records/s"
    )
    for name, label in (("sha256", "SHA-256"), ("hmac", "HMAC-SHA256")):
        figure = result.get(f"verify_{name}")
        if figure is None:
            continue
        seconds = figure["seconds_median"]
        rate = figure["records"] / seconds
        print(
            f"  verify {figure['records']:,} records ({label}): {seconds:6.2f} s median "
            f"({rate:,.0f} records/s; runs {', '.join(f'{s:.2f}' for s in figure['seconds_all'])})"
        )


def _verdicts(result: dict[str, Any]) -> list[tuple[str, bool | None]]:
    verdicts: list[tuple[str, bool | None]] = []
    for name, label in (("sha256", "SHA-256"), ("hmac", "HMAC-SHA256")):
        figure = result.get(f"verify_{name}")
        if figure is None:
            continue
        what = f"SQLite: verify {TARGET_RECORDS:,} records ({label}) < {TARGET_SECONDS:g} s"
        if figure["records"] < TARGET_RECORDS:
            verdicts.append((what + f" (measured {figure['records']:,} only)", None))
        else:
            verdicts.append(
                (
                    what + f": {figure['seconds_median']:.2f} s",
                    figure["seconds_median"] < TARGET_SECONDS,
                )
            )
    return verdicts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="single appends per repeat (1000)")
    parser.add_argument("--batch", type=int, default=100, help="events per append_many (100)")
    parser.add_argument("--verify-n", type=int, default=TARGET_RECORDS, help="records to verify")
    parser.add_argument("--pg-verify-n", type=int, default=200_000, help="on PostgreSQL (200000)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; median (3)")
    parser.add_argument("--no-hmac", action="store_true", help="skip the keyed chain")
    parser.add_argument("--postgres-url", help="also measure this PostgreSQL database")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory(prefix="aevos-audit-bench-") as tmp:
        url = f"sqlite:///{tmp}/audit.db"
        store = open_store(url)
        try:
            result = _bench(store, args, args.verify_n, "")
        finally:
            store.close()
        result.update(url=url, batch=args.batch)
        results.append(result)
        _print(result)
    if args.postgres_url:
        with _postgres(args.postgres_url) as (pg_url, prefix):
            store = open_store(pg_url)
            try:
                result = _bench(store, args, args.pg_verify_n, prefix)
            finally:
                store.close()
        result.update(url=redact_url(pg_url), batch=args.batch)
        results.append(result)
        _print(result)

    verdicts = _verdicts(results[0])
    print("\nTargets")
    for what, passed in verdicts:
        print(f"  {'PASS' if passed else 'FAIL' if passed is False else 'N/A '}  {what}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "targets": verdicts}, indent=2))
    return 1 if args.strict and any(passed is not True for _, passed in verdicts) else 0


if __name__ == "__main__":
    sys.exit(main())
