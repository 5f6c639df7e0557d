"""The optional Presidio backend (extra ``pii``): same interface, run offline.

Skipped where presidio-analyzer is not installed, except for the check that asking for it
then fails with a clear error.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import pytest

from aevos.errors import PiiBackendUnavailableError
from aevos.pii import CombinedEngine, PresidioEngine, RecognizerEngine, Redactor

HAVE_PRESIDIO = importlib.util.find_spec("presidio_analyzer") is not None
needs_presidio = pytest.mark.skipif(not HAVE_PRESIDIO, reason="presidio-analyzer not installed")

TEXT = (
    "mail john.doe@example.com, card 4111 1111 1111 1111, iban DE89 3704 0044 0532 0130 00, "
    "ip 192.168.1.1, NI AB 12 34 56 C"
)
EXPECTED = "mail <EMAIL>, card <CREDIT_CARD>, iban <IBAN>, ip <IP_ADDRESS>, NI <UK_NINO>"


@pytest.mark.skipif(HAVE_PRESIDIO, reason="presidio-analyzer is installed")
def test_missing_presidio_is_a_clear_error() -> None:
    with pytest.raises(PiiBackendUnavailableError, match=r"aevos\[pii\]") as caught:
        PresidioEngine()
    assert caught.value.code == "pii_backend_unavailable"


@pytest.fixture(scope="module")
def presidio() -> PresidioEngine:
    return PresidioEngine()


@needs_presidio
def test_presidio_backend_behind_the_same_interface(presidio: PresidioEngine) -> None:
    redactor = Redactor(presidio)
    assert redactor.redact(TEXT).text == EXPECTED
    # aevos normalises before Presidio sees the text, so smuggling defences still apply.
    assert redactor.redact("card 4111\u200b1111\u200b1111\u200b1111").text == "card <CREDIT_CARD>"
    assert redactor.redact("card ４１１１ １１１１ １１１１ １１１１").text == "card <CREDIT_CARD>"  # noqa: RUF001


@needs_presidio
def test_presidio_with_a_blank_spacy_pipeline_on_disk(tmp_path: Path) -> None:
    spacy = importlib.import_module("spacy")
    spacy.blank("en").to_disk(tmp_path / "blank_en")
    redactor = Redactor(PresidioEngine(model_path=tmp_path / "blank_en"))
    assert redactor.redact(TEXT).text == EXPECTED
    with pytest.raises(PiiBackendUnavailableError, match="spaCy pipeline not found"):
        PresidioEngine(model_path=tmp_path / "missing")


@needs_presidio
def test_combined_with_the_default_engine(presidio: PresidioEngine) -> None:
    redactor = Redactor(CombinedEngine(RecognizerEngine(), presidio))
    # The default engine catches what Presidio's patterns do not (obfuscated e-mails, SSNs).
    assert redactor.redact("john(at)example(dot)com, ssn 078-05-1120").text == (
        "<EMAIL>, ssn <US_SSN>"
    )
