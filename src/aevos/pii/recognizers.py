"""The default recognisers: e-mail, IBAN, IP address, UK NINO (numbers live in digits.py).

Every recogniser works on normalised text (see :mod:`aevos.pii.normalize`), so it only has
to know the *visible* spellings of a value: obfuscated e-mail forms such as
``john dot doe at example dot com`` or ``john(at)example(dot)com`` are part of the e-mail
patterns; invisible characters and look-alike digits are gone before they run.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Sequence

from .base import Recognizer, compact, digit_count
from .checksums import IBAN_LENGTHS, IBAN_NUMERIC_BBAN, iban_valid, nino_valid
from .digits import CardSsnPhoneRecognizer, ContextualNumberRecognizer, PhoneRecognizer
from .finding import Finding

# -- e-mail ---------------------------------------------------------------------------------
# Anchored on the "at" (``@``, ``(at)``/``[at]``/``{at}``, or a spoken `` at ``) rather
# than scanned from every word: the local part is matched backwards from the anchor (on the
# reversed text), the domain forwards. Equivalent to one big pattern, several times faster.

_LABEL = r"[\w%+\-]++"
_BRACKET_AT = r"[(\[{<]\s*at\s*[)\]}>]"
_BRACKET_DOT = r"\s*[(\[{<]\s*dot\s*[)\]}>]\s*"
_BRACKET_DOT_REVERSED = r"\s*[)\]}>]\s*tod\s*[(\[{<]\s*"
_WORD_DOT = r"\s+dot\s+"
# A dot with spaces on both sides only: "example.com. Thanks" must not swallow "Thanks".
_SPACED_DOT = r"\s+\.\s+"
_TLD = r"[^\W\d_]{2,24}"
_LOCAL_DOT = rf"(?:\.|{_BRACKET_DOT}|{_WORD_DOT})"
_DOMAIN_DOT = rf"(?:\.|{_BRACKET_DOT}|{_WORD_DOT}|{_SPACED_DOT})"

_MARKED_ANCHOR = re.compile(rf"@|{_BRACKET_AT}", re.IGNORECASE)
_SPOKEN_ANCHOR = re.compile(r"\sat\s", re.IGNORECASE)
_LOCAL_REVERSED = re.compile(
    rf"{_LABEL}(?:(?:\.|{_BRACKET_DOT_REVERSED}|\s+tod\s+|{_SPACED_DOT}){_LABEL})*",
    re.IGNORECASE,
)
_MARKED_DOMAIN = re.compile(
    rf"{_LABEL}(?:{_DOMAIN_DOT}{_LABEL})*{_DOMAIN_DOT}{_TLD}", re.IGNORECASE
)
# A bare " at " is ordinary English, so the spoken form is validated harder (see below):
# its domain is read label by label and cut after the last label that is a known TLD.
_SPOKEN_LABEL = re.compile(_LABEL)
_SPOKEN_NEXT_LABEL = re.compile(rf"{_LOCAL_DOT}({_LABEL})", re.IGNORECASE)
_LOCAL_WINDOW = 256
# TLDs accepted in the spoken form: generic ones and country codes that are not English
# words ("at", "in", "is", "it", "me", "no", "to", "us"... would turn sentences into e-mails).
_SPOKEN_TLDS = frozenset(
    (
        "com",
        "net",
        "org",
        "edu",
        "gov",
        "mil",
        "int",
        "info",
        "biz",
        "io",
        "ai",
        "app",
        "dev",
        "email",
        "online",
        "site",
        "tech",
        "xyz",
        "uk",
        "de",
        "fr",
        "nl",
        "eu",
        "ch",
        "ca",
        "au",
        "es",
        "se",
        "dk",
        "fi",
        "pl",
        "cz",
        "ru",
        "br",
        "jp",
        "cn",
        "mx",
        "ie",
        "nz",
        "za",
        "pt",
        "gr",
        "hu",
        "ro",
        "sk",
        "si",
        "hr",
        "bg",
        "ua",
        "tr",
        "il",
        "sg",
        "hk",
        "tw",
        "kr",
        "ar",
        "cl",
        "lu",
        "li",
        "lt",
        "lv",
        "ee",
    )
)
_SPOKEN_NOT_DOMAIN = frozenset(
    (
        "the",
        "a",
        "an",
        "this",
        "that",
        "these",
        "those",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "some",
        "any",
        "each",
        "every",
        "one",
        "least",
        "most",
        "first",
        "last",
        "all",
        "home",
        "work",
        "night",
        "noon",
        "once",
    )
)
_SPOKEN_NOT_LOCAL = frozenset(
    (
        "us",
        "me",
        "him",
        "her",
        "them",
        "you",
        "we",
        "it",
        "i",
        "they",
        "he",
        "she",
        "one",
        "here",
        "there",
        "everyone",
        "anyone",
        "someone",
        "people",
        "look",
        "looking",
        "looked",
        "arrive",
        "arrived",
        "meet",
        "visit",
        "available",
        "online",
        "found",
        "buy",
        "shop",
        "order",
        "ordered",
    )
)
_CANON_AT = re.compile(rf"\s*{_BRACKET_AT}\s*|\s+at\s+|\s*@\s*", re.IGNORECASE)
_CANON_DOT = re.compile(rf"{_BRACKET_DOT}|{_WORD_DOT}|\s*\.\s*", re.IGNORECASE)


def _local_start(text: str, end: int) -> int | None:
    """Start of the local part ending at ``end``, or None if there is none."""
    lo = max(0, end - _LOCAL_WINDOW)
    m = _LOCAL_REVERSED.match(text[lo:end][::-1])
    return None if m is None else end - m.end()


def _skip_space(text: str, pos: int, step: int) -> int:
    if step < 0:
        while pos > 0 and text[pos - 1].isspace():
            pos -= 1
    else:
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return pos


def _spoken_domain_end(text: str, pos: int) -> int | None:
    first = _SPOKEN_LABEL.match(text, pos)
    if first is None or first.group().lower() in _SPOKEN_NOT_DOMAIN:
        return None
    end = None
    label = _SPOKEN_NEXT_LABEL.match(text, first.end())
    while label is not None:
        if label.group(1).lower() in _SPOKEN_TLDS:
            end = label.end()
        label = _SPOKEN_NEXT_LABEL.match(text, label.end())
    return end


class EmailRecognizer:
    """E-mail addresses, including ``(at)``/``[at]``/``at`` and ``(dot)``/``dot`` spellings."""

    kinds = frozenset({"EMAIL"})
    contextual = False

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        yield from self._marked(text)
        yield from self._spoken(text)

    @staticmethod
    def _marked(text: str) -> Iterator[Finding]:
        for anchor in _MARKED_ANCHOR.finditer(text):
            start = _local_start(text, _skip_space(text, anchor.start(), -1))
            if start is None:
                continue
            domain = _MARKED_DOMAIN.match(text, _skip_space(text, anchor.end(), 1))
            if domain is not None:
                yield Finding("EMAIL", start, domain.end(), 1.0)

    @staticmethod
    def _spoken(text: str) -> Iterator[Finding]:
        for anchor in _SPOKEN_ANCHOR.finditer(text):
            local_end = _skip_space(text, anchor.start(), -1)
            start = _local_start(text, local_end)
            if start is None:
                continue
            if text[start:local_end].lower() in _SPOKEN_NOT_LOCAL:
                continue
            end = _spoken_domain_end(text, _skip_space(text, anchor.end(), 1))
            if end is not None:
                yield Finding("EMAIL", start, end, 0.8)

    def canonical(self, kind: str, value: str) -> str:
        value = _CANON_AT.sub("@", value, count=1)
        return "".join(_CANON_DOT.sub(".", value).split()).lower()


# -- IBAN -----------------------------------------------------------------------------------

_SEP = r"(?:[ \t./\-]|\r?\n)"
# Inside a lookahead so that every start is tried: a decoy like "is 12 " in front of an
# IBAN must not consume the real one.
_IBAN = re.compile(
    rf"(?<![A-Za-z0-9])(?=[A-Za-z]{{2}}[ \t./\-\r\n]{{0,3}}\d\d)(?=([A-Za-z]{{2}}){_SEP}{{0,3}}(\d{{2}})((?:{_SEP}{{0,3}}[A-Za-z0-9]){{10,32}}))"
)


class IbanRecognizer:
    """IBANs of every registry country, with the country length and mod-97 checked."""

    kinds = frozenset({"IBAN"})
    contextual = False

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        if digit_count(text) < 8:
            return
        for m in _IBAN.finditer(text):
            country = m.group(1).upper()
            length = IBAN_LENGTHS.get(country)
            if length is None:
                continue
            need = length - 4
            numeric = country in IBAN_NUMERIC_BBAN
            chars: list[str] = []
            end = -1
            base = m.start(3)
            for i, ch in enumerate(m.group(3)):
                if numeric and ch.isalpha():
                    break
                if ch.isalnum():
                    chars.append(ch)
                    if len(chars) == need:
                        end = base + i + 1
                        break
            if end < 0:
                continue
            if iban_valid(country + m.group(2) + "".join(chars).upper()):
                yield Finding("IBAN", m.start(), end, 1.0)

    def canonical(self, kind: str, value: str) -> str:
        return compact(value)


# -- IP addresses ---------------------------------------------------------------------------

_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|0?\d?\d)"
# Defanged dots ("[.]", "(.)", "[dot]") are how IP addresses get pasted into tickets.
_IPV4_DOT = r"(?:\.|\[\.\]|\(\.\)|\[dot\]|\(dot\))"
_IPV4 = re.compile(
    rf"(?=\d)(?<![\w.]){_OCTET}(?:{_IPV4_DOT}{_OCTET}){{3}}(?!\.?\d|\w)",
    re.IGNORECASE,
)
_IPV6 = re.compile(
    r"(?=[0-9A-Fa-f:])(?<![\w:.])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\.[\d.]{3,11})?"
)
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_DEFANG = re.compile(r"\[\.\]|\(\.\)|\[dot\]|\(dot\)", re.IGNORECASE)


class IpAddressRecognizer:
    """IPv4 (octets 0-255; not after ``v`` or a dot, so ``v1.2.3.4`` is a version) and IPv6."""

    kinds = frozenset({"IP_ADDRESS"})
    contextual = False

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        if digit_count(text) >= 4:
            for m in _IPV4.finditer(text):
                yield Finding("IP_ADDRESS", m.start(), m.end(), 0.85)
        if _IPV6_HINT.search(text) is not None:
            for m in _IPV6.finditer(text):
                candidate = m.group()
                # "a::b" and "dead::beef" are code far more often than addresses.
                groups = sum(1 for g in candidate.split(":") if g)
                if groups < 2 or (groups == 2 and not any(c.isdigit() for c in candidate)):
                    continue
                end = m.end()
                if end < len(text) and (text[end].isalnum() or text[end] in "_:"):
                    continue
                try:
                    ipaddress.IPv6Address(candidate)
                except ValueError:
                    continue
                yield Finding("IP_ADDRESS", m.start(), end, 0.9)

    def canonical(self, kind: str, value: str) -> str:
        value = _DEFANG.sub(".", value)
        if ":" in value:
            return str(ipaddress.IPv6Address(value))
        return ".".join(str(int(octet)) for octet in value.split("."))


# -- UK National Insurance number -----------------------------------------------------------

# Anchored on the digits (letters are everywhere in text, six digits are not); the two
# prefix letters are then checked just in front of them.
_NINO_TAIL = re.compile(r"(?=\d)(?:[ .\-]?\d){6}[ .\-]?[A-Da-d](?![A-Za-z0-9])")
_NINO_HEAD = re.compile(r"(?:^|[^A-Za-z0-9])([A-Za-z][ .\-]?[A-Za-z][ .\-]?)$")


class UkNinoRecognizer:
    """UK National Insurance numbers (prefix rules and the A-D suffix are checked)."""

    kinds = frozenset({"UK_NINO"})
    contextual = False

    def find(self, text: str, prior: Sequence[Finding]) -> Iterator[Finding]:
        if digit_count(text) < 6:
            return
        for m in _NINO_TAIL.finditer(text):
            head = _NINO_HEAD.search(text, max(0, m.start() - 5), m.start())
            if head is None:
                continue
            start = m.start() - len(head.group(1))
            if nino_valid(compact(text[start : m.end()])):
                yield Finding("UK_NINO", start, m.end(), 0.85)

    def canonical(self, kind: str, value: str) -> str:
        return compact(value)


def default_recognizers() -> list[Recognizer]:
    """The dependency-free recogniser set the default engine uses."""
    return [
        EmailRecognizer(),
        IbanRecognizer(),
        IpAddressRecognizer(),
        UkNinoRecognizer(),
        CardSsnPhoneRecognizer(),
        PhoneRecognizer(),
        ContextualNumberRecognizer(),
    ]
