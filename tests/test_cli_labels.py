"""``aevos labels`` and ``aevos datasets``: the operator's view, with clear errors (both backends)."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from aevos import Aevos, Field, WorkflowContext
from aevos.cli import cli

FORM = [Field.choice("verdict", ["approve", "deny"])]


@pytest.fixture
def cases(database_url: str) -> Iterator[tuple[Aevos, list[str]]]:
    """Two automated claim decisions, QA-checked ("approve", then "deny"): their case ids."""
    app = Aevos(database_url)
    table = {
        "input": {"amount": "number"},
        "table": [{"id": "small", "when": {"amount": {"lt": 1000}}, "label": "approve"}],
        "default": {"label": "deny", "confidence": 0.5},
    }
    app.models.register("claims", json.dumps(table).encode(), flavor="rules", aliases=["champion"])

    @app.workflow(name="claim")
    def claim(ctx: WorkflowContext, amount: float) -> dict[str, Any]:
        prediction = ctx.predict("claims", {"amount": amount})
        task_id = ctx.qa_sample(prediction, share=1.0, form=FORM)
        return {"qa": task_id, "call_id": prediction.call_id}

    ids = []
    for amount, verdict in ((10.0, "approve"), (5000.0, "deny")):
        out = claim.run(amount)
        app.tasks.submit(out["qa"], {"verdict": verdict}, actor="reviewer:r#t1")
        ids.append(str(out["call_id"]))
    yield app, ids
    app.close()


@pytest.fixture
def aevos(database_url: str) -> Callable[..., Result]:
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli, ["--database-url", database_url, *args])

    return invoke


def test_labels_add_list_and_conflicts(
    aevos: Callable[..., Result], cases: tuple[Aevos, list[str]]
) -> None:
    app, (first, _second) = cases
    added = aevos("labels", "add", first, "deny")
    assert added.exit_code == 0, added.output
    assert "ground_truth" in added.output
    listed = aevos("labels", "list", "--case", first, "--json")
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["source"], r["label"]) for r in rows] == [
        ("qa", "approve"),
        ("ground_truth", "deny"),
    ]
    assert rows[1]["actor"].startswith("cli:")
    (conflict,) = [
        json.loads(x) for x in aevos("labels", "conflicts", "--json").output.split("\n") if x
    ]
    assert conflict["winner_id"] == rows[1]["id"] and conflict["other"] == "approve"
    assert "conflict" in aevos("labels", "conflicts").output
    assert app.labels.effective(first) is not None


def test_labels_bad_input_is_a_clear_error(
    aevos: Callable[..., Result], cases: tuple[Aevos, list[str]], tmp_path: Path
) -> None:
    app, (first, _) = cases
    unknown = aevos("labels", "add", "nope", "deny")
    assert unknown.exit_code == 2 and "[case_not_found]" in unknown.output
    source = aevos("labels", "add", first, "deny", "--source", "oracle")
    assert source.exit_code == 2 and "[invalid_label]" in source.output
    bad_json = aevos("labels", "add", first, "{nope", "--json")
    assert bad_json.exit_code == 2 and "[bad_json]" in bad_json.output
    headerless = tmp_path / "bad.csv"
    headerless.write_text("a,b\n1,2\n")
    assert "[bad_file]" in aevos("labels", "import", str(headerless)).output
    assert "[bad_file]" in aevos("labels", "import", str(tmp_path / "missing.csv")).output
    actions = [r.action for r in app.audit.query(tenant="default")]
    assert actions.count("label.rejected") == 2


def test_labels_import_from_a_csv_file(
    aevos: Callable[..., Result], cases: tuple[Aevos, list[str]], tmp_path: Path
) -> None:
    app, (first, second) = cases
    good = tmp_path / "outcomes.csv"
    good.write_text(f"case_id,label\n{first},approve\n{second},approve\n")
    imported = aevos("labels", "import", str(good))
    assert imported.exit_code == 0 and "2 label(s) recorded" in imported.output
    assert len(app.labels.conflicts()) == 1  # the second case's reviewer said deny
    bad = tmp_path / "bad.csv"
    bad.write_text(f"case_id,label\n{first},deny\nnope,deny\n")
    refused = aevos("labels", "import", str(bad))
    assert refused.exit_code == 2 and "[case_not_found]" in refused.output
    assert "labels[1]" in refused.output
    assert len(app.labels.list()) == 4  # the refused batch wrote nothing


def test_datasets_snapshot_list_show_export(
    aevos: Callable[..., Result],
    cases: tuple[Aevos, list[str]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _app, (first, second) = cases
    made = aevos("datasets", "snapshot", "claims")
    assert made.exit_code == 0, made.output
    info = json.loads(made.output)
    digest = info["digest"]
    assert info["rows"] == 2 and info["sources"] == {"qa": 2}
    assert json.loads(aevos("datasets", "snapshot", "claims").output)["digest"] == digest
    assert digest in aevos("datasets", "list").output
    assert json.loads(aevos("datasets", "show", digest).output) == info

    exported = aevos("datasets", "export", digest)
    assert exported.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [(r["case_id"], r["label"]) for r in rows] == [(first, "approve"), (second, "deny")]
    target = tmp_path / "out.csv"
    assert aevos("datasets", "export", digest, "-o", str(target)).exit_code == 0
    assert target.read_text() == exported.stdout

    missing = aevos("datasets", "show", "0" * 64)
    assert missing.exit_code == 2 and "[dataset_not_found]" in missing.output
    fmt = aevos("datasets", "export", digest, "--format", "xlsx")
    assert fmt.exit_code == 2 and "[export_format_unavailable]" in fmt.output
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    parquet = aevos("datasets", "export", digest, "--format", "parquet", "-o", str(tmp_path / "p"))
    assert parquet.exit_code == 2 and "parquet" in parquet.output and "pyarrow" in parquet.output
    empty = aevos("datasets", "snapshot", "nothing")
    assert empty.exit_code == 2 and "[invalid_dataset]" in empty.output
