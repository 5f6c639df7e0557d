"""``aevos models``: register, inspect, alias, roll back and verify model versions; list
promotion approvals.

Like ``aevos tokens``, it talks to the database directly, so changes are audited as
``cli:<user>``. ``NAME@REF`` names a version by number, alias or ``latest``; a bare NAME
means ``latest`` for ``show`` and every version for ``verify``.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from ..errors import AevosError, DefinitionError
from ..models.artifact import is_pickle
from ..models.promotion import DEFAULT_POLICY, PromotionGate, is_gated
from ..models.registry import ModelRegistry, card_from_dict, card_to_dict, split_ref
from ..models.types import ModelVersion
from ..policy import PolicySet
from ..records.approval import ApprovalStatus
from .common import (
    CliError,
    _app,
    _emit_json,
    _json_option,
    _print_error,
    _print_wide,
    _reports_errors,
    _when,
    err,
    out,
)

models_cli = typer.Typer(
    help="Register, inspect, alias, roll back and verify model versions.", no_args_is_help=True
)

TenantOption = Annotated[str, typer.Option("--tenant", help="The tenant that owns the model.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in this environment (some containers)
        return "cli:unknown"


@contextmanager
def _registry(ctx: typer.Context) -> Iterator[ModelRegistry]:
    with _app(ctx) as app:
        yield app.models


def _ref(text: str, default: int | str) -> tuple[str, int | str]:
    try:
        return split_ref(text, default)
    except DefinitionError as exc:
        raise CliError("bad_ref", exc.message) from None


def _version_dict(version: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    return {
        "tenant": version.tenant,
        "name": version.name,
        "version": version.version,
        "ref": version.ref,
        "digest": version.digest,
        "flavor": version.flavor,
        "config": dict(version.config),
        "card": card_to_dict(version.card),
        "signature": None if version.signature is None else dict(version.signature),
        "tags": dict(version.tags),
        "aliases": aliases,
        "created_by": version.created_by,
        "created_at": version.created_at,
    }


def _pointing(aliases: dict[str, int], version: int) -> list[str]:
    return sorted(alias for alias, number in aliases.items() if number == version)


@models_cli.command("list")
@_reports_errors
def models_list(
    ctx: typer.Context, tenant: TenantOption = "default", as_json: JsonFlag = False
) -> None:
    """List the tenant's models with their latest version and aliases."""
    with _registry(ctx) as registry:
        rows = []
        for name in registry.names(tenant=tenant):
            versions = registry.versions(name, tenant=tenant)
            rows.append((name, versions[-1], registry.aliases(name, tenant=tenant), len(versions)))
    if as_json:
        for name, latest, aliases, count in rows:
            _emit_json(
                {"name": name, "versions": count, "latest": latest.version, "aliases": aliases}
            )
        return
    table = Table(title=f"{len(rows)} model(s) of tenant {tenant}", title_justify="left")
    table.box = box.SIMPLE
    for column in ("name", "versions", "latest", "flavor", "aliases", "updated"):
        table.add_column(column)
    for name, latest, aliases, count in rows:
        pointers = ", ".join(f"{a}->{n}" for a, n in sorted(aliases.items()))
        row = (name, str(count), str(latest.version), latest.flavor, pointers or "-")
        table.add_row(*row, _when(latest.created_at))
    _print_wide(table)


@models_cli.command("versions")
@_reports_errors
def models_versions(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """List every version of NAME, oldest first."""
    with _registry(ctx) as registry:
        versions = registry.versions(name, tenant=tenant)
        aliases = registry.aliases(name, tenant=tenant)
    if as_json:
        for version in versions:
            _emit_json(_version_dict(version, _pointing(aliases, version.version)))
        return
    table = Table(title=f"{len(versions)} version(s) of {name}", title_justify="left")
    table.box = box.SIMPLE
    for column in ("version", "sha256", "flavor", "aliases", "tags", "created", "by"):
        table.add_column(column)
    for version in versions:
        table.add_row(
            str(version.version),
            version.digest[:12],
            version.flavor,
            ", ".join(_pointing(aliases, version.version)) or "-",
            ", ".join(f"{k}={v}" for k, v in sorted(version.tags.items())) or "-",
            _when(version.created_at),
            version.created_by,
        )
    _print_wide(table)


@models_cli.command("show")
@_reports_errors
def models_show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="NAME[@REF]", help="REF: version, alias, latest.")],
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Show a version: digest, flavor, card, tags and the aliases pointing at it."""
    name, which = _ref(ref, "latest")
    with _registry(ctx) as registry:
        version = registry.get(name, which, tenant=tenant)
        aliases = registry.alias_details(name, tenant=tenant)
    pointing = [a.alias for a in aliases if a.version == version.version]
    data = _version_dict(version, pointing)
    if as_json:
        _emit_json(data, indent=2)
        return
    out.print(f"{version.ref}  (tenant {version.tenant})", markup=False)
    for key in ("digest", "flavor", "created_by"):
        out.print(f"  {key}: {data[key]}", markup=False)
    out.print(f"  created_at: {_when(version.created_at)}", markup=False)
    for key in ("config", "signature", "tags"):
        out.print(f"  {key}: {json.dumps(data[key], ensure_ascii=False)}", markup=False)
    out.print("  card:", markup=False)
    for key, value in data["card"].items():
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        out.print(f"    {key}: {shown or '-'}", markup=False)
    out.print("  aliases:", markup=False)
    for alias in aliases:
        mark = "*" if alias.version == version.version else " "
        before = "-" if alias.previous_version is None else str(alias.previous_version)
        out.print(
            f"   {mark}{alias.alias} -> {alias.version} (previous {before}; moved by "
            f"{alias.updated_by} at {_when(alias.updated_at)})",
            markup=False,
        )
    if not aliases:
        out.print("    -", markup=False)


@models_cli.command("register")
@_reports_errors
def models_register(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    file: Annotated[Path, typer.Argument(help="The artifact file.", dir_okay=False)],
    flavor: Annotated[str, typer.Option("--flavor", help="How to load it: sklearn, rules, ...")],
    config: Annotated[
        str | None, typer.Option("--config", help="Adapter config, a JSON object.")
    ] = None,
    card: Annotated[
        str | None,
        typer.Option(
            "--card",
            help="Model card, a JSON object: intended_use, owner, metrics, training_data, "
            "training_run_id, limitations.",
        ),
    ] = None,
    signature: Annotated[
        str | None, typer.Option("--signature", help="Input signature, a JSON object.")
    ] = None,
    tags: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE (repeatable).")] = None,
    aliases: Annotated[
        list[str] | None, typer.Option("--alias", help="Point this alias at it (repeatable).")
    ] = None,
    tenant: TenantOption = "default",
) -> None:
    """Register FILE as the next version of NAME (or find the identical existing one)."""
    try:
        artifact = file.read_bytes()
    except OSError as exc:
        raise CliError("bad_file", f"cannot read {file}: {exc.strerror or exc}") from None
    config_value = _json_option("--config", config, dict)
    signature_value = None if signature is None else _json_option("--signature", signature, dict)
    try:
        card_value = card_from_dict(_json_option("--card", card, dict))
    except DefinitionError as exc:
        raise CliError("bad_json", f"--card: {exc.message}") from None
    for alias in aliases or ():
        _check_ungated(name, alias)
    tag_values: dict[str, str] = {}
    for item in tags or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError("bad_option", f"--tag {item!r} must look like KEY=VALUE")
        tag_values[key] = value
    if is_pickle(artifact):
        err.print(
            f"warning: {file.name} is a pickle: it will load only when explicitly trusted "
            "(re-save scikit-learn models with aevos.models.artifact.dump_sklearn)",
            markup=False,
        )
    with _registry(ctx) as registry:
        before = {v.version for v in _versions_or_none(registry, name, tenant)}
        version = registry.register(
            name,
            artifact,
            flavor=flavor,
            config=config_value,
            card=card_value,
            signature=signature_value,
            tags=tag_values,
            tenant=tenant,
            created_by=_actor(),
            aliases=aliases or (),
        )
    known = " (already registered: same artifact, flavor and config)"
    out.print(
        f"{version.ref} sha256:{version.digest}{known if version.version in before else ''}",
        markup=False,
    )


@models_cli.command("import-mlflow")
@_reports_errors
def models_import_mlflow(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The MLflow model: NAME@VERSION or NAME@ALIAS.")],
    tracking_uri: Annotated[
        str,
        typer.Option(
            "--tracking-uri",
            envvar="MLFLOW_TRACKING_URI",
            help="MLflow tracking URI (e.g. sqlite:///mlflow.db, http://host:5000).",
        ),
    ],
    registry_uri: Annotated[
        str | None,
        typer.Option("--registry-uri", help="MLflow registry URI (default: the tracking URI)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--as", help="The aevos model name (default: MLflow's).")
    ] = None,
    aliases: Annotated[
        list[str] | None, typer.Option("--alias", help="Point this alias at it (repeatable).")
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Import an MLflow model version (scikit-learn saved as skops) with its lineage."""
    from ..models.mlflow_import import MlflowSource, import_mlflow

    model, sep, ref = source.rpartition("@")
    if not sep or not model or not ref:
        raise CliError("bad_ref", f"{source!r} must look like NAME@VERSION or NAME@ALIAS")
    for alias in aliases or ():
        _check_ungated(name or model, alias)
    with _registry(ctx) as registry:
        version = import_mlflow(
            registry,
            MlflowSource(tracking_uri, model, ref, registry_uri),
            name=name,
            tenant=tenant,
            created_by=_actor(),
            aliases=tuple(aliases or ()),
        )
        pointing = _pointing(registry.aliases(version.name, tenant=tenant), version.version)
    if as_json:
        _emit_json(_version_dict(version, pointing))
        return
    out.print(
        f"{version.ref} sha256:{version.digest} from MLflow run "
        f"{version.tags.get('mlflow.run_id', '?')}",
        markup=False,
    )


def _versions_or_none(registry: ModelRegistry, name: str, tenant: str) -> list[ModelVersion]:
    try:
        return registry.versions(name, tenant=tenant)
    except AevosError:
        return []


@models_cli.command("alias")
@_reports_errors
def models_alias(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias, e.g. champion or challenger.")],
    version: Annotated[int, typer.Argument(help="The version it should name.", min=1)],
    tenant: TenantOption = "default",
) -> None:
    """Point ALIAS of NAME at VERSION (its old target becomes its previous version).

    A gated alias (champion) moves only by ``aevos models promote``."""
    _check_ungated(name, alias)
    with _registry(ctx) as registry:
        before = registry.aliases(name, tenant=tenant).get(alias)
        target = registry.set_alias(name, alias, version, tenant=tenant, by=_actor())
    if before == target.version:
        out.print(f"{name}: {alias} already -> {target.version}", markup=False)
    else:
        out.print(f"{name}: {alias} {before or '-'} -> {target.version}", markup=False)


@models_cli.command("rollback")
@_reports_errors
def models_rollback(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move back.")] = "champion",
    tenant: TenantOption = "default",
) -> None:
    """Move ALIAS of NAME back to its previous version (instant: no artifact is touched)."""
    with _registry(ctx) as registry:
        before = registry.aliases(name, tenant=tenant).get(alias)
        target = registry.rollback(name, alias, tenant=tenant, by=_actor())
    out.print(f"{name}: {alias} rolled back {before} -> {target.version}", markup=False)


@models_cli.command("promote")
@_reports_errors
def models_promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="The candidate version.", min=1)],
    evidence: Annotated[
        str,
        typer.Option(
            "--evidence",
            help="What the policy judges, a JSON object: the candidate's and the champion's "
            'metrics, e.g. \'{"candidate": {"accuracy": 0.93}, "champion": {...}}\'.',
        ),
    ],
    alias: Annotated[str, typer.Option("--alias", help="The alias to move.")] = "champion",
    policy: Annotated[str, typer.Option("--policy", help="The promotion policy.")] = DEFAULT_POLICY,
    policies: Annotated[
        Path | None,
        typer.Option(
            "--policies", help="Policy directory (default: the app's, or AEVOS_POLICY_DIR)."
        ),
    ] = None,
    tenant: TenantOption = "default",
) -> None:
    """Promote VERSION of NAME through the promotion gate, as the API and the console do.

    The policy judges the evidence (audited either way): ``allow`` moves the alias now;
    ``deny`` refuses; ``approve`` needs a second person, who approves it with their own
    token in the console or over the API (``POST /v1/models/NAME/promote``), where four
    eyes know who asks and who approves."""
    facts = _json_option("--evidence", evidence, dict)
    with _app(ctx) as app:
        gate = app.promotions
        if policies is not None:
            loaded = PolicySet.load(policies)
            gate = PromotionGate(app.models, lambda: loaded, app.audit)
        judged = gate.judge(
            name, version, evidence=facts, tenant=tenant, actor=_actor(), alias=alias, policy=policy
        )
        decision = judged.decision
        verdict = f"policy {decision.policy}@{decision.version}: {decision.result}"
        if decision.reason:
            verdict += f" ({decision.reason})"
        if decision.result == "deny":
            raise CliError("promotion_denied", f"{name}@{version} is not promoted: {verdict}")
        if decision.result != "allow":
            raise CliError(
                "approval_required",
                f"{name}@{version} needs a second person's approval ({verdict}): ask for it "
                f"over the API or in the console (POST /v1/models/{name}/promote)",
            )
        gate.promote(name, version, alias=alias, tenant=tenant, by=_actor())
    before = judged.alias_was
    out.print(f"{name}: {alias} {before or '-'} -> {version} ({verdict})", markup=False)


def _check_ungated(name: str, alias: str) -> None:
    if is_gated(alias):
        raise CliError(
            "gated_alias",
            f"alias {alias!r} of {name} moves only through the promotion gate: "
            f"aevos models promote {name} VERSION --evidence '{{...}}'",
        )


@models_cli.command("approvals")
@_reports_errors
def models_approvals(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="Only this model's.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="PENDING, APPROVED, REJECTED, ...")
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """List promotions waiting for (or given) a second person's approval, newest first.

    People approve with their own token, in the console or over the API (four eyes needs
    to know who approves); this is the operator's view."""
    try:
        wanted = None if status is None else ApprovalStatus(status.upper())
    except ValueError:
        choices = ", ".join(s.value for s in ApprovalStatus)
        raise DefinitionError(f"unknown approval status {status!r}; one of {choices}") from None
    with _app(ctx) as app:
        found = app.approvals.list(tenant=tenant, status=wanted, model=name)
    if as_json:
        for a in found:
            _emit_json(
                {
                    "approval_id": a.approval_id,
                    "model": a.model,
                    "version": a.version,
                    "alias": a.alias,
                    "alias_was": a.alias_was,
                    "status": a.status.value,
                    "requested_by": a.requested_by,
                    "requested_at": a.requested_at,
                    "expires_at": a.expires_at,
                    "decided_by": a.decided_by,
                    "decided_at": a.decided_at,
                    "policy_reason": a.decision.get("reason"),
                }
            )
        return
    table = Table(title=f"{len(found)} approval(s) of tenant {tenant}", title_justify="left")
    table.box = box.SIMPLE
    for column in ("id", "promotion", "status", "asked by", "asked", "decided by"):
        table.add_column(column)
    for a in found:
        promotion = f"{a.model}@{a.version} -> {a.alias} (was {a.alias_was or '-'})"
        table.add_row(  # actors hold token names, free text: never read as Rich markup
            a.approval_id,
            Text(promotion),
            a.status.value,
            Text(a.requested_by),
            _when(a.requested_at),
            Text(a.decided_by or "-"),
        )
    _print_wide(table)


@models_cli.command("verify")
@_reports_errors
def models_verify(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(metavar="NAME[@REF]", help="One version, or every version of NAME.")
    ],
    tenant: TenantOption = "default",
) -> None:
    """Re-hash stored artifacts (and a composite's parts) against their registered sha256;
    exit 2 if any differs."""
    name, which = _ref(ref, "")
    failures = 0
    with _registry(ctx) as registry:
        if which == "":
            versions = registry.versions(name, tenant=tenant)
        else:
            versions = [registry.get(name, which, tenant=tenant)]
        for version in versions:
            try:
                checked = registry.verify(version)
            except AevosError as exc:
                failures += 1
                _print_error(exc)
                continue
            parts = f" and {len(checked) - 1} part(s)" if len(checked) > 1 else ""
            out.print(f"ok {version.ref} sha256:{version.digest}{parts}", markup=False)
    if failures:
        raise typer.Exit(2)


@models_cli.command("lineage")
@_reports_errors
def models_lineage(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="NAME@VERSION", help="e.g. intent@3")],
    tenant: TenantOption = "default",
) -> None:
    """Print a version's lineage as JSON: card, training run, aliases and their history."""
    name, which = _ref(ref, "latest")
    with _registry(ctx) as registry:
        number = (
            which if isinstance(which, int) else registry.get(name, which, tenant=tenant).version
        )
        _emit_json(registry.lineage(name, number, tenant=tenant), indent=2)


@models_cli.command("certification")
@_reports_errors
def models_certification(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The model.")],
    version: Annotated[int, typer.Argument(metavar="VERSION", min=1, help="Its version.")],
    tenant: TenantOption = "default",
    history: Annotated[
        bool, typer.Option("--history", help="Every certification of the version, newest first.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show a version's certified automation threshold (the one in force, or --history)."""
    with _app(ctx) as app:
        if history:
            records = app.certifications.history(name, version=version, tenant=tenant)
        else:
            latest = app.certifications.latest(name, version, tenant=tenant)
            records = [] if latest is None else [latest]
    if as_json:
        if history:
            _emit_json([r.to_json() for r in records], indent=2)
        else:
            _emit_json(records[0].to_json() if records else None, indent=2)
        return
    if not records:
        out.print(f"{name}@{version}: not certified - nothing automated", markup=False)
        return
    for record in records:
        if record.certified:
            head = f"threshold {record.threshold:.3f}"
        else:
            head = "not certified - nothing automated"
        out.print(f"{record.version_ref}: {head}  (certification {record.id})", markup=False)
        p_value = "-" if record.p_value is None else f"{record.p_value:.3g}"
        out.print(
            f"  precision >= {record.target} with risk {record.delta} ({record.method}); "
            f"{record.n} labelled cases, {record.n_above} at or above the threshold, "
            f"{record.errors} error(s) among them, p = {p_value}",
            markup=False,
            soft_wrap=True,  # one line, whatever the terminal's width: scripts grep it
        )
        if record.reason:
            out.print(f"  reason: {record.reason}", markup=False)
        out.print(f"  dataset: {record.dataset or '-'}", markup=False)
        out.print(f"  by {record.created_by} at {_when(record.created_at)}", markup=False)


@models_cli.command("retrain")
@_reports_errors
def models_retrain(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The model.")],
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Enqueue a retraining of NAME with its configuration in force; prints its run id.

    A worker trains it (``aevos worker``); follow it with ``aevos models retraining NAME``.
    """
    with _app(ctx) as app:
        handle = app.retraining.start(name, tenant=tenant, actor=_actor())
        run = app.retraining.run(handle.run_id, tenant=tenant)
    if as_json:
        _emit_json(run.to_json(), indent=2)
        return
    out.print(run.run_id, markup=False)


@models_cli.command("retrain-config")
@_reports_errors
def models_retrain_config(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The model.")],
    recipe: Annotated[str, typer.Option("--recipe", help="The recipe that trains it.")],
    params: Annotated[
        str | None, typer.Option("--params", help="The recipe's parameters, a JSON object.")
    ] = None,
    every_labels: Annotated[
        int | None, typer.Option("--every-labels", min=1, help="Retrain every N new labels.")
    ] = None,
    interval: Annotated[
        float | None, typer.Option("--interval", help="Retrain every this many seconds.")
    ] = None,
    holdout: Annotated[float, typer.Option("--holdout", help="Newest fraction held out.")] = 0.2,
    min_holdout: Annotated[int, typer.Option("--min-holdout", help="Fewest held out.")] = 20,
    target: Annotated[float, typer.Option("--target", help="Precision to certify.")] = 0.97,
    delta: Annotated[float, typer.Option("--delta", help="Risk of certification.")] = 0.1,
    min_count: Annotated[
        int | None, typer.Option("--min-count", help="Cases where certification starts.")
    ] = None,
    auto_promote: Annotated[
        bool,
        typer.Option(
            "--auto-promote/--no-auto-promote", help="Ask the promotion policy to promote."
        ),
    ] = True,
    policy: Annotated[
        str, typer.Option("--policy", help="The promotion policy.")
    ] = "retraining-promotion",
    app_ref: Annotated[
        str | None,
        typer.Option("--app", help="module:attribute of the Aevos app whose recipes to use."),
    ] = None,
    tenant: TenantOption = "default",
    as_json: JsonFlag = False,
) -> None:
    """Set how NAME is retrained (a new configuration version, audited)."""
    with _app(ctx, app_ref) as app:
        config = app.retraining.configure(
            name,
            recipe=recipe,
            params=_json_option("--params", params, dict),
            every_labels=every_labels,
            interval=interval,
            holdout=holdout,
            min_holdout=min_holdout,
            target=target,
            delta=delta,
            min_count=min_count,
            auto_promote=auto_promote,
            policy=policy,
            tenant=tenant,
            actor=_actor(),
        )
    if as_json:
        _emit_json(config.to_json(), indent=2)
        return
    out.print(f"{name}: retraining configuration version {config.version}", markup=False)


@models_cli.command("retraining")
@_reports_errors
def models_retraining(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The model.")],
    tenant: TenantOption = "default",
    limit: Annotated[int, typer.Option("--limit", min=1, max=200)] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Show how NAME is retrained and its latest retrainings, newest first."""
    with _app(ctx) as app:
        config = app.retraining.config(name, tenant=tenant)
        runs = app.retraining.runs(name, tenant=tenant, limit=limit)
    if as_json:
        _emit_json({"config": config.to_json(), "runs": [r.to_json() for r in runs]}, indent=2)
        return
    triggers = [f"every {config.every_labels} labels"] if config.every_labels else []
    if config.interval:
        triggers.append(f"every {config.interval:g} s")
    out.print(
        f"{name}: {config.recipe} (configuration {config.version}); "
        f"triggers: {', '.join(triggers) or 'by hand only'}",
        markup=False,
        soft_wrap=True,
    )
    for run in runs:
        outcome = (
            run.reason if run.reason else (f"{name}@{run.candidate}" if run.candidate else "-")
        )
        out.print(
            f"{run.run_id}  {run.status.value:<9} {run.trigger.value:<8} "
            f"{_when(run.started_at)}  {outcome}",
            markup=False,
            soft_wrap=True,
        )
