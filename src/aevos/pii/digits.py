"""Numbers that are PII: payment cards, US SSNs and phone numbers.

A number is scanned as a *run*: digits joined by up to three separator characters (space,
tab, ``.``, ``/``, ``-``, line breaks), so ``4111 1111 1111 1111``, ``4111-1111-...``,
``4 1 1 1 ...`` and a number broken over lines are all one run. Within a run the groups
(maximal digit blocks) decide what it can be:

- a card is 13-19 digits passing Luhn, starting 1-6 (the issuer ranges; 0/7/8/9 starts are
  not cards), either the whole run or a window of groups laid out like a card
  (contiguous, ``4-4-4-4``, ``4-6-5``, or one digit per group);
- an SSN is a ``3-2-4`` group triple with one consistent separator and valid area, group
  and serial, or 9 digits in any layout next to a context word ("SSN", "social security");
- a phone number is ``+CC ...`` / ``00CC ...`` (8-15 digits), a NANP ``(555) 123-4567``,
  a trunk-prefixed national number (``020 7946 0958``, ``01 23 45 67 89``), a number spelled
  out one digit at a time, or 7-15 digits next to a context word ("phone", "call me").

Dates (``2024-01-15``, ``15.01.2024``), amounts (``1,234.56``) and version strings fail
these layouts; a card number is not a phone because the card outranks it on overlap.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence

from .base import digit_count, has_context, keyword_pattern
from .checksums import luhn_valid, ssn_valid
from .finding import Finding

_SEP = r"(?:[ \t./\-]|\r?\n)"
# No look-behind needed: a greedy run never stops in front of a digit.
_RUN = re.compile(rf"(?:\+\s?\d|\d)(?:{_SEP}{{1,3}}\d|\d)*")
_DIGITS = re.compile(r"\d+")

_SSN_WORDS = keyword_pattern(["ssn", "ss#", "social security", "soc sec", "social sec"])
_PHONE_WORDS = keyword_pattern(
    [
        "phone", "telephone", "tel", "tel.", "mobile", "mob", "cell", "cellphone", "fax",
        "whatsapp", "sms", "call me", "call us", "call him", "call her", "text me",
        "ring me", "reach me", "contact number", "landline", "handy",
    ]
)  # fmt: skip


class _Run:
    __slots__ = ("digits", "end", "groups", "plus", "start")

    def __init__(self, text: str, match: re.Match[str]) -> None:
        self.start = match.start()
        self.end = match.end()
        self.plus = match.group().startswith("+")
        base = match.start()
        self.groups = [(base + g.start(), base + g.end()) for g in _DIGITS.finditer(match.group())]
        self.digits = "".join(text[s:e] for s, e in self.groups)


_last_runs: tuple[str, list[_Run]] = ("", [])


def _runs(text: str) -> list[_Run]:
    """The digit runs of ``text`` (remembered for the last text: two recognisers ask)."""
    global _last_runs
    last = _last_runs
    if last[0] is text:
        return last[1]
    runs = [_Run(text, m) for m in _RUN.finditer(text)]
    _last_runs = (text, runs)
    return runs


def _card_layout(lengths: Sequence[int]) -> bool:
    if len(lengths) == 1 or all(n == 1 for n in lengths):
        return True
    if tuple(lengths) in ((4, 6, 5), (4, 6, 4)):
        return True
    return all(n == 4 for n in lengths[:-1]) and 1 <= lengths[-1] <= 4


def _card_digits_ok(digits: str) -> bool:
    return 13 <= len(digits) <= 19 and digits[0] in "123456" and luhn_valid(digits)


class _LuhnWindows:
    """Luhn checks of any slice of one digit string in O(1), from prefix sums.

    A run of thousands of digits has thousands of candidate windows; checking each one
    digit by digit made long digit-only input a cheap way to burn CPU.
    """

    __slots__ = ("doubled", "plain")

    def __init__(self, digits: str) -> None:
        # plain[p][k] / doubled[p][k]: sum over j < k with j % 2 == p of d_j / luhn-doubled d_j
        self.plain = ([0], [0])
        self.doubled = ([0], [0])
        for j, ch in enumerate(digits):
            d = ord(ch) - 48
            for p in (0, 1):
                hit = j % 2 == p
                self.plain[p].append(self.plain[p][-1] + (d if hit else 0))
                self.doubled[p].append(self.doubled[p][-1] + (_DOUBLE[d] if hit else 0))

    def valid(self, start: int, end: int) -> bool:
        # The rightmost digit is not doubled, then every second one to the left is.
        q = (end - 1) % 2
        total = self.plain[q][end] - self.plain[q][start]
        total += self.doubled[1 - q][end] - self.doubled[1 - q][start]
        return total % 10 == 0


_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def _nanp(digits: str) -> bool:
    return len(digits) == 10 and digits[0] in "23456789"


def _national(digits: str) -> bool:
    return 10 <= len(digits) <= 12 and digits[0] == "0" and digits[1] != "0"


class CardSsnPhoneRecognizer:
    """Cards, layout-evident SSNs, and phone numbers spelled one digit at a time."""

    kinds = frozenset({"CREDIT_CARD", "US_SSN", "PHONE"})
    contextual = False

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        if digit_count(text) < 9:
            return
        for run in _runs(text):
            if len(run.digits) < 9:
                continue
            yield from self._cards(text, run)
            yield from self._ssns(text, run)
            lengths = [e - s for s, e in run.groups]
            spelled_out = len(lengths) >= 9 and all(n == 1 for n in lengths)
            if spelled_out and not run.plus and (_nanp(run.digits) or _national(run.digits)):
                yield Finding("PHONE", run.groups[0][0], run.groups[-1][1], 0.6)

    def canonical(self, kind: str, value: str) -> str:
        return canonical_number(kind, value)

    @staticmethod
    def _cards(text: str, run: _Run) -> Iterator[Finding]:
        # A leading "+" makes up to 15 digits a phone number (E.164); past that it is a
        # card with a "+" glued on, which must not be a way to hide one.
        groups = run.groups
        lengths = [e - s for s, e in groups]
        digits = run.digits
        if (not run.plus or len(digits) > 15) and _card_digits_ok(digits):
            score = 0.95 if _card_layout(lengths) else 0.85
            yield Finding("CREDIT_CARD", groups[0][0], groups[-1][1], score)
            return
        if len(groups) == 1 or len(digits) < 13:
            return
        luhn = _LuhnWindows(digits)
        offset = 0  # digit index where group i starts
        for i in range(len(groups)):
            total = 0
            ones = fours = True  # groups i..j-1 all one digit / all four digits
            for j in range(i, len(groups)):
                n = lengths[j]
                total += n
                if total > 19:
                    break
                layout = (
                    j == i
                    or (ones and n == 1)
                    or (fours and 1 <= n <= 4)
                    or (j == i + 2 and (lengths[i], lengths[i + 1]) == (4, 6) and n in (4, 5))
                )
                ones = ones and n == 1
                fours = fours and n == 4
                if total < 13 or not layout or (i == 0 and run.plus and total <= 15):
                    continue
                if digits[offset] in "123456" and luhn.valid(offset, offset + total):
                    yield Finding("CREDIT_CARD", groups[i][0], groups[j][1], 0.95)
            offset += lengths[i]

    @staticmethod
    def _ssns(text: str, run: _Run) -> Iterator[Finding]:
        groups = run.groups
        for i in range(len(groups) - 2):
            if i == 0 and run.plus:
                continue
            (s1, e1), (s2, e2), (s3, e3) = groups[i : i + 3]
            if (e1 - s1, e2 - s2, e3 - s3) != (3, 2, 4):
                continue
            sep1, sep2 = text[e1:s2], text[e2:s3]
            if sep1 != sep2 or len(sep1) != 1:
                continue
            if ssn_valid(text[s1:e1] + text[s2:e2] + text[s3:e3]):
                yield Finding("US_SSN", s1, e3, 0.85)


_INTL = re.compile(
    r"(?=[+0])(?<![\w+])(?:\+\s?|00(?=[1-9]\d{0,2}[ \t.\-/(]))[1-9](?:[\d \t.\-/()]|\r?\n)*"
)
_NANP = re.compile(
    r"(?=[(\d])(?<![\w+])(?:1[ .\-]?)?(?:\((\d{3})\)[ \-]?|(\d{3})[ .\-])(\d{3})[ .\-]\d{4}(?!\d)"
)
_TRUNK = re.compile(
    r"(?=[(0])(?<![\w+])(?:\(0\d{1,4}\)[ \-]?\d{2,8}(?:[ .\-/]\d{2,8}){0,3}"
    r"|0\d{1,4}([ .\-/])\d{2,8}(?:\1\d{2,8}){0,3}"
    r"|0[1-9]\d{8,10})(?!\d)"
)


class PhoneRecognizer:
    """International (``+``/``00``), NANP and trunk-prefixed national phone numbers."""

    kinds = frozenset({"PHONE"})
    contextual = False

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        if digit_count(text) < 7:
            return
        if "+" in text or "00" in text:
            for m in _INTL.finditer(text):
                span = self._international(m)
                if span is not None:
                    yield Finding("PHONE", m.start(), span, 0.8)
        for m in _NANP.finditer(text):
            # Only the area code is checked: fictional 555-123-4567 style numbers are
            # written by real people too, and missing a phone costs more than a date.
            if (m.group(1) or m.group(2))[0] in "23456789":
                yield Finding("PHONE", m.start(), m.end(), 0.7)
        for m in _TRUNK.finditer(text):
            digits = "".join(_DIGITS.findall(m.group()))
            if _national(digits):
                yield Finding("PHONE", m.start(), m.end(), 0.6)

    @staticmethod
    def _international(m: re.Match[str]) -> int | None:
        """End of the phone number in an international candidate, or None."""
        body = m.group()
        skip = 2 if body.startswith("00") else 0
        count = 0
        end = None
        gap = 0
        for i, ch in enumerate(body):
            if ch.isdigit():
                if i >= skip:
                    count += 1
                if count > 15:
                    break
                gap = 0
                end = i + 1
            elif count:
                gap += 1
                if gap > 3:
                    break
        if end is None or count < 8:
            return None
        if count > 15:
            # The run carries on past a phone's length: keep whole groups up to 15 digits.
            digits = 0
            end = None
            for g in _DIGITS.finditer(body):
                n = len(g.group()) - (skip if g.start() == 0 else 0)
                if digits + n > 15:
                    break
                digits += n
                end = g.end()
            if end is None or digits < 8:
                return None
        return m.start() + end

    def canonical(self, kind: str, value: str) -> str:
        return canonical_phone(value)


class ContextualNumberRecognizer:
    """SSNs and phone numbers written without a telling layout, next to a context word."""

    kinds = frozenset({"US_SSN", "PHONE"})
    contextual = True

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        if digit_count(text) < 7:
            return
        for run in _runs(text):
            if run.plus or not 7 <= len(run.digits) <= 15:
                continue
            start, end = run.groups[0][0], run.groups[-1][1]
            if (
                len(run.digits) == 9
                and ssn_valid(run.digits)
                and has_context(text, start, _SSN_WORDS, prior)
            ):
                yield Finding("US_SSN", start, end, 0.7)
            elif has_context(text, start, _PHONE_WORDS, prior, max_words=3):
                yield Finding("PHONE", start, end, 0.6)

    def canonical(self, kind: str, value: str) -> str:
        return canonical_number(kind, value)


def canonical_phone(value: str) -> str:
    digits = "".join(_DIGITS.findall(value))
    stripped = value.lstrip()
    if stripped.startswith("+"):
        return "+" + digits
    if stripped.startswith("00") and not stripped.startswith("000"):
        return "+" + digits[2:]
    return digits


def canonical_number(kind: str, value: str) -> str:
    digits = "".join(_DIGITS.findall(value))
    if kind == "US_SSN":
        return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"
    if kind == "PHONE":
        return canonical_phone(value)
    return digits
