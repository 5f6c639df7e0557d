"""Importing model versions from a real MLflow registry (a local SQLite tracking store):
lineage kept, skops accepted, pickles and other flavours refused and audited, the CLI."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

mlflow = pytest.importorskip(
    "mlflow", reason="needs the mlflow extra (pip install 'aevos[mlflow]')"
)

from sklearn.datasets import load_iris  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from aevos import Aevos  # noqa: E402
from aevos.cli import cli  # noqa: E402
from aevos.errors import ModelNotFoundError, UnsafeArtifactError  # noqa: E402
from aevos.models.mlflow_import import MlflowSource, import_mlflow, safe_uri  # noqa: E402

# MLflow's SQL store uses SQLAlchemy options that SQLAlchemy 2.1 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SADeprecationWarning")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An MLflow registry with iris logged three ways: skops, cloudpickle, and as a plain
    python_function model."""
    with warnings.catch_warnings():
        # mlflow.pyfunc warns at import about its own type hints.
        warnings.simplefilter("ignore")
        import mlflow.pyfunc
        import mlflow.sklearn

    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # Artifacts under the temporary directory, not ./mlruns of the working directory.
    mlflow.MlflowClient(uri, uri).create_experiment(
        "iris", artifact_location=(root / "artifacts").as_uri()
    )
    mlflow.set_experiment("iris")
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000, C=0.5).fit(X, y)
    # MLflow warns about what this fixture does on purpose (a cloudpickle, an untyped
    # python_function): the refusals are what is tested.
    with warnings.catch_warnings(), mlflow.start_run() as run:
        warnings.simplefilter("ignore")
        mlflow.log_param("C", 0.5)
        mlflow.log_metric("accuracy", float(model.score(X, y)))
        mlflow.log_metric("f1_macro", 0.97)
        mlflow.sklearn.log_model(
            model, name="model", serialization_format="skops", registered_model_name="iris"
        )
        mlflow.sklearn.log_model(
            model,
            name="pickled",
            serialization_format="cloudpickle",
            registered_model_name="iris-pickled",
        )

        class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
            def predict(self, context, model_input):  # type: ignore[no-untyped-def]
                return model_input * 2

        mlflow.pyfunc.log_model(
            name="custom", python_model=Doubler(), registered_model_name="custom"
        )
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.update_model_version("iris", "1", description="Iris species from flower sizes.")
    client.set_registered_model_alias("iris", "champion", "1")
    yield {"uri": uri, "run_id": run.info.run_id, "model": model, "X": X}


def test_a_skops_model_is_imported_with_its_lineage(app: Aevos, tracking: dict[str, Any]) -> None:
    version = import_mlflow(
        app.models,
        MlflowSource(tracking["uri"], "iris", "champion"),
        name="iris-species",
        created_by="alice",
        aliases=("champion",),
    )
    assert (version.ref, version.flavor) == ("iris-species@1", "sklearn")
    assert version.tags["mlflow.run_id"] == tracking["run_id"]
    assert version.tags["mlflow.model"] == "iris" and version.tags["mlflow.version"] == "1"
    assert version.tags["mlflow.source"].startswith("models:/")
    assert version.tags["mlflow.serialization_format"] == "skops"
    assert version.tags["mlflow.param.C"] == "0.5"
    assert version.tags["mlflow.tracking_uri"] == tracking["uri"]
    assert version.card.intended_use == "Iris species from flower sizes."
    assert version.card.metrics == {
        "accuracy": pytest.approx(tracking["model"].score(tracking["X"], load_iris().target)),
        "f1_macro": 0.97,
    }
    assert version.card.training_data == f"MLflow run {tracking['run_id']}"
    # It predicts as the model MLflow logged.
    X = tracking["X"]
    answer = app.gateway.predict("iris-species", X[100].tolist())
    assert answer.label == tracking["model"].predict(X[100:101])[0]
    # By version number, again: the same content, so the same aevos version.
    again = import_mlflow(app.models, MlflowSource(tracking["uri"], "iris", 1), name="iris-species")
    assert again.version == 1


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("iris-pickled", r"serialization_format='cloudpickle': a pickle can run arbitrary code"),
        ("custom", r"has the flavour\(s\) python_function: aevos imports scikit-learn models"),
    ],
)
def test_unsafe_flavours_are_refused_and_audited(
    app: Aevos, tracking: dict[str, Any], model: str, message: str
) -> None:
    with pytest.raises(UnsafeArtifactError, match=message):
        import_mlflow(app.models, MlflowSource(tracking["uri"], model, 1), created_by="alice")
    assert app.models.names() == []
    (refusal,) = app.audit.query("default", action="model.import_refused")
    assert refusal.actor == "alice" and refusal.data["reason"] == "unsafe_artifact"
    assert refusal.data["model"] == model


def test_missing_versions_and_credentials(app: Aevos, tracking: dict[str, Any]) -> None:
    with pytest.raises(ModelNotFoundError, match=r"MLflow model 'iris' version 9 at .* cannot"):
        import_mlflow(app.models, MlflowSource(tracking["uri"], "iris", 9))
    with pytest.raises(ModelNotFoundError, match="alias 'nope'"):
        import_mlflow(app.models, MlflowSource(tracking["uri"], "iris", "nope"))
    assert safe_uri("https://bob:s3cret@mlflow.example:5000/x") == "https://mlflow.example:5000/x"


def test_the_cli_imports_and_refuses(tracking: dict[str, Any], tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'aevos.db'}"
    runner = CliRunner()
    ok = runner.invoke(
        cli,
        [
            "--database-url",
            db,
            "models",
            "import-mlflow",
            "iris@champion",
            "--tracking-uri",
            tracking["uri"],
            "--as",
            "flowers",
            "--alias",
            "candidate",
            "--json",
        ],
    )
    assert ok.exit_code == 0, ok.output
    shown = json.loads(ok.stdout)
    assert shown["ref"] == "flowers@1" and shown["tags"]["mlflow.run_id"] == tracking["run_id"]
    refused = runner.invoke(
        cli,
        [
            "--database-url",
            db,
            "models",
            "import-mlflow",
            "iris-pickled@1",
            "--tracking-uri",
            tracking["uri"],
        ],
    )
    assert refused.exit_code != 0
    assert "cloudpickle" in refused.output and "unsafe_artifact" in refused.output
