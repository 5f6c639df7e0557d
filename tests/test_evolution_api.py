"""Pins ``aevos.evolution``'s public names, and that importing it stays light and pure."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import aevos
import aevos.evolution

EXPECTED = [
    "DEFAULT_DELTA",
    "DEFAULT_TARGET",
    "ArtifactPart",
    "Certification",
    "CertificationRecord",
    "Certifications",
    "Dataset",
    "DatasetVersion",
    "Datasets",
    "EmbeddingLogregParams",
    "EnsembleParams",
    "Labels",
    "Metrics",
    "Recipe",
    "RecipeRegistry",
    "TextClassifier",
    "TfidfLogregParams",
    "Trained",
    "TrainingResult",
    "certify",
    "evaluate",
    "p_value",
    "params_from_json",
    "params_to_json",
]


def test_exported_members() -> None:
    assert sorted(aevos.evolution.__all__) == sorted(EXPECTED)
    assert len(set(aevos.evolution.__all__)) == len(EXPECTED)
    for name in EXPECTED:
        assert getattr(aevos.evolution, name) is not None
    assert "evolution" not in aevos.__all__


def test_importing_evolution_loads_no_heavy_library() -> None:
    code = (
        "import sys, aevos.evolution; print(sorted(m for m in ('sklearn', 'scipy', 'mapie', "
        "'torch', 'sentence_transformers', 'skops') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_evolution_imports_neither_the_app_nor_the_kernel() -> None:
    """The retraining workflow will call it, never the other way round. Certification
    records name the store's type (its units of work) and nothing else of storage."""
    forbidden = ("aevos.app", "aevos.context", "aevos.kernel", "aevos.server")
    package = Path(aevos.evolution.__file__).parent
    found = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                # Resolve relative imports against the module's package (aevos.evolution).
                base = ["aevos", "evolution"]
                prefix = base[: len(base) - node.level + 1] if node.level else []
                module = ".".join([*prefix, *(node.module or "").split(".")]).strip(".")
                names = [f"{module}.{a.name}" for a in node.names] + [module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            found += [f"{path.name}: {n}" for n in names if n.startswith(forbidden)]
    assert found == []
    storage = [
        f"{path.name}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for line in path.read_text().splitlines()
        if "..storage" in line or "aevos.storage" in line
    ]
    # Storage's types (the store, its units of work) and the labels repository's inputs.
    assert storage == [
        "certifications.py: from ..storage import Store",
        "datasets.py: from ..storage import Store",
        "labels.py: from ..storage.labels import CaseRef, NewLabel",
        "labels.py: from ..storage import Store, UnitOfWork",
    ]
