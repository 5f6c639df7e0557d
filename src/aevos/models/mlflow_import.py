"""Import a model version from an MLflow registry, keeping its lineage, refusing pickles.

:func:`import_mlflow` reads one version of a registered MLflow model (by number or alias)
from a tracking/registry URI (a local SQLite store, a file store or a tracking server),
downloads its artifacts, and registers them as the next version of an aevos model:

- a scikit-learn model saved with ``serialization_format="skops"`` (MLflow's default
  outside Databricks since 3.x) becomes an ``sklearn`` version; its skops file is checked
  with :func:`aevos.models.artifact.load_sklearn` first, so a model needing types skops does
  not trust by default is refused here, not at its first call;
- every other flavour is refused with :class:`~aevos.errors.UnsafeArtifactError` naming it:
  scikit-learn saved with ``pickle`` or ``cloudpickle``, ``python_function`` models (their
  loader is code: cloudpickle or a module of the model's), and flavours aevos has no
  loader for (``onnx``, ``pytorch``, ...). Each refusal is audited as
  ``model.import_refused`` with its reason.

Lineage: the aevos version's tags hold the MLflow model name, version, run id, model id,
source URI, experiment id and serialization format (``mlflow.*``), the run's parameters
(``mlflow.param.*``), and its card holds the run's metrics and the version's description.
The tracking URI is recorded without any user name or password it carries.

MLflow is an optional dependency (the ``mlflow`` extra: mlflow-skinny and pandas), imported
only when an import is made.
"""

from __future__ import annotations

import importlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from ..audit import AuditEvent
from ..errors import (
    AevosError,
    DefinitionError,
    InvalidArtifactError,
    ModelNotFoundError,
    UnsafeArtifactError,
)
from ..identity import check_tenant
from .artifact import is_pickle, is_skops, load_sklearn
from .registry import check_alias, check_name
from .types import ModelCard, ModelVersion

if TYPE_CHECKING:
    from .registry import ModelRegistry

__all__ = ["MlflowSource", "import_mlflow"]

log = logging.getLogger("aevos.models")
_MAX_TAG = 500
_MAX_PARAMS = 50


@dataclass(frozen=True)
class MlflowSource:
    """Which MLflow model version to import: ``name`` and ``ref`` (a version number or an
    alias) in the registry at ``registry_uri`` (default: ``tracking_uri``)."""

    tracking_uri: str
    name: str
    ref: str | int
    registry_uri: str | None = None


def _mlflow() -> Any:
    try:
        return importlib.import_module("mlflow.tracking")
    except ImportError:
        raise DefinitionError(
            "importing from MLflow needs the mlflow extra: pip install 'aevos[mlflow]'"
        ) from None


def safe_uri(uri: str) -> str:
    """``uri`` without the user name and password it may carry."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def import_mlflow(
    registry: ModelRegistry,
    source: MlflowSource,
    *,
    name: str | None = None,
    tenant: str = "default",
    created_by: str = "system",
    aliases: tuple[str, ...] = (),
) -> ModelVersion:
    """Register MLflow's ``source.name`` version ``source.ref`` as the next version of
    ``name`` (default: the same name) and point ``aliases`` at it. Raises
    :class:`~aevos.errors.UnsafeArtifactError` for a flavour aevos will not load,
    :class:`~aevos.errors.ModelNotFoundError` when MLflow has no such version."""
    target = check_name(name or source.name)
    check_tenant(tenant)
    for alias in aliases:
        check_alias(alias)
    tracking = _mlflow()
    where = (
        f"MLflow model {source.name!r} {_ref_text(source.ref)} at {safe_uri(source.tracking_uri)}"
    )
    client = tracking.MlflowClient(
        tracking_uri=source.tracking_uri, registry_uri=source.registry_uri or source.tracking_uri
    )
    try:
        if isinstance(source.ref, int) or str(source.ref).isdigit():
            mv = client.get_model_version(source.name, str(source.ref))
        else:
            mv = client.get_model_version_by_alias(source.name, str(source.ref))
    except Exception as exc:  # MlflowException and the store's own errors
        raise ModelNotFoundError(
            f"{where} cannot be read: {_mlflow_error(exc, source.tracking_uri)}"
        ) from None
    try:
        with tempfile.TemporaryDirectory(prefix="aevos-mlflow-") as tmp:
            try:
                local = Path(_download(mv.source, tmp, source.tracking_uri))
            except Exception as exc:
                raise InvalidArtifactError(
                    f"{where}: its artifacts cannot be downloaded: "
                    f"{_mlflow_error(exc, source.tracking_uri)}"
                ) from None
            artifact, flavor_info = _sklearn_artifact(local, where)
        run = client.get_run(mv.run_id) if mv.run_id else None
    except AevosError as exc:
        if registry.audit is not None:
            registry.audit.append(
                AuditEvent(
                    action="model.import_refused",
                    actor=created_by,
                    tenant=tenant,
                    subject=f"model:{target}",
                    data={
                        "source": "mlflow",
                        "model": source.name,
                        "ref": str(source.ref),
                        "reason": exc.code,
                        "message": exc.message[:500],
                    },
                )
            )
        raise
    metrics = {k: float(v) for k, v in (run.data.metrics if run else {}).items()}
    tags = {
        "mlflow.model": source.name,
        "mlflow.version": str(mv.version),
        "mlflow.run_id": mv.run_id or "",
        "mlflow.source": mv.source,
        "mlflow.tracking_uri": safe_uri(source.tracking_uri),
        "mlflow.flavor": "sklearn",
        "mlflow.serialization_format": str(flavor_info.get("serialization_format")),
        "mlflow.sklearn_version": str(flavor_info.get("sklearn_version")),
    }
    if getattr(mv, "model_id", None):
        tags["mlflow.model_id"] = str(mv.model_id)
    if run is not None:
        tags["mlflow.experiment_id"] = str(run.info.experiment_id)
        for key, value in sorted(run.data.params.items())[:_MAX_PARAMS]:
            tags[f"mlflow.param.{key}"[:100]] = str(value)
    tags = {k: v[:_MAX_TAG] for k, v in tags.items()}
    card = ModelCard(
        intended_use=mv.description or "",
        metrics=metrics,
        training_data=f"MLflow run {mv.run_id}" if mv.run_id else "",
    )
    version = registry.register(
        target,
        artifact,
        flavor="sklearn",
        card=card,
        tags=tags,
        tenant=tenant,
        created_by=created_by,
        aliases=aliases,
    )
    log.info("imported %s as %s", where, version.ref)
    return version


def _download(source: str, dst: str, tracking_uri: str) -> str:
    artifacts = importlib.import_module("mlflow.artifacts")
    return str(
        artifacts.download_artifacts(artifact_uri=source, dst_path=dst, tracking_uri=tracking_uri)
    )


def _sklearn_artifact(root: Path, where: str) -> tuple[bytes, dict[str, Any]]:
    """The skops bytes of the MLflow model under ``root``, or a refusal naming its flavour."""
    try:
        mlmodel = yaml.safe_load((root / "MLmodel").read_text())
        flavors = mlmodel["flavors"]
        if not isinstance(flavors, dict):
            raise TypeError("flavors")
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise InvalidArtifactError(f"{where} has no readable MLmodel file") from None
    sklearn = flavors.get("sklearn")
    if not isinstance(sklearn, dict):
        named = ", ".join(sorted(str(f) for f in flavors)) or "none"
        raise UnsafeArtifactError(
            f"{where} has the flavour(s) {named}: aevos imports scikit-learn models saved "
            "with serialization_format='skops' only (other flavours either run code or "
            "pickles while they load, or have no aevos loader)"
        )
    fmt = sklearn.get("serialization_format")
    if fmt != "skops":
        raise UnsafeArtifactError(
            f"{where} is a scikit-learn model saved with serialization_format={fmt!r}: a "
            "pickle can run arbitrary code while it loads, so aevos does not import it. "
            "Log it again with mlflow.sklearn.log_model(..., serialization_format='skops')"
        )
    name = str(sklearn.get("pickled_model") or "model.skops")
    path = (root / name).resolve()
    if root.resolve() not in path.parents:
        raise InvalidArtifactError(f"{where} names a model file outside its artifacts")
    try:
        data = path.read_bytes()
    except OSError:
        raise InvalidArtifactError(f"{where} lacks its model file {name!r}") from None
    if is_pickle(data) or not is_skops(data):
        raise UnsafeArtifactError(
            f"{where} claims skops but its model file is not a skops archive; refused"
        )
    trusted = sklearn.get("skops_trusted_types") or []
    if trusted:
        raise UnsafeArtifactError(
            f"{where} was logged trusting {len(trusted)} type(s) skops does not trust by "
            f"default ({', '.join(str(t) for t in trusted)[:200]}); aevos imports only "
            "models that load with skops's defaults"
        )
    load_sklearn(data)  # refuses, by name, any type skops does not trust by default
    return data, sklearn


def _ref_text(ref: str | int) -> str:
    return f"version {ref}" if isinstance(ref, int) or str(ref).isdigit() else f"alias {ref!r}"


def _mlflow_error(exc: Exception, uri: str) -> str:
    """MLflow's error code and first line, without the credentials a URI may carry."""
    code = getattr(exc, "error_code", None)
    text = str(exc).replace(uri, safe_uri(uri))
    text = text.splitlines()[0][:200] if text else type(exc).__name__
    return f"{code}: {text}" if isinstance(code, str) else text
