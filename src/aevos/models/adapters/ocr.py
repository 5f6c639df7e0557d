"""The ``ocr`` flavor: text from images, and the key fields of a receipt.

Two engines, chosen by ``engine`` in the version's config (or its artifact, a JSON/YAML
document of the same settings; the config wins):

- ``rapidocr`` (default): PP-OCRv4 detection and recognition on onnxruntime, from the PyPI
  package ``rapidocr-onnxruntime``, which ships its ONNX models (runs offline). The more
  accurate of the two on receipts (see ``tests/test_adapters_ocr.py`` for the figures).
- ``tesseract``: Debian's ``tesseract-ocr`` through ``pytesseract``; faster, less accurate
  on thermal-paper receipts. Settings ``lang`` (default ``eng``), ``psm`` (page
  segmentation mode, default 6: "a single uniform block of text", which read the most
  totals on the receipts; 3 and 4 read fewer) and ``timeout`` (seconds, default 60).

Input: image bytes, or a path (``str`` / ``os.PathLike``) to an image file.

Output: ``{"engine", "text", "lines": [{"text", "confidence", "box": [x0, y0, x1, y1]}]}``,
the engine's text segments regrouped into visual rows (a receipt prints a label at the
left and its amount at the right of one row; engines often return them apart). With
``fields`` (any of ``total``, ``date``, ``company``), ``output["fields"]`` holds
``{"value", "confidence"}`` or ``None`` per field, by rules over the rows: the amount on the
last row naming the final total (rounded / nett / grand / incl. tax before a plain total,
never subtotal, quantity or tax lines), the first date, the row naming the company. A
field's confidence is the OCR score of the text it came from. ``label`` names the field
that becomes the prediction's label; without it the label is ``None`` and the confidence
the mean OCR score.

``min_score`` (default 0.5) drops segments the engine is less sure of.
"""

from __future__ import annotations

import io
import os
import re
import statistics
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ...errors import DefinitionError, ModelCallError, ModelInputError, ModelTimeoutError
from .. import flavors
from ..types import ModelAdapter, Prediction
from .document import parse_document

FLAVOR = "ocr"
ENGINES = ("rapidocr", "tesseract")
FIELDS = ("total", "date", "company")
_SETTINGS = {"engine", "fields", "label", "min_score", "lang", "psm", "timeout"}


@dataclass(frozen=True)
class Segment:
    """A piece of text the engine read, with its score in [0, 1] and bounding box."""

    text: str
    confidence: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def middle(self) -> float:
        return (self.box[1] + self.box[3]) / 2


class Engine(Protocol):
    name: str

    def read(self, image: Any) -> list[Segment]: ...


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(self) -> None:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise DefinitionError(
                "the rapidocr engine needs the package rapidocr-onnxruntime"
            ) from None
        self._ocr = RapidOCR()
        # RapidOCR writes call options onto the instance (box_thresh, text_score) and the
        # ONNX sessions already use every core, so calls on one instance take turns.
        self._lock = threading.Lock()

    def read(self, image: Any) -> list[Segment]:
        with self._lock:
            result, _ = self._ocr(image)
        segments = []
        for points, text, score in result or ():
            xs = [float(p[0]) for p in points]
            ys = [float(p[1]) for p in points]
            segments.append(Segment(str(text), float(score), (min(xs), min(ys), max(xs), max(ys))))
        return segments


class TesseractEngine:
    name = "tesseract"

    def __init__(self, lang: str = "eng", psm: int = 6, timeout: float = 60.0) -> None:
        try:
            import pytesseract
        except ImportError:
            raise DefinitionError("the tesseract engine needs the package pytesseract") from None
        try:
            pytesseract.get_tesseract_version()
        except pytesseract.TesseractNotFoundError:
            raise DefinitionError(
                "the tesseract engine needs the tesseract binary (Debian: tesseract-ocr)"
            ) from None
        if lang not in pytesseract.get_languages(config=""):
            raise DefinitionError(f"tesseract has no language {lang!r} installed")
        if not isinstance(psm, int) or not 0 <= psm <= 13:
            raise DefinitionError("tesseract 'psm' must be an integer page segmentation mode")
        self._tesseract = pytesseract
        self.lang, self.psm, self.timeout = lang, psm, timeout

    def read(self, image: Any) -> list[Segment]:
        tesseract = self._tesseract
        try:
            data = tesseract.image_to_data(
                image,
                lang=self.lang,
                config=f"--psm {self.psm}",
                output_type=tesseract.Output.DICT,
                timeout=self.timeout,
            )
        except RuntimeError as exc:  # pytesseract's timeout is a bare RuntimeError
            if "timeout" in str(exc).lower():
                raise ModelTimeoutError(f"tesseract ran past {self.timeout}s") from None
            raise ModelCallError("tesseract failed") from None
        except tesseract.TesseractError as exc:
            raise ModelCallError(f"tesseract failed with status {exc.status}") from None
        # Words -> tesseract's own lines (block, paragraph, line); scores are 0-100.
        lines: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if word.strip() and float(data["conf"][i]) >= 0:
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                lines.setdefault(key, []).append(i)
        segments = []
        for words in lines.values():
            x0 = min(data["left"][i] for i in words)
            y0 = min(data["top"][i] for i in words)
            x1 = max(data["left"][i] + data["width"][i] for i in words)
            y1 = max(data["top"][i] + data["height"][i] for i in words)
            text = " ".join(data["text"][i] for i in words)
            score = statistics.fmean(float(data["conf"][i]) for i in words) / 100
            segments.append(Segment(text, score, (x0, y0, x1, y1)))
        return segments


def rows(segments: Iterable[Segment]) -> list[list[Segment]]:
    """Group segments into visual rows, top to bottom, each left to right.

    A segment joins the row whose vertical middle it covers (by at least half of the
    smaller height); receipts are printed in rows but scanned slightly skewed, so only the
    few most recent rows are candidates.
    """
    out: list[list[Segment]] = []
    for seg in sorted(segments, key=lambda s: s.middle):
        for row in reversed(out[-3:]):
            top = min(s.box[1] for s in row)
            bottom = max(s.box[3] for s in row)
            overlap = min(bottom, seg.box[3]) - max(top, seg.box[1])
            if overlap >= 0.5 * min(seg.height, bottom - top):
                row.append(seg)
                break
        else:
            out.append([seg])
    return [sorted(row, key=lambda s: s.box[0]) for row in out]


@dataclass(frozen=True)
class Line:
    text: str
    confidence: float
    box: tuple[float, float, float, float]
    segments: tuple[Segment, ...]


def lines(segments: Iterable[Segment]) -> list[Line]:
    out = []
    for row in rows(segments):
        box = (
            min(s.box[0] for s in row),
            min(s.box[1] for s in row),
            max(s.box[2] for s in row),
            max(s.box[3] for s in row),
        )
        text = " ".join(s.text for s in row)
        out.append(Line(text, min(s.confidence for s in row), box, tuple(row)))
    return out


# -- receipt fields ----------------------------------------------------------------------

# An amount with two decimals, optionally after a currency mark that OCR may misread
# ($ as S); thousands separators allowed. Not part of a longer number or a date.
_AMOUNT = re.compile(
    r"(?<![\d./-])(?:RM|\$|S)?\s*(\d{1,3}(?:,\d{3})+|\d+)\s?[.,]\s?(\d{2})(?![\d/.])"
)
# Keywords are matched on the row's letters only: engines drop or insert spaces freely.
# Rank 3: the rounded total (what was paid); rank 2: a final total named as such; rank 1: a
# plain TOTAL, which receipts also print on subtotal, tax and quantity rows.
_TOTAL_ROUNDED = re.compile(r"ROUND[A-Z]{0,4}TOTAL|TOTALROUND|NETTTOTAL|NETTOTAL|GRANDTOTAL")
_TOTAL_FINAL = re.compile(
    r"TOTALAM(OUN)?T|TOTALPAYABLE|AMOUNTDUE|TOTALDUE|TOTALRM|[IL]NCL[A-Z]{0,8}(GST|TAX)"
)
_TOTAL = re.compile(r"TOTAL|TOT[AIL]|[LIJ]OTAL")
_NOT_FINAL = re.compile(r"SUBTOTAL|SUBTTL|EXCL")
# "TOTAL INCLUDES GST 6% 9.00" is the total on some tills and the tax on others.
_INCLUDES = re.compile(r"INCLUDE[SD]")
_NOT_TOTAL = re.compile(
    r"SUBTOTAL|SUBTTL|QTY|QUANTITY|ITEM|GST|TAX|DISCOUNT|SAVING|EXCL|POINT|TOTALNO|TENDER"
    r"|CHANGE"
)
_ROUNDING = re.compile(r"ROUND")
_CURRENCY_ONLY = re.compile(r"(RM|RH|R|M)?")


_MONTHS = "JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC"
# Engines often run the time into the date ("18-11-1813:58"), so a time may follow a date
# directly; otherwise a date must not run on into more digits.
_DATE_END = r"(?=\d{1,2}:\d{2}|\D|$)"
_DATE = re.compile(
    r"(?<!\d)(?:"
    r"\d{1,2}([/.-])\d{1,2}\1(?:19|20)\d{2}"  # 25/12/2018, 29-12-2017
    r"|(?:19|20)\d{2}([/.-])\d{1,2}\2\d{1,2}(?!\d)"  # 2018-03-06
    rf"|\d{{1,2}}\s?(?:{_MONTHS})[A-Z]*\s?(?:19|20)?\d{{2}}{_DATE_END}"  # 05 MAR 2018
    # 12-01-19: two-digit days and months only; item codes look like 03-7-15.
    rf"|\d{{2}}([/.-])\d{{2}}\3\d{{2}}{_DATE_END}"
    r")"
)
_TIME = re.compile(r"\d{1,2}:\d{2}")
_NOT_COMPANY = re.compile(r"INVOICE|RECEIPT|WELCOME|\bBILL\b|\bTAX\b")
_COMPANY = re.compile(
    r"S[DO]N\.?\s?BH?D|BERHAD|\bS/B\b|ENTERPRISE|TRADING|\bPLT\b|\bLTD\b|RESTAURANT|RESTORAN"
    r"|HARDWARE|STATIONERY|\bSTORE\b|\bSHOP\b|\bMART\b|MARKET|CAFE|BAKERY|PHARMACY|\bCO\b"
)


def _letters(text: str) -> str:
    return re.sub(r"[^A-Z]", "", text.upper())


def _amounts(line: Line) -> list[tuple[str, float]]:
    """Non-zero amounts in a row, left to right, each with its segment's OCR score."""
    found = []
    for seg in line.segments:
        for m in _AMOUNT.finditer(seg.text.upper()):
            whole = int(m.group(1).replace(",", ""))
            if whole or int(m.group(2)):
                found.append((f"{whole}.{m.group(2)}", seg.confidence))
    return found


def _rank(letters: str) -> int:
    if _NOT_FINAL.search(letters):
        return 0
    if _INCLUDES.search(letters):
        return 1 if _TOTAL.search(letters) else 0
    if _TOTAL_ROUNDED.search(letters):
        return 3
    if _TOTAL_FINAL.search(letters):
        return 2
    if _TOTAL.search(letters) and not _NOT_TOTAL.search(letters):
        return 1
    return 0


def extract_total(rows_: Sequence[Line]) -> tuple[str, float] | None:
    """The amount paid: on the last row naming a rounded or final total, else the largest
    amount on a plain TOTAL row (the others are subtotal, tax or tax-summary rows)."""
    best: tuple[int, float, str, float] | None = None  # (rank, tiebreak, value, score)
    for i, line in enumerate(rows_):
        letters = _letters(line.text)
        rank = _rank(letters)
        amounts = _amounts(line)
        if rank and not amounts and i + 1 < len(rows_):
            # The amount printed under its label, as some tills do.
            amounts = _amounts(rows_[i + 1])
        elif not rank and _ROUNDING.search(letters) and i + 1 < len(rows_):
            # "ROUNDING ADJ -0.01" then the rounded total alone on the next row.
            after = rows_[i + 1]
            if _CURRENCY_ONLY.fullmatch(_letters(after.text)):
                rank, amounts = 3, _amounts(after)
        if not rank or not amounts:
            continue
        value, score = amounts[-1]  # the rightmost column holds the amount
        tiebreak = float(value) if rank == 1 else float(i)
        candidate = (rank, tiebreak, value, min(score, line.confidence))
        if best is None or candidate[:2] >= best[:2]:
            best = candidate
    return (best[2], best[3]) if best else None


def extract_date(rows_: Sequence[Line]) -> tuple[str, float] | None:
    """The first date, preferring one on a row that says DATE or prints a time."""
    best: tuple[int, int, str, float] | None = None
    for i, line in enumerate(rows_):
        for seg in line.segments:
            m = _DATE.search(seg.text.upper())
            if m is None:
                continue
            text = line.text.upper()
            weight = ("DATE" in text) + bool(_TIME.search(text.replace(m.group(0), " ")))
            candidate = (-weight, i, m.group(0), seg.confidence)
            if best is None or candidate[:2] < best[:2]:
                best = candidate
    return (best[2], best[3]) if best else None


def extract_company(rows_: Sequence[Line]) -> tuple[str, float] | None:
    """The first row among the top ones that reads like a business name."""
    head = rows_[:8]
    for line in head:
        if _COMPANY.search(line.text.upper()):
            return line.text.strip(), line.confidence
    for line in head:
        text = line.text.upper()
        if len(_letters(text)) >= 4 and text == line.text and not _NOT_COMPANY.search(text):
            return line.text.strip(), line.confidence
    return None


_EXTRACTORS = {"total": extract_total, "date": extract_date, "company": extract_company}


# -- the adapter -------------------------------------------------------------------------


def open_image(input: Any) -> Any:
    """Image bytes or a path -> an RGB PIL image, upright as its EXIF data says."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(input, bytes | bytearray | memoryview):
        source: Any = io.BytesIO(bytes(input))
    elif isinstance(input, str | os.PathLike):
        if not os.path.isfile(input):
            raise ModelInputError("input names no readable image file")
        source = input
    else:
        raise ModelInputError(
            f"input must be image bytes or a file path, got {type(input).__name__}"
        )
    try:
        with Image.open(source) as image:
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ModelInputError("input is not a readable image") from None


class OcrAdapter:
    """An OCR engine plus receipt-field rules. Thread-safe (see each engine)."""

    flavor = FLAVOR

    def __init__(
        self,
        engine: Engine,
        *,
        fields: Sequence[str] = (),
        label: str | None = None,
        min_score: float = 0.5,
    ) -> None:
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise DefinitionError(f"unknown OCR field {unknown[0]!r} (known: {', '.join(FIELDS)})")
        if label is not None and label not in fields:
            raise DefinitionError(f"OCR label {label!r} must be one of the requested fields")
        self.engine = engine
        self.fields = tuple(fields)
        self.label = label
        self.min_score = min_score

    def predict(self, input: Any) -> Prediction:
        image = open_image(input)
        try:
            segments = self.engine.read(image)
        except (ModelCallError, ModelInputError):
            raise
        except Exception as exc:
            raise ModelCallError(
                f"the {self.engine.name} engine raised {type(exc).__name__}"
            ) from None
        found = lines(s for s in segments if s.confidence >= self.min_score and s.text.strip())
        output: dict[str, Any] = {
            "engine": self.engine.name,
            "text": "\n".join(line.text for line in found),
            "lines": [
                {
                    "text": line.text,
                    "confidence": round(line.confidence, 4),
                    "box": [round(v, 1) for v in line.box],
                }
                for line in found
            ],
        }
        extracted: dict[str, dict[str, Any] | None] = {}
        for name in self.fields:
            hit = _EXTRACTORS[name](found)
            extracted[name] = (
                {"value": hit[0], "confidence": round(hit[1], 4)} if hit is not None else None
            )
        if self.fields:
            output["fields"] = extracted
        if self.label is not None:
            chosen = extracted[self.label]
            return Prediction(
                label=chosen["value"] if chosen else None,
                confidence=chosen["confidence"] if chosen else 0.0,
                output=output,
            )
        confidence = statistics.fmean(line.confidence for line in found) if found else 0.0
        return Prediction(label=None, confidence=confidence, output=output)

    def batch_predict(self, inputs: Iterable[Any]) -> list[Prediction]:
        return [self.predict(x) for x in inputs]


def load(artifact: bytes, config: Mapping[str, Any], trusted: bool) -> ModelAdapter:
    """Flavor loader: settings from the artifact document, overridden by the config."""
    document = parse_document(artifact)
    if not isinstance(document, Mapping):
        raise DefinitionError("an OCR artifact is a mapping of settings (or empty)")
    settings = {**document, **{k: v for k, v in config.items() if k in _SETTINGS}}
    unknown = sorted(set(document) - _SETTINGS)
    if unknown:
        raise DefinitionError(f"unknown OCR setting(s): {', '.join(unknown)}")
    name = settings.get("engine", "rapidocr")
    engine: Engine
    if name == "rapidocr":
        engine = RapidOcrEngine()
    elif name == "tesseract":
        engine = TesseractEngine(
            lang=str(settings.get("lang", "eng")),
            psm=settings.get("psm", 6),
            timeout=float(settings.get("timeout", 60.0)),
        )
    else:
        raise DefinitionError(f"unknown OCR engine {name!r} (known: {', '.join(ENGINES)})")
    fields = settings.get("fields", ())
    if isinstance(fields, str) or not isinstance(fields, Sequence):
        raise DefinitionError("OCR 'fields' must be a list of field names")
    return OcrAdapter(
        engine,
        fields=list(fields),
        label=settings.get("label"),
        min_score=float(settings.get("min_score", 0.5)),
    )


flavors.register_flavor(FLAVOR, load)
