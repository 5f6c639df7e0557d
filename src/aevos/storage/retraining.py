"""Retraining: models' retraining configurations (versioned) and their retrainings."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from .. import codec
from ..records.retraining import RetrainingConfig, RetrainingRun, RetrainingStatus, Trigger
from .repository import Repository, StoreHandle
from .schema import retraining_configs, retraining_runs

#: What a config row keeps as JSON beside its indexed columns.
_SETTINGS = (
    "holdout",
    "min_holdout",
    "reserve",
    "target",
    "delta",
    "min_count",
    "auto_promote",
    "policy",
    "rollout",
)
_RUN_FIELDS = {
    "status",
    "reason",
    "dataset",
    "parent",
    "candidate",
    "certified",
    "threshold",
    "promotion",
    "lineage",
    "finished_at",
}


def config_of(row: Any) -> RetrainingConfig:
    settings = codec.decode(row.settings)
    return RetrainingConfig(
        tenant=row.tenant,
        model=row.model,
        version=int(row.version),
        recipe=row.recipe,
        params=codec.decode(row.params),
        every_labels=None if row.every_labels is None else int(row.every_labels),
        interval=None if row.interval is None else float(row.interval),
        updated_by=row.updated_by,
        updated_at=float(row.updated_at),
        **{k: settings[k] for k in _SETTINGS if k in settings},
    )


def run_of(row: Any) -> RetrainingRun:
    return RetrainingRun(
        run_id=row.run_id,
        tenant=row.tenant,
        model=row.model,
        trigger=Trigger(row.trigger),
        status=RetrainingStatus(row.status),
        config_version=int(row.config_version),
        requested_by=row.requested_by,
        started_at=float(row.started_at),
        label_count=int(row.label_count),
        reason=row.reason,
        dataset=row.dataset,
        parent=None if row.parent is None else int(row.parent),
        candidate=None if row.candidate is None else int(row.candidate),
        certified=None if row.certified is None else bool(row.certified),
        threshold=None if row.threshold is None else float(row.threshold),
        promotion=row.promotion,
        lineage=codec.decode(row.lineage),
        finished_at=None if row.finished_at is None else float(row.finished_at),
    )


def _insert_run(store: StoreHandle) -> Any:
    # Many workers may start the same retraining (one idempotency key): the first row stays.
    return (
        store.dialect.insert(retraining_runs)
        .on_conflict_do_nothing(index_elements=["run_id"])
        .returning(retraining_runs.c.run_id)
    )


class RetrainingRepository(Repository):
    """Retraining configurations and retrainings, in the unit of work it is bound to."""

    # -- configurations ---------------------------------------------------------------------

    def add_config(self, config: RetrainingConfig) -> RetrainingConfig:
        """Store ``config`` as the next version of its model's configuration (its
        ``version`` is ignored); returns it as stored."""
        c = retraining_configs.c
        latest = self.conn.execute(
            sa.select(sa.func.max(c.version)).where(
                c.tenant == config.tenant, c.model == config.model
            )
        ).scalar()
        number = 1 if latest is None else int(latest) + 1
        values = config.to_json()
        self.conn.execute(
            retraining_configs.insert(),
            {
                "tenant": config.tenant,
                "model": config.model,
                "version": number,
                "recipe": config.recipe,
                "params": codec.encode(dict(config.params), "the recipe's parameters"),
                "every_labels": config.every_labels,
                "interval": config.interval,
                "settings": codec.encode({k: values[k] for k in _SETTINGS}, "settings"),
                "updated_by": config.updated_by,
                "updated_at": config.updated_at,
            },
        )
        stored = self.config(config.tenant, config.model, number)
        assert stored is not None  # inserted just above, in this transaction
        return stored

    def config(
        self, tenant: str, model: str, version: int | None = None
    ) -> RetrainingConfig | None:
        """Version ``version`` of ``model``'s configuration (None: the one in force)."""
        c = retraining_configs.c
        query = sa.select(retraining_configs).where(c.tenant == tenant, c.model == model)
        if version is not None:
            query = query.where(c.version == version)
        row = self.conn.execute(query.order_by(c.version.desc()).limit(1)).first()
        return None if row is None else config_of(row)

    def config_history(self, tenant: str, model: str) -> list[RetrainingConfig]:
        c = retraining_configs.c
        rows = self.conn.execute(
            sa.select(retraining_configs)
            .where(c.tenant == tenant, c.model == model)
            .order_by(c.version.desc())
        )
        return [config_of(row) for row in rows]

    def triggered(self) -> list[RetrainingConfig]:
        """The configuration in force of every model of every tenant that has a trigger
        (every N labels or an interval): what the workers' sweep looks at."""
        c = retraining_configs.c
        newest = (
            sa.select(c.tenant, c.model, sa.func.max(c.version).label("version"))
            .group_by(c.tenant, c.model)
            .subquery()
        )
        rows = self.conn.execute(
            sa.select(retraining_configs)
            .join(
                newest,
                sa.and_(
                    c.tenant == newest.c.tenant,
                    c.model == newest.c.model,
                    c.version == newest.c.version,
                ),
            )
            .where(sa.or_(c.every_labels.is_not(None), c.interval.is_not(None)))
            .order_by(c.tenant, c.model)
        )
        return [config_of(row) for row in rows]

    # -- retrainings ------------------------------------------------------------------------

    def add_run(self, run: RetrainingRun) -> bool:
        """Record ``run`` unless a retraining with its id exists; whether it was new."""
        values = run.to_json()
        values["lineage"] = codec.encode(dict(run.lineage), "the retraining's lineage")
        inserted = self.conn.execute(self.uow.prepared(_insert_run), values).first()
        return inserted is not None

    def run(self, run_id: str) -> RetrainingRun | None:
        row = self.conn.execute(
            sa.select(retraining_runs).where(retraining_runs.c.run_id == run_id)
        ).first()
        return None if row is None else run_of(row)

    def update_run(self, run_id: str, **values: Any) -> None:
        """Set fields of a retraining (status, reason, dataset, candidate, ...)."""
        unknown = set(values) - _RUN_FIELDS
        if unknown:
            raise ValueError(f"not a retraining field: {sorted(unknown)}")
        if "status" in values:
            values["status"] = RetrainingStatus(values["status"]).value
        if "lineage" in values:
            values["lineage"] = codec.encode(dict(values["lineage"]), "the retraining's lineage")
        self.conn.execute(
            retraining_runs.update().where(retraining_runs.c.run_id == run_id).values(**values)
        )

    def runs(
        self, tenant: str, model: str, *, limit: int = 50, trigger: Trigger | None = None
    ) -> list[RetrainingRun]:
        """``model``'s retrainings, newest first."""
        r = retraining_runs.c
        query = sa.select(retraining_runs).where(r.tenant == tenant, r.model == model)
        if trigger is not None:
            query = query.where(r.trigger == trigger.value)
        rows = self.conn.execute(query.order_by(r.started_at.desc(), r.run_id).limit(limit))
        return [run_of(row) for row in rows]
