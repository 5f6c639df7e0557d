"""Canonical text for detection, with a map back to the original offsets.

Attackers (and copy-paste) hide PII from pattern matchers: fullwidth or Arabic-Indic
digits, zero-width characters and soft hyphens inside a number, ``&#64;`` for ``@``,
``<b></b>`` between digit groups. Detection therefore runs on a normalised copy of the
text, and every normalised character remembers which original characters produced it, so
redaction can cut the *original* span, including every invisible character inside it.

Normalisation is local (each unit maps on its own), which keeps the offset map exact:

- a character of category Cf (zero-width space/joiners, word joiner, BOM, soft hyphen,
  bidi controls, tag characters), Mn or Me (combining marks such as strike-through or
  keycap over digits) or a variation selector is dropped;
- any character with a decimal digit value becomes that ASCII digit (Arabic-Indic,
  fullwidth, mathematical bold digits...);
- unicode dashes and the minus sign become ``-``; line/paragraph separators become ``\\n``;
- everything else non-ASCII goes through NFKC (fullwidth at sign U+FF20 to ``@``,
  no-break and ideographic spaces to a space, circled digits to digits);
- an HTML character reference (``&#64;``, ``&#x40;``, ``&commat;``) is decoded, ``%40``
  becomes ``@``, and an inline HTML tag or comment becomes one space, so tags between
  digit groups act as a separator instead of gluing neighbouring numbers together.

Case is kept: recognisers match case-insensitively where the format allows it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache

_INLINE_TAGS = (
    "a|abbr|b|bdi|bdo|big|br|code|del|em|font|i|ins|kbd|mark|q|s|samp|small|span|strike|"
    "strong|sub|sup|tt|u|var|wbr|div|p"
)
_SPECIAL = re.compile(
    r"[^\x00-\x7f]+"
    r"|&(?:\#[0-9]{1,7}|\#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});?"
    r"|%40"
    r"|<!--.{0,200}?-->"
    rf"|</?(?:{_INLINE_TAGS})(?:\s[^<>]{{0,200}})?/?>",
    re.IGNORECASE | re.DOTALL,
)
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2043\u2212\ufe58\ufe63\uff0d")
_LINE_BREAKS = frozenset("\u2028\u2029\x85")


def _char(ch: str) -> str:
    """The normalised form of one non-ASCII character (may be empty or several chars)."""
    if ch in _DASHES:
        return "-"
    if ch in _LINE_BREAKS:
        return "\n"
    category = unicodedata.category(ch)
    code = ord(ch)
    if category in ("Cf", "Mn", "Me") or 0xFE00 <= code <= 0xFE0F or 0xE0100 <= code <= 0xE01EF:
        return ""
    digit = unicodedata.decimal(ch, None)
    if digit is not None:
        return str(digit)
    folded = unicodedata.normalize("NFKC", ch)
    if folded == ch:
        return ch
    # NFKC output can itself hold marks or dashes (e.g. a compatibility ligature).
    return "".join(c if c.isascii() else _char_plain(c) for c in folded)


def _char_plain(ch: str) -> str:
    if ch in _DASHES:
        return "-"
    if unicodedata.category(ch) in ("Cf", "Mn", "Me"):
        return ""
    digit = unicodedata.decimal(ch, None)
    return str(digit) if digit is not None else ch


@lru_cache(maxsize=8192)
def _unit(unit: str) -> str:
    """The replacement of one special unit (an entity, a percent-escape, a tag)."""
    if unit[0] == "&":
        decoded = html.unescape(unit)
        if decoded == unit:
            return unit
        return "".join(c if c.isascii() else _char(c) for c in decoded)
    if unit[0] == "%":
        return "@"
    return " "  # an HTML tag or comment


@lru_cache(maxsize=8192)
def _run(run: str) -> tuple[str, tuple[str, ...] | None] | None:
    """The replacement of a run of non-ASCII characters; None if it stays as it is.

    Returns the replacement and, unless every character maps to exactly one character
    (a linear replacement), the per-character replacements. Cached per run: real text
    repeats the same few accented words and symbols.
    """
    chars = tuple(_char(ch) for ch in run)
    joined = "".join(chars)
    if joined == run:
        return None
    return joined, None if len(joined) == len(run) and all(chars) else chars


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised ``text`` of ``source`` and the map between their offsets.

    The map is a list of segments. A linear segment maps character to character (a run
    copied unchanged, or a run of fullwidth digits replaced one for one); any other segment
    is one source unit (a character, an entity, a tag) and every normalised character it
    produced maps back to the whole unit. Dropped characters produce no
    segment: a span that straddles them maps to a source span that contains them.
    """

    text: str
    source: str
    _norm_starts: tuple[int, ...]
    _src_starts: tuple[int, ...]
    _src_ends: tuple[int, ...]
    _linear: tuple[bool, ...]

    def source_span(self, start: int, end: int) -> tuple[int, int]:
        """The source span ``[s, e)`` whose normalisation produced ``text[start:end]``."""
        if not self._norm_starts:
            return start, end
        if end <= start:
            point = self._source_start(start) if start < len(self.text) else len(self.source)
            return point, point
        return self._source_start(start), self._source_end(end - 1)

    def _segment(self, index: int) -> int:
        return bisect_right(self._norm_starts, index) - 1

    def _source_start(self, index: int) -> int:
        k = self._segment(index)
        if self._linear[k]:
            return self._src_starts[k] + (index - self._norm_starts[k])
        return self._src_starts[k]

    def _source_end(self, index: int) -> int:
        k = self._segment(index)
        if self._linear[k]:
            return self._src_starts[k] + (index - self._norm_starts[k]) + 1
        return self._src_ends[k]


def _identity(text: str) -> Normalized:
    return Normalized(text, text, (), (), (), ())


def normalize(text: str) -> Normalized:
    """Normalise ``text`` for detection; see the module docstring for the rules."""
    # Fast path: plain ASCII without entities, percent-escapes or tags is already canonical.
    if text.isascii() and "&" not in text and "%" not in text and "<" not in text:
        return _identity(text)
    pieces: list[str] = []
    norm_starts: list[int] = []
    src_starts: list[int] = []
    src_ends: list[int] = []
    linear: list[bool] = []
    npos = 0
    copied = 0  # source offset up to which text has been emitted

    def emit_linear(end: int, replacement: str) -> None:
        """Emit ``text[copied:end]`` as ``replacement`` of the same length, char for char."""
        nonlocal npos, copied
        if end <= copied:
            return
        if (
            linear
            and linear[-1]
            and src_ends[-1] == copied
            and (src_starts[-1] - norm_starts[-1] == copied - npos)
        ):
            src_ends[-1] = end  # continues the previous segment at the same offset
        else:
            norm_starts.append(npos)
            src_starts.append(copied)
            src_ends.append(end)
            linear.append(True)
        pieces.append(replacement)
        npos += end - copied
        copied = end

    def emit_unit(start: int, end: int, replacement: str) -> None:
        nonlocal npos, copied
        if replacement:
            norm_starts.append(npos)
            src_starts.append(start)
            src_ends.append(end)
            linear.append(False)
            pieces.append(replacement)
            npos += len(replacement)
        copied = end

    for match in _SPECIAL.finditer(text):
        unit = match.group()
        start = match.start()
        if unit[0] >= "\x80":
            replaced = _run(unit)
            if replaced is None:
                continue  # stays part of the surrounding identity run
            emit_linear(start, text[copied:start])
            joined, chars = replaced
            if chars is None:
                emit_linear(match.end(), joined)
            else:
                for i, replacement in enumerate(chars):
                    if len(replacement) == 1:
                        emit_linear(start + i + 1, replacement)
                    else:
                        emit_unit(start + i, start + i + 1, replacement)
            continue
        replacement = _unit(unit)
        if replacement == unit:
            continue
        emit_linear(start, text[copied:start])
        emit_unit(start, match.end(), replacement)
    emit_linear(len(text), text[copied:])
    normalized = "".join(pieces)
    if normalized == text:
        return _identity(text)
    return Normalized(
        normalized,
        text,
        tuple(norm_starts),
        tuple(src_starts),
        tuple(src_ends),
        tuple(linear),
    )
