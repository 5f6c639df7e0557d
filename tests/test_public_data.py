"""The shipped data sets are found through one function, which AEVOS_DATA_DIR moves."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from aevos.errors import DataNotFoundError
from aevos.public_data import data_dir, data_file

ROOT = Path(__file__).resolve().parents[1]


def test_the_checkout_ships_every_data_set_with_its_licence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AEVOS_DATA_DIR", raising=False)
    assert data_dir() == ROOT / "data"
    with data_file("banking77", "train.csv").open(encoding="utf-8") as f:
        assert sum(1 for _ in csv.DictReader(f)) == 10_003
    with data_file("insurance_claims", "insurance_claims.csv").open(encoding="utf-8") as f:
        assert sum(1 for _ in csv.DictReader(f)) == 1_000
    assert len(list(data_file("receipts", "img").glob("*.jpg"))) == 40
    assert data_file("banking77", "LICENSE").is_file()
    assert data_file("insurance_claims", "REPO_LICENSE").is_file()


def test_aevos_data_dir_moves_all_of_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "test.csv").write_text("text,category\nhi,greeting\n")
    monkeypatch.setenv("AEVOS_DATA_DIR", str(tmp_path))
    assert data_file("banking77", "test.csv") == tmp_path / "banking77" / "test.csv"
    with pytest.raises(DataNotFoundError) as missing:
        data_file("receipts")
    assert missing.value.code == "data_not_found" and "AEVOS_DATA_DIR" in missing.value.message


def test_a_missing_directory_names_itself_and_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEVOS_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match=r"nowhere.*AEVOS_DATA_DIR"):
        data_dir()
