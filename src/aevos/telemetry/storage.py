"""The database's health (:mod:`aevos.storage.health`) as Prometheus gauges, the figures
``aevos doctor`` prints (``aevos doctor --prometheus``, for a node exporter's text-file
collector or a cron job)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from ..storage.health import StorageHealth


class _StorageCollector:
    def __init__(self, health: StorageHealth) -> None:
        self.health = health

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        h = self.health
        labels = ["backend"]

        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily | None:
            if value is None:
                return None  # unknown: absent rather than a misleading 0
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric([h.backend], value)
            return family

        families = (
            gauge("aevos_storage_up", "1 if the database answered, else 0.", float(h.reachable)),
            gauge(
                "aevos_storage_schema_current",
                "1 if the schema is at this aevos's newest revision, else 0.",
                float(h.schema_current) if h.reachable else None,
            ),
            gauge("aevos_storage_latency_seconds", "One round trip (SELECT 1).", h.latency_seconds),
            gauge("aevos_storage_size_bytes", "Size of the database.", h.size_bytes),
            gauge("aevos_storage_wal_bytes", "Size of the write-ahead log.", h.wal_bytes),
            gauge(
                "aevos_storage_free_bytes",
                "Free space on the database's file system (SQLite).",
                h.free_bytes,
            ),
            gauge(
                "aevos_storage_checkpoint_room",
                "1 if there is room beside the database to checkpoint its write-ahead log.",
                None if h.wal_bytes is None or h.free_bytes is None else float(not h.warnings),
            ),
        )
        yield from (family for family in families if family is not None)


def storage_exposition(health: StorageHealth) -> bytes:
    """``health`` in the Prometheus text format."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_StorageCollector(health))
    return generate_latest(registry)
