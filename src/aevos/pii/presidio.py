"""Optional backend: Microsoft Presidio's analyser, offline, behind the same Engine interface.

Install with the ``pii`` extra (``presidio-analyzer``, which pulls spaCy; about 80 MB of
wheels, 280 MB installed). Nothing is imported until a :class:`PresidioEngine` is built.

Offline operation: without ``model_path`` the analyser runs on Presidio's no-op NLP engine
(regex and checksum recognisers only, no model on disk); with ``model_path`` it loads that
spaCy pipeline, e.g. ``spacy.blank("en").to_disk(path)`` or a full model with NER if one
is installed (only then are person names found). Presidio's e-mail validation uses
``tldextract``, which would fetch the public suffix list from the network on first use;
the engine points it at its bundled snapshot instead.

Text reaches Presidio *after* aevos' normalisation, so the smuggling defences (zero-width
characters, fullwidth digits, entities) apply to this backend too.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import PiiBackendUnavailableError
from .base import check_kind
from .engine import RecognizerEngine, resolve
from .finding import Finding

# Presidio entity name -> aevos kind. Pass ``entities=`` to map more (e.g. national IDs:
# {"ES_NIF": "NATIONAL_ID"}) or PERSON when a spaCy model with NER is installed.
DEFAULT_ENTITIES: Mapping[str, str] = {
    "EMAIL_ADDRESS": "EMAIL",
    "CREDIT_CARD": "CREDIT_CARD",
    "IBAN_CODE": "IBAN",
    "PHONE_NUMBER": "PHONE",
    "IP_ADDRESS": "IP_ADDRESS",
    "US_SSN": "US_SSN",
    "UK_NINO": "UK_NINO",
}


def _import_presidio() -> Any:
    try:
        if "tldextract" not in sys.modules:
            # Read once when tldextract is imported: use the bundled suffix list snapshot
            # rather than fetching it. Restored at once so nothing else is affected.
            saved = os.environ.get("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS")
            os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = ""
            try:
                importlib.import_module("tldextract")
            finally:
                if saved is None:
                    del os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"]
                else:
                    os.environ["TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS"] = saved
        # Imported by name: the package is optional and has no type information.
        return importlib.import_module("presidio_analyzer")
    except ImportError as exc:
        raise PiiBackendUnavailableError(
            "the Presidio backend needs presidio-analyzer (and spaCy): "
            "pip install 'aevos[pii]'; the default RecognizerEngine needs nothing"
        ) from exc


class PresidioEngine:
    """Presidio's ``AnalyzerEngine`` as an aevos :class:`~aevos.pii.Engine`.

    ``entities`` maps Presidio entity names to aevos kinds (default
    :data:`DEFAULT_ENTITIES`); only those entities are analysed. ``score_threshold`` is
    Presidio's own cut-off; the redactor's ``min_score`` applies afterwards.
    """

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        language: str = "en",
        entities: Mapping[str, str] | None = None,
        score_threshold: float = 0.3,
    ) -> None:
        presidio = _import_presidio()
        recognizers = importlib.import_module("presidio_analyzer.predefined_recognizers")
        nlp_engines = importlib.import_module("presidio_analyzer.nlp_engine")

        self._entities = dict(DEFAULT_ENTITIES if entities is None else entities)
        for kind in self._entities.values():
            check_kind(kind)
        self.language = language
        self.score_threshold = score_threshold
        if model_path is None:
            nlp: Any = nlp_engines.NoOpNlpEngine(
                models=[{"lang_code": language, "model_name": "none"}]
            )
        else:
            path = Path(model_path)
            if not path.exists():
                raise PiiBackendUnavailableError(
                    f"spaCy pipeline not found at {path}; create a blank one with "
                    f'spacy.blank("{language}").to_disk(path)'
                )
            nlp = nlp_engines.SpacyNlpEngine(
                models=[{"lang_code": language, "model_name": str(path)}]
            )
        self._analyzer = presidio.AnalyzerEngine(nlp_engine=nlp, supported_languages=[language])
        if "UK_NINO" in self._entities:
            self._analyzer.registry.add_recognizer(
                recognizers.UkNinoRecognizer(supported_language=language)
            )
        self._kinds = frozenset(self._entities.values())
        self._canonical = RecognizerEngine()

    @property
    def kinds(self) -> frozenset[str]:
        return self._kinds

    def analyze(self, text: str) -> list[Finding]:
        results = self._analyzer.analyze(
            text=text,
            language=self.language,
            entities=list(self._entities),
            score_threshold=self.score_threshold,
        )
        return resolve(
            Finding(self._entities[r.entity_type], r.start, r.end, float(r.score))
            for r in results
            if r.entity_type in self._entities
        )

    def canonical(self, kind: str, value: str) -> str:
        return self._canonical.canonical(kind, value)
