"""Retraining (``app.retraining``): a durable workflow from labels to a certified candidate.

Each model's configuration (:class:`~aevos.records.retraining.RetrainingConfig`, versioned)
names the recipe that trains it and its parameters, and what starts a retraining: every N
new labels, an interval, or a person (Python, CLI, HTTP, the console). A retraining is a
run of the workflow ``aevos.retraining`` on the ``retraining`` queue, so it trains on a
worker, never in the process that asked for it, and resumes after a crash from its last
committed step:

1. ``plan``: the configuration it runs with, the recipe checked, the champion (its parent);
2. ``snapshot``: a dataset version of the model's labels (content-addressed);
3. ``train``: split by labelling time (the newest ``holdout`` fraction held out), train the
   recipe on the rest and register the candidate with its lineage (recipe@version,
   parameters, dataset digest, parent, holdout metrics) in one transaction. The version is
   tagged with the run id, and a re-run after a crash finds it instead of registering
   another; the artifact never goes through the run's journal;
4. ``evaluate``: the registered candidate and the champion on the same holdout;
5. ``certify``: Learn-then-Test on the holdout, recorded (certified or not);
6. ``promote``: the promotion policy judges the evidence; ``allow`` promotes, ``approve``
   asks a person (the approvals flow), ``deny`` leaves the candidate registered.

A retraining that cannot finish ends FAILED with its reason, both in its run and in its
retraining record: an unknown recipe, a recipe that raises, a dataset too small to split
(before anything is registered), or a candidate that cannot be certified (registered with
its lineage and a certification record saying why nothing is certified; never promoted and,
having no threshold, nothing of it is automated).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..audit import AuditEvent
from ..errors import (
    AevosError,
    DefinitionError,
    ModelNotFoundError,
    RetrainingConfigError,
    RetrainingFailedError,
    RetrainingNotConfiguredError,
    RunNotFoundError,
    check_limit,
    failure_reason,
)
from ..evolution.certify import DEFAULT_DELTA, DEFAULT_TARGET, certify
from ..evolution.dataset import Dataset
from ..evolution.recipes import params_to_json
from ..identity import Principal, Role, check_tenant
from ..kernel.step import StepContext
from ..kernel.workflow import StartOptions
from ..models.registry import check_name
from ..models.types import ModelCard
from ..records.retraining import RetrainingConfig, RetrainingRun, RetrainingStatus, Trigger
from .data import Split, TrainingData, split

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..evolution.certifications import Certifications
    from ..evolution.registry import RecipeRegistry
    from ..kernel.context import WorkflowContext
    from ..kernel.handle import RunHandle
    from ..kernel.runtime import Runtime
    from ..models.promotion import PromotionGate
    from ..models.registry import ModelRegistry
    from ..models.types import ModelVersion
    from ..people.approvals import Approvals
    from ..rollouts import Rollouts
    from ..storage import Store

__all__ = ["QUEUE", "RUN_TAG", "WORKFLOW", "Retraining"]

log = logging.getLogger("aevos.retraining")

#: The workflow every retraining is a run of, and the queue it runs on.
WORKFLOW = "aevos.retraining"
QUEUE = "retraining"
#: The tag on a registered candidate naming the retraining run that made it.
RUN_TAG = "aevos.retraining.run"
#: The promotion policy a configuration names unless told otherwise.
DEFAULT_POLICY = "retraining-promotion"
MAX_RUNS = 200


def _actor(run_id: str) -> str:
    return f"service:retraining#{run_id}"


class Retraining:
    """Retraining of the app's models: configure, start, list; the workflow and the sweep
    that starts retrainings on triggers (``app.retraining``, one per app)."""

    def __init__(
        self,
        runtime: Runtime,
        store: Store,
        audit: AuditLog,
        registry: ModelRegistry,
        recipes: RecipeRegistry,
        *,
        data: Callable[[], TrainingData],
        certifications: Callable[[], Certifications],
        promotions: Callable[[], PromotionGate],
        approvals: Callable[[], Approvals],
        rollouts: Callable[[], Rollouts] | None = None,
    ) -> None:
        self.runtime = runtime
        self.store = store
        self.audit = audit
        self.registry = registry
        self.recipes = recipes
        self._data_factory = data
        self._data_source: TrainingData | None = None
        self._certifications = certifications
        self._promotions = promotions
        self._approvals = approvals
        self._rollouts = rollouts
        if QUEUE not in runtime.queues:
            # One training at a time per worker: training takes the cores it is given.
            runtime.queue(QUEUE, worker_concurrency=1)
        step = runtime.step
        self._plan = step(name=f"{WORKFLOW}.plan")(self._plan_step)
        self._snapshot = step(name=f"{WORKFLOW}.snapshot")(self._snapshot_step)
        self._train = step(name=f"{WORKFLOW}.train")(self._train_step)
        self._evaluate = step(name=f"{WORKFLOW}.evaluate")(self._evaluate_step)
        self._certify = step(name=f"{WORKFLOW}.certify")(self._certify_step)
        self._promote = step(name=f"{WORKFLOW}.promote")(self._promote_step)
        self._finish = step(name=f"{WORKFLOW}.finish")(self._finish_step)
        self.workflow = runtime.workflow(name=WORKFLOW, queue=QUEUE, data_policy="keep")(
            self._retrain
        )

    @property
    def data(self) -> TrainingData:
        """Where retrainings get their labelled data: the app's dataset versions unless
        another source was set (labels kept outside aevos, say)."""
        return self._data_source if self._data_source is not None else self._data_factory()

    @data.setter
    def data(self, source: TrainingData) -> None:
        self._data_source = source

    def _data(self) -> TrainingData:
        return self.data

    # -- configuration ----------------------------------------------------------------------

    def configure(
        self,
        model: str,
        *,
        recipe: str,
        params: Mapping[str, Any] | None = None,
        every_labels: int | None = None,
        interval: float | None = None,
        holdout: float = 0.2,
        min_holdout: int = 20,
        reserve: float = 0.5,
        target: float = DEFAULT_TARGET,
        delta: float = DEFAULT_DELTA,
        min_count: int | None = None,
        auto_promote: bool = True,
        policy: str = DEFAULT_POLICY,
        rollout: bool | Mapping[str, Any] | None = None,
        tenant: str = "default",
        actor: str = "system",
    ) -> RetrainingConfig:
        """Set how ``model`` is retrained: a new configuration version, audited as
        ``retraining.configured``. The recipe must be registered in ``app.recipes`` and
        its parameters valid (RecipeNotFoundError, RecipeParameterError); the other
        settings are checked too (RetrainingConfigError naming the field).

        ``rollout``: unset (the default), a candidate the policy allows becomes the
        champion at once. True, or a plan (``steps``, ``step_minutes``, ``replay``,
        ``criteria``, ``policy``: what :meth:`aevos.rollouts.Rollouts.start` takes), and
        the candidate is rolled out instead: shadow, canary steps, then the rollout's
        promotion gate; a model without a champion yet is still promoted directly."""
        check_name(model)
        check_tenant(tenant)
        chosen = self.recipes.get(recipe)
        normalised = params_to_json(chosen.params(params))
        _check_int("every_labels", every_labels, low=1, optional=True)
        _check_number("interval", interval, low=1.0, high=366 * 86400.0, optional=True)
        _check_number("holdout", holdout, low=0.01, high=0.9)
        _check_int("min_holdout", min_holdout, low=1)
        _check_number("reserve", reserve, low=0.01, high=1.0)
        _check_number("target", target, low=0.5, high=0.9999)
        _check_number("delta", delta, low=0.0001, high=0.5)
        _check_int("min_count", min_count, low=0, optional=True)
        if not isinstance(auto_promote, bool):
            raise RetrainingConfigError("auto_promote is true or false", "auto_promote")
        if not isinstance(policy, str) or not 0 < len(policy) <= 100:
            raise RetrainingConfigError("policy is a policy name of 1-100 characters", "policy")
        if not isinstance(actor, str) or not 0 < len(actor) <= 300:
            raise DefinitionError("actor must be a string of 1 to 300 characters")
        plan = _rollout_plan(rollout)
        draft = RetrainingConfig(
            tenant=tenant,
            model=model,
            version=0,
            recipe=recipe,
            params=normalised,
            every_labels=every_labels,
            interval=None if interval is None else float(interval),
            holdout=float(holdout),
            min_holdout=min_holdout,
            reserve=float(reserve),
            target=float(target),
            delta=float(delta),
            min_count=min_count,
            auto_promote=auto_promote,
            policy=policy,
            rollout=plan,
            updated_by=actor,
            updated_at=time.time(),
        )
        with self.store.transaction() as uow:
            stored = uow.retraining.add_config(draft)
            data = stored.to_json()
            for key in ("tenant", "updated_by", "updated_at"):
                data.pop(key)
            data["recipe_version"] = chosen.version
            self.audit.append(
                AuditEvent(
                    action="retraining.configured",
                    actor=actor,
                    tenant=tenant,
                    subject=f"model:{model}",
                    data=data,
                ),
                uow=uow,
            )
        return stored

    def config(
        self, model: str, *, tenant: str = "default", version: int | None = None
    ) -> RetrainingConfig:
        """The configuration in force for ``model`` (or its ``version``);
        RetrainingNotConfiguredError when there is none."""
        with self.store.reading() as uow:
            found = uow.retraining.config(tenant, model, version)
        if found is None:
            raise RetrainingNotConfiguredError(
                f"model {str(model)[:80]!r} has no retraining configuration"
                + ("" if version is None else f" version {version}")
                + "; set one with app.retraining.configure(model, recipe=...)"
            )
        return found

    def configs(self, model: str, *, tenant: str = "default") -> builtins.list[RetrainingConfig]:
        """Every configuration version of ``model``, newest first."""
        with self.store.reading() as uow:
            return uow.retraining.config_history(tenant, model)

    # -- starting and reading ---------------------------------------------------------------

    def start(
        self,
        model: str,
        *,
        tenant: str = "default",
        trigger: Trigger | str = Trigger.MANUAL,
        actor: str = "system",
        idempotency_key: str | None = None,
    ) -> RunHandle[Any]:
        """Enqueue a retraining of ``model`` for a worker; returns the run's handle at once
        (``handle.run_id`` is also the retraining's id). The configuration in force is the
        one it runs with (RetrainingNotConfiguredError without one). With an
        ``idempotency_key`` already used, the retraining it started is returned."""
        check_name(model)
        check_tenant(tenant)
        kind = Trigger(trigger)
        config = self.config(model, tenant=tenant)
        try:
            labels = self._data().label_count(model, tenant=tenant)
        except AevosError as exc:
            # The start must not fail for a figure of its record; the next label trigger
            # then counts from 0 and comes at once, which is the safe side.
            log.warning("labels of %s (tenant %s) not counted: %s", model, tenant, exc.code)
            labels = 0
        handle = self.runtime.enqueue(
            self.workflow,
            (model, config.version, kind.value, actor),
            {},
            StartOptions(tenant=tenant, actor=actor, idempotency_key=idempotency_key),
        )
        self._ensure_record(handle.run_id, tenant, model, kind, config.version, actor, labels)
        return handle

    def run(self, run_id: str, *, tenant: str = "default") -> RetrainingRun:
        """The retraining ``run_id`` of ``tenant`` (RunNotFoundError if there is none)."""
        with self.store.reading() as uow:
            found = uow.retraining.run(run_id)
        if found is None or found.tenant != tenant:
            raise RunNotFoundError(f"no retraining {str(run_id)[:80]!r}")
        return found

    def runs(
        self, model: str, *, tenant: str = "default", limit: int = 50
    ) -> builtins.list[RetrainingRun]:
        """``model``'s retrainings, newest first."""
        check_limit(limit, MAX_RUNS)
        with self.store.reading() as uow:
            return uow.retraining.runs(tenant, model, limit=limit)

    def _ensure_record(
        self,
        run_id: str,
        tenant: str,
        model: str,
        trigger: Trigger,
        config_version: int,
        actor: str,
        labels: int,
    ) -> None:
        with self.store.transaction() as uow:
            uow.retraining.add_run(
                RetrainingRun(
                    run_id=run_id,
                    tenant=tenant,
                    model=model,
                    trigger=trigger,
                    status=RetrainingStatus.QUEUED,
                    config_version=config_version,
                    requested_by=actor,
                    started_at=time.time(),
                    label_count=labels,
                )
            )

    # -- triggers ---------------------------------------------------------------------------

    def sweep(self, now: float | None = None) -> builtins.list[str]:
        """Start the retrainings that triggers call for (every worker does this between
        claims): every N new labels since the model's last retraining, and each interval.
        Each start is idempotent by a key that every worker computes alike, so many
        workers start each retraining once. None starts while the model's last retraining
        is queued or running, nor, when retraining hands candidates to rollouts, while a
        rollout of the model is active. Returns the run ids started (or found started)."""
        moment = time.time() if now is None else now
        with self.store.reading() as uow:
            configs = uow.retraining.triggered()
        started = []
        for config in configs:
            try:
                run_id = self._due(config, moment)
            except AevosError as exc:
                log.warning(
                    "retraining trigger of %s (tenant %s) failed: %s",
                    config.model,
                    config.tenant,
                    exc.code,
                )
                continue
            if run_id is not None:
                started.append(run_id)
        return started

    def _due(self, config: RetrainingConfig, now: float) -> str | None:
        tenant, model = config.tenant, config.model
        with self.store.reading() as uow:
            recent = uow.retraining.runs(tenant, model, limit=1)
            scheduled = uow.retraining.runs(tenant, model, limit=1, trigger=Trigger.SCHEDULE)
            rolling = config.rollout is not None and uow.rollouts.active(tenant, model) is not None
        last = recent[0] if recent else None
        if last is not None and last.status in (RetrainingStatus.QUEUED, RetrainingStatus.RUNNING):
            return None
        if rolling:
            # Its candidate would find this rollout still active at the promote step and fail
            # after training; the labels wait for the retraining that follows its end.
            return None
        prefix = f"{WORKFLOW}/{tenant}/{model}"
        if config.every_labels is not None:
            since = 0 if last is None else last.label_count
            count = self._data().label_count(model, tenant=tenant)
            if count - since >= config.every_labels:
                # Keyed by the retraining it follows, not by a label count: a count recorded
                # wrong (or equal to an earlier one's) would name an old, finished run and
                # the trigger would never start another.
                after = "none" if last is None else last.run_id
                key = _key(f"{prefix}/labels/after/{after}")
                return self.start(
                    model,
                    tenant=tenant,
                    trigger=Trigger.LABELS,
                    actor="system:retraining",
                    idempotency_key=key,
                ).run_id
        if config.interval is not None:
            slot = math.floor(now / config.interval)
            base = scheduled[0].started_at if scheduled else config.updated_at
            if slot > math.floor(base / config.interval):
                key = _key(f"{prefix}/schedule/{slot}")
                return self.start(
                    model,
                    tenant=tenant,
                    trigger=Trigger.SCHEDULE,
                    actor="system:retraining",
                    idempotency_key=key,
                ).run_id
        return None

    # -- the workflow -----------------------------------------------------------------------

    def _retrain(
        self, ctx: WorkflowContext, model: str, config_version: int, trigger: str, actor: str
    ) -> dict[str, Any]:
        tenant, run_id = ctx.tenant, ctx.run_id
        try:
            plan = self._plan(ctx, tenant, model, config_version, trigger, actor)
            dataset = self._snapshot(ctx, tenant, model)
            candidate = self._train(ctx, tenant, model, plan, dataset)
            measured = self._evaluate(ctx, tenant, model, plan, dataset, candidate)
            certification = self._certify(ctx, tenant, model, plan, dataset, candidate, measured)
            if certification["threshold"] is None:
                raise RetrainingFailedError(
                    f"candidate {model}@{candidate['version']} not certified: "
                    f"{certification['reason']}"
                )
            promotion = self._promote(ctx, tenant, model, plan, candidate, measured, certification)
        except AevosError as exc:
            reason = failure_reason(exc)
            self._finish(ctx, tenant, run_id, "failed", reason)
            raise RetrainingFailedError(f"retraining of {model} failed: {reason}") from None
        return self._finish(ctx, tenant, run_id, "succeeded", None, promotion)

    # -- the steps --------------------------------------------------------------------------

    def _plan_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        config_version: int,
        trigger: str,
        actor: str,
    ) -> dict[str, Any]:
        config = self.config(model, tenant=tenant, version=config_version)
        try:
            parent: int | None = self.registry.get(model, "champion", tenant=tenant).version
        except ModelNotFoundError:
            parent = None
        self._ensure_record(sctx.run_id, tenant, model, Trigger(trigger), config_version, actor, 0)
        with self.store.transaction() as uow:
            uow.retraining.update_run(sctx.run_id, status="running", parent=parent)
        recipe = self.recipes.get(config.recipe)  # RecipeNotFoundError: failed, with why
        params = params_to_json(recipe.params(config.params))
        return {
            "recipe": recipe.name,
            "recipe_version": recipe.version,
            "params": params,
            "parent": parent,
            "holdout": config.holdout,
            "min_holdout": config.min_holdout,
            "reserve": config.reserve,
            "target": config.target,
            "delta": config.delta,
            "min_count": config.min_count,
            "auto_promote": config.auto_promote,
            "policy": config.policy,
            "rollout": None if config.rollout is None else dict(config.rollout),
            "config_version": config.version,
        }

    def _snapshot_step(self, sctx: StepContext, tenant: str, model: str) -> dict[str, Any]:
        version = self._data().snapshot(model, tenant=tenant, actor=_actor(sctx.run_id))
        with self.store.transaction() as uow:
            uow.retraining.update_run(sctx.run_id, dataset=version.digest)
        return {"digest": version.digest, "rows": len(version)}

    def _split(self, tenant: str, plan: Mapping[str, Any], digest: str) -> Split:
        data = self._data().training_data(digest, tenant=tenant)
        return split(
            data,
            holdout=plan["holdout"],
            min_holdout=plan["min_holdout"],
            # Plans recorded before the reserve existed: as configured by default.
            reserve=plan.get("reserve", RetrainingConfig.reserve),
        )

    def _train_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        plan: Mapping[str, Any],
        dataset: Mapping[str, Any],
    ) -> dict[str, Any]:
        existing = self._registered_by(sctx.run_id, tenant, model)
        if existing is not None:
            # Registered before a crash, or by an attempt whose result was not recorded:
            # the same candidate, never a second one.
            return {"version": existing, "found": True}
        parts = self._split(tenant, plan, dataset["digest"])
        train, holdout = parts.train, parts.evaluation
        ref = f"{plan['recipe']}@{plan['recipe_version']}"
        try:
            result = self.recipes.train(plan["recipe"], train, plan["params"], evaluation=holdout)
        except AevosError:
            raise
        except Exception as exc:
            # The recipe's own message may quote the training texts: its type only.
            log.exception("recipe %s raised while training %s", ref, model)
            raise RetrainingFailedError(
                f"recipe {ref} raised {type(exc).__name__} while training"
            ) from None
        artifact = result.artifact
        if artifact is None:
            raise RetrainingFailedError(f"recipe {ref} returned no servable artifact")
        metrics = {} if result.metrics is None else result.metrics.to_json()
        numbers = {k: float(v) for k, v in metrics.items() if k in ("accuracy", "macro_f1")}
        tags = {
            RUN_TAG: sctx.run_id,
            "aevos.recipe": ref,
            "aevos.recipe.params": _fit(_canonical(plan["params"])),
            "aevos.dataset": dataset["digest"],
            "aevos.parent": "" if plan["parent"] is None else str(plan["parent"]),
            "aevos.holdout.n": str(len(holdout)),
            "aevos.reserve.n": str(len(parts.calibration)),
        }
        version = self.registry.register(
            model,
            artifact.data,
            flavor=artifact.flavor,
            config=artifact.config,
            parts=artifact.blobs,
            card=ModelCard(
                metrics=numbers,
                training_data=f"dataset:{dataset['digest']}",
                training_run_id=sctx.run_id,
                intended_use=f"retrained by {ref}",
            ),
            tags=tags,
            tenant=tenant,
            created_by=_actor(sctx.run_id),
        )
        if version.tags.get(RUN_TAG) != sctx.run_id:
            # The same bytes were registered before (content addressing returned that
            # version): it is the candidate, and says which run made it first.
            log.info("retraining %s produced %s, already registered", sctx.run_id, version.ref)
        lineage = {
            **result.lineage(),
            "recipe_ref": ref,
            "dataset": dataset["digest"],
            "parent": plan["parent"],
            "n_holdout": len(holdout),
            "n_reserve": len(parts.calibration),
        }
        with self.store.transaction() as uow:
            uow.retraining.update_run(sctx.run_id, candidate=version.version, lineage=lineage)
        return {"version": version.version, "found": False}

    def _registered_by(self, run_id: str, tenant: str, model: str) -> int | None:
        try:
            versions = self.registry.versions(model, tenant=tenant)
        except ModelNotFoundError:
            return None
        for version in reversed(versions):
            if version.tags.get(RUN_TAG) == run_id:
                return version.version
        return None

    def _evaluate_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        plan: Mapping[str, Any],
        dataset: Mapping[str, Any],
        candidate: Mapping[str, Any],
    ) -> dict[str, Any]:
        # The registered artifacts are measured, not the model in memory: what serves is
        # what is certified, even after a crash between registering and recording.
        parts = self._split(tenant, plan, dataset["digest"])
        holdout = parts.evaluation
        ours = self.registry.get(model, candidate["version"], tenant=tenant)
        confidences, correct, accuracy = _measure(self.registry, ours, holdout)
        if not parts.calibrated_on_evaluation:
            # Certification only ever sees the reserve (possibly too small to certify).
            confidences, correct, _ = _measure(self.registry, ours, parts.calibration)
        result: dict[str, Any] = {
            "candidate": {"accuracy": accuracy, "samples": len(holdout)},
            "evaluated_on": "reserve" if parts.calibrated_on_evaluation else "newest",
            "confidences": confidences,
            "correct": correct,
        }
        if plan["parent"] is not None:
            champion = self.registry.get(model, plan["parent"], tenant=tenant)
            _, _, champion_accuracy = _measure(self.registry, champion, holdout)
            result["champion"] = {"accuracy": champion_accuracy, "samples": len(holdout)}
        measured = {k: result[k] for k in ("candidate", "champion", "evaluated_on") if k in result}
        with self.store.transaction() as uow:
            current = uow.retraining.run(sctx.run_id)
            lineage = {} if current is None else dict(current.lineage)
            uow.retraining.update_run(sctx.run_id, lineage={**lineage, "holdout": measured})
        return result

    def _certify_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        plan: Mapping[str, Any],
        dataset: Mapping[str, Any],
        candidate: Mapping[str, Any],
        measured: Mapping[str, Any],
    ) -> dict[str, Any]:
        certifications = self._certifications()
        actor = _actor(sctx.run_id)
        version = candidate["version"]
        record = certifications.latest(model, version, tenant=tenant)
        if record is None or record.created_by != actor:
            outcome = certify(
                measured["confidences"],
                measured["correct"],
                target=plan["target"],
                delta=plan["delta"],
                min_count=plan["min_count"],
            )
            record = certifications.record(
                model, version, outcome, dataset=dataset["digest"], tenant=tenant, actor=actor
            )
        self.registry.set_tags(
            model,
            version,
            {"aevos.certified": "false" if record.threshold is None else f"{record.threshold:g}"},
            tenant=tenant,
            by=actor,
        )
        with self.store.transaction() as uow:
            uow.retraining.update_run(
                sctx.run_id, certified=record.certified, threshold=record.threshold
            )
        return {
            "id": record.id,
            "threshold": record.threshold,
            "n": record.n,
            "errors": record.errors,
            "reason": record.reason,
        }

    def _promote_step(
        self,
        sctx: StepContext,
        tenant: str,
        model: str,
        plan: Mapping[str, Any],
        candidate: Mapping[str, Any],
        measured: Mapping[str, Any],
        certification: Mapping[str, Any],
    ) -> dict[str, Any]:
        if not plan["auto_promote"]:
            return {"decision": None, "promoted": False}
        version = candidate["version"]
        if plan.get("rollout") is not None and plan.get("parent") is not None:
            return self._roll_out(sctx, tenant, model, version, plan["rollout"])
        evidence: dict[str, Any] = {
            "candidate": dict(measured["candidate"]),
            "certified": {"threshold": certification["threshold"], "n": certification["n"]},
        }
        if "champion" in measured:
            evidence["champion"] = dict(measured["champion"])
        actor = _actor(sctx.run_id)
        gate = self._promotions()
        judged = gate.judge(
            model, version, evidence=evidence, tenant=tenant, actor=actor, policy=plan["policy"]
        )
        decision = judged.decision
        promoted = False
        approval = None
        if decision.result == "allow":
            gate.promote(model, version, alias="champion", tenant=tenant, by=actor)
            promoted = True
        elif decision.result == "approve":
            requester = Principal(
                token_id=sctx.run_id, tenant=tenant, role=Role.SERVICE, name="retraining"
            )
            approval = (
                self._approvals()
                .request(
                    requester,
                    model,
                    version,
                    alias="champion",
                    alias_was=judged.alias_was,
                    policy=plan["policy"],
                    evidence=judged.evidence,
                    decision=decision,
                )
                .approval_id
            )
        with self.store.transaction() as uow:
            uow.retraining.update_run(sctx.run_id, promotion=decision.result)
        return {
            "decision": decision.result,
            "reason": decision.reason,
            "promoted": promoted,
            "approval": approval,
        }

    def _roll_out(
        self, sctx: StepContext, tenant: str, model: str, version: int, rollout: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Hand the candidate to a rollout instead of promoting it (``rollout`` config)."""
        from ..errors import RolloutConflictError

        if self._rollouts is None:
            raise RetrainingConfigError("rollout is configured but this app has no rollouts")
        service = self._rollouts()
        options = dict(rollout)
        try:
            started = service.start(
                model, version, tenant=tenant, actor=_actor(sctx.run_id), **options
            )
        except RolloutConflictError:
            # A retried step whose rollout started before the crash finds it; another
            # rollout of the model is a failed retraining, with why.
            active = service.active(model, tenant=tenant)
            if active is None or active.version != version:
                raise
            started = active
        with self.store.transaction() as uow:
            uow.retraining.update_run(sctx.run_id, promotion="rollout")
        return {
            "decision": "rollout",
            "reason": f"rolled out as {started.rollout_id}",
            "promoted": False,
            "approval": None,
            "rollout": started.rollout_id,
        }

    def _finish_step(
        self,
        sctx: StepContext,
        tenant: str,
        run_id: str,
        status: str,
        reason: str | None,
        promotion: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = time.time()
        with self.store.transaction() as uow:
            uow.retraining.update_run(run_id, status=status, reason=reason, finished_at=now)
            found = uow.retraining.run(run_id)
            assert found is not None  # the plan step made it
            self.audit.append(
                AuditEvent(
                    action=f"retraining.{status}",
                    actor=_actor(run_id),
                    tenant=tenant,
                    subject=f"run:{run_id}",
                    data={
                        "model": found.model,
                        "trigger": found.trigger.value,
                        "dataset": found.dataset,
                        "parent": found.parent,
                        "candidate": found.candidate,
                        "certified": found.certified,
                        "threshold": found.threshold,
                        "promotion": found.promotion,
                        "reason": reason,
                    },
                ),
                uow=uow,
            )
        return {
            "run_id": run_id,
            "status": status,
            "model": found.model,
            "candidate": found.candidate,
            "dataset": found.dataset,
            "certified": found.certified,
            "threshold": found.threshold,
            "promotion": None if promotion is None else dict(promotion),
        }


# -- helpers ----------------------------------------------------------------------------------


def _measure(
    registry: ModelRegistry, version: ModelVersion, holdout: Dataset
) -> tuple[list[float], list[bool], float]:
    """Confidences, correctness and accuracy of a registered version on ``holdout``."""
    texts = list(holdout.texts)
    if not texts:
        return [], [], 0.0
    adapter = registry.load(version)
    batch = getattr(adapter, "batch_predict", None)
    predictions = batch(texts) if callable(batch) else [adapter.predict(t) for t in texts]
    confidences = [
        0.0 if p.confidence is None else round(float(p.confidence), 6) for p in predictions
    ]
    correct = [str(p.label) == str(y) for p, y in zip(predictions, holdout.labels, strict=True)]
    accuracy = sum(correct) / len(correct) if correct else 0.0
    return confidences, correct, accuracy


def _key(text: str) -> str:
    # Idempotency keys are at most 200 characters; model names alone may be.
    return "retrain:" + hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _fit(text: str, limit: int = 500) -> str:
    # A tag holds 500 characters; longer parameters are kept whole in the retraining's
    # lineage and named here by digest.
    if len(text) <= limit:
        return text
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _check_int(name: str, value: object, *, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RetrainingConfigError(f"{name} must be an integer >= {low}, got {value!r}", name)


def _check_number(
    name: str, value: object, *, low: float, high: float, optional: bool = False
) -> None:
    if value is None and optional:
        return
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise RetrainingConfigError(
            f"{name} must be a number from {low:g} to {high:g}, got {value!r}", name
        )


#: What a retraining's rollout plan may set (the arguments of Rollouts.start it passes on).
_ROLLOUT_KEYS = frozenset({"steps", "step_minutes", "replay", "criteria", "policy"})


def _rollout_plan(value: object) -> dict[str, Any] | None:
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise RetrainingConfigError("rollout is true, false or a plan (a mapping)", "rollout")
    unknown = set(value) - _ROLLOUT_KEYS
    if unknown:
        raise RetrainingConfigError(
            f"rollout has no setting {sorted(str(k) for k in unknown)[0][:50]!r} "
            f"(known: {', '.join(sorted(_ROLLOUT_KEYS))})",
            "rollout",
        )
    plan = dict(value)
    if "steps" in plan:
        plan["steps"] = list(plan["steps"])
    if "criteria" in plan and hasattr(plan["criteria"], "to_dict"):
        plan["criteria"] = plan["criteria"].to_dict()
    # The rollout service checks the values themselves when a retraining starts one; check
    # them now too, so a bad plan is refused at configuration rather than at promotion.
    from ..errors import RolloutInputError
    from ..rollouts.model import check_criteria, check_minutes, check_steps

    try:
        if "steps" in plan:
            check_steps(plan["steps"])
        if "step_minutes" in plan:
            check_minutes(plan["step_minutes"])
        if "criteria" in plan:
            check_criteria(plan["criteria"])
    except RolloutInputError as exc:
        raise RetrainingConfigError(f"rollout: {exc.message}", "rollout") from None
    if "replay" in plan and not isinstance(plan["replay"], bool):
        raise RetrainingConfigError("rollout: replay is true or false", "rollout")
    if "policy" in plan and (
        not isinstance(plan["policy"], str) or not 0 < len(plan["policy"]) <= 100
    ):
        raise RetrainingConfigError("rollout: policy is a name of 1-100 characters", "rollout")
    return plan
