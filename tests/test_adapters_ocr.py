"""The ``ocr`` flavor on the 40 real receipts of ``data/receipts`` (SROIE 2019).

A receipt's ``total`` counts as extracted when it equals the key's amount (currency marks
and thousands separators aside); one key (033) has an empty total, so 39 are attainable.
Measured here:

=========================  ===============  ==============  =============
engine                     total            date            seconds/image
=========================  ===============  ==============  =============
rapidocr (default)         37/40 (92.5%)    39/40 (97.5%)   ~2.7 (2 cores)
tesseract 5.3, psm 6       24/40 (60%)      33/40 (82.5%)   ~1.9
=========================  ===============  ==============  =============

The field rules were written while looking at these 40 receipts, so the figures are
in-sample: they show the adapter works end to end on real scans, not how it generalises.
The floors (34/40 and 36/40 for rapidocr; 10/20 for tesseract on the first 20, where it
reads 12) leave room for a different onnxruntime or tesseract build reading a digit
differently, and still fail if row grouping or a field rule breaks (every broken variant
tried while writing them scored far below).
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import IN_CI

from aevos.errors import DefinitionError, ModelInputError
from aevos.models.adapters.ocr import Segment, lines
from aevos.models.flavors import load_adapter
from aevos.models.types import Prediction
from aevos.public_data import data_file

RECEIPTS = data_file("receipts")
FIELDS = {"fields": ["total", "date", "company"], "label": "total"}


def _amount(text: str) -> str | None:
    m = re.search(r"(\d[\d,]*)\.(\d{2})", text)
    return f"{int(m.group(1).replace(',', ''))}.{m.group(2)}" if m else None


@pytest.fixture(scope="module")
def receipts() -> list[tuple[Path, dict[str, str]]]:
    if not RECEIPTS.exists():
        message = f"receipts not found at {RECEIPTS}"
        if IN_CI:
            pytest.fail(message + " (CI must run the real-data tests)")
        pytest.skip(message)
    out = []
    for image in sorted((RECEIPTS / "img").glob("*.jpg")):
        key = json.loads((RECEIPTS / "key" / f"{image.stem}.json").read_text(encoding="utf-8"))
        out.append((image, key))
    assert len(out) == 40
    return out


@pytest.fixture(scope="module")
def rapid() -> Any:
    return load_adapter("ocr", b"", FIELDS)


@pytest.fixture(scope="module")
def first_read(rapid: Any, receipts: list[tuple[Path, dict[str, str]]]) -> Prediction:
    """Receipt 000 read by path, shared: OCR takes seconds an image."""
    prediction: Prediction = rapid.predict(str(receipts[0][0]))
    return prediction


def _score(
    predictions: list[Prediction], receipts: list[tuple[Path, dict[str, str]]]
) -> tuple[int, int]:
    totals = dates = 0
    for prediction, (_, key) in zip(predictions, receipts, strict=True):
        totals += prediction.label is not None and prediction.label == _amount(key["total"])
        date = prediction.output["fields"]["date"]
        dates += date is not None and date["value"].replace(" ", "") == key["date"].replace(" ", "")
        confidence = prediction.confidence
        assert prediction.label is None or (confidence is not None and 0.0 < confidence <= 1.0)
    return totals, dates


@pytest.mark.slow
@pytest.mark.timeout(600)  # 20 images at ~1.8 s each, longer on a loaded machine
def test_rapidocr_reads_totals_and_dates_of_real_receipts(
    rapid: Any, first_read: Prediction, receipts: list[tuple[Path, dict[str, str]]]
) -> None:
    # Every other receipt (20 of the 40, a third of the suite's time when it read all):
    # read here, all 40 gave totals 37/40 and dates 39/40, these 20 totals 19 and dates 19.
    # Receipt 000 by path is first_read: the same call on the same instance, read once.
    sample = receipts[::2]
    rest = [rapid.predict(str(image)) for image, _ in sample[1:]]
    totals, dates = _score([first_read, *rest], sample)
    print(f"rapidocr on 20 receipts: total {totals}/20, date {dates}/20")
    assert totals >= 17
    assert dates >= 17


def _require_tesseract() -> None:
    if shutil.which("tesseract") is None:
        message = "the tesseract binary is not installed (Debian: tesseract-ocr)"
        if IN_CI:
            pytest.fail(message + " (CI must run the OCR tests)")
        pytest.skip(message)


@pytest.mark.slow
def test_tesseract_reads_totals_of_real_receipts(
    receipts: list[tuple[Path, dict[str, str]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_tesseract()
    # One OpenMP thread per tesseract process (pytesseract's subprocess inherits it): its
    # threads spin-wait for each other, and with the 2 cores shared with the test process a
    # read took twice as long (4.0 s against 1.5-1.9 s measured here); the text is the same.
    monkeypatch.setenv("OMP_THREAD_LIMIT", "1")
    adapter = load_adapter("ocr", b'{"engine": "tesseract"}', FIELDS)
    totals, dates = _score(
        [adapter.predict(str(image)) for image, _ in receipts[:20]], receipts[:20]
    )
    print(f"tesseract on the first 20 receipts: total {totals}/20, date {dates}/20")
    assert totals >= 10


def test_output_shape_and_bytes_equal_path(
    rapid: Any, first_read: Prediction, receipts: list[tuple[Path, dict[str, str]]]
) -> None:
    image, key = receipts[0]
    by_path = first_read
    assert rapid.predict(image.read_bytes()) == by_path
    output = by_path.output
    assert output["engine"] == "rapidocr"
    assert output["text"] == "\n".join(line["text"] for line in output["lines"])
    assert all(0.5 <= line["confidence"] <= 1.0 for line in output["lines"])
    tops = [line["box"][1] for line in output["lines"]]
    assert tops == sorted(tops) or len(tops) > 10  # rows run top to bottom
    assert by_path.label == _amount(key["total"]) == output["fields"]["total"]["value"]
    assert by_path.confidence == output["fields"]["total"]["confidence"]
    assert set(output["fields"]) == {"total", "date", "company"}


def test_without_fields_the_label_is_none_and_confidence_the_mean_score(
    receipts: list[tuple[Path, dict[str, str]]],
) -> None:
    adapter = load_adapter("ocr", b"", {})
    prediction = adapter.predict(receipts[1][0].read_bytes())
    assert prediction.label is None and "fields" not in prediction.output
    scores = [line["confidence"] for line in prediction.output["lines"]]
    assert prediction.confidence == pytest.approx(sum(scores) / len(scores), abs=1e-3)


def test_predict_is_thread_safe(
    rapid: Any, first_read: Prediction, receipts: list[tuple[Path, dict[str, str]]]
) -> None:
    image = receipts[0][0]
    expected = first_read
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(rapid.predict(image))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


def test_bad_inputs(rapid: Any, tmp_path: Path) -> None:
    with pytest.raises(ModelInputError, match="not a readable image"):
        rapid.predict(b"definitely not a jpeg")
    with pytest.raises(ModelInputError, match="no readable image file") as info:
        rapid.predict(str(tmp_path / "customer-4711.jpg"))
    assert "4711" not in info.value.message  # a path can carry personal data
    with pytest.raises(ModelInputError, match="image bytes or a file path, got int"):
        rapid.predict(42)


def test_bad_settings() -> None:
    with pytest.raises(DefinitionError, match="unknown OCR engine 'easyocr'"):
        load_adapter("ocr", b"", {"engine": "easyocr"})
    with pytest.raises(DefinitionError, match="unknown OCR field 'iban'"):
        load_adapter("ocr", b"", {"fields": ["iban"]})
    with pytest.raises(DefinitionError, match="must be one of the requested fields"):
        load_adapter("ocr", b"", {"fields": ["date"], "label": "total"})
    with pytest.raises(DefinitionError, match="unknown OCR setting"):
        load_adapter("ocr", b"{engin: tesseract}", {})


def test_tesseract_settings_are_checked() -> None:
    _require_tesseract()
    with pytest.raises(DefinitionError, match="no language 'xxx'"):
        load_adapter("ocr", b"", {"engine": "tesseract", "lang": "xxx"})
    with pytest.raises(DefinitionError, match="page segmentation mode"):
        load_adapter("ocr", b"", {"engine": "tesseract", "psm": 99})


def test_segments_on_one_printed_row_are_joined_left_to_right() -> None:
    segments = [
        Segment("9.00", 0.99, (300, 101, 340, 119)),
        Segment("Total:", 0.97, (10, 100, 60, 120)),
        Segment("Cash", 0.98, (10, 130, 50, 150)),
        Segment("10.00", 0.99, (300, 131, 350, 149)),
        Segment("THANK YOU", 0.90, (100, 200, 200, 222)),
    ]
    got = lines(segments)
    assert [line.text for line in got] == ["Total: 9.00", "Cash 10.00", "THANK YOU"]
    assert got[0].confidence == 0.97 and got[0].box == (10, 100, 340, 120)


def test_engine_can_be_chosen_by_artifact_and_overridden_by_config() -> None:
    _require_tesseract()
    adapter = load_adapter("ocr", b"engine: tesseract\npsm: 6\n", {})
    assert adapter.engine.name == "tesseract" and adapter.engine.psm == 6  # type: ignore[attr-defined]
    adapter = load_adapter("ocr", b"engine: tesseract\n", {"psm": 4, "gateway_key": 1})
    assert adapter.engine.psm == 4  # type: ignore[attr-defined]
