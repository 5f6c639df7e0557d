"""Property tests for PII redaction: generated values, obfuscated, are always found."""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aevos.pii import Redactor, normalize
from aevos.pii.checksums import IBAN_LENGTHS, iban_check_digits, luhn_check_digit

REDACTOR = Redactor()
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

INVISIBLE = ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u00ad"]
# Filler holds no digits, so any digit left after redaction is a leak.
WORDS = [
    "hello", "refund", "please", "claim", "urgent", "account", "thanks", "card", "order",
    "the", "and", "my", "at", "dot", "for", "blocked", "Ticket", "ASAP", "re:", "--",
]  # fmt: skip
filler = st.lists(st.sampled_from(WORDS), max_size=8).map(" ".join)


def fullwidth(s: str) -> str:
    return "".join(chr(0xFF10 + int(c)) if c.isdigit() else c for c in s)


def arabic_indic(s: str) -> str:
    return "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in s)


@st.composite
def sprinkle(draw: st.DrawFn, s: str) -> str:
    """Invisible characters inserted at random positions inside ``s``."""
    out = list(s)
    for _ in range(draw(st.integers(0, 4))):
        out.insert(draw(st.integers(1, max(1, len(out) - 1))), draw(st.sampled_from(INVISIBLE)))
    return "".join(out)


@st.composite
def digit_glyphs(draw: st.DrawFn, s: str) -> str:
    return draw(st.sampled_from([s, fullwidth(s), arabic_indic(s)]))


@st.composite
def cards(draw: st.DrawFn) -> tuple[str, str]:
    prefix = draw(st.sampled_from(["4", "51", "55", "2221", "37", "6011", "35"]))
    length = draw(st.sampled_from([13, 15, 16, 16, 16, 19])) if prefix == "4" else 16
    body = prefix + "".join(
        draw(st.lists(st.sampled_from("0123456789"), min_size=length - len(prefix) - 1, max_size=length - len(prefix) - 1))
    )  # fmt: skip
    number = body + luhn_check_digit(body)
    layout = draw(st.sampled_from(["plain", "fours", "digits"]))
    if layout == "fours":
        sep = draw(st.sampled_from([" ", "-", ".", "/", "\n", " - ", "\r\n"]))
        shown = sep.join(number[i : i + 4] for i in range(0, len(number), 4))
    elif layout == "digits":
        shown = draw(st.sampled_from([" ", ".", "-"])).join(number)
    else:
        shown = number
    shown = draw(digit_glyphs(shown))
    return "CREDIT_CARD", draw(sprinkle(shown))


@st.composite
def ibans(draw: st.DrawFn) -> tuple[str, str]:
    country = draw(st.sampled_from(["DE", "GB", "FR", "NL", "ES", "IT", "CH", "NO", "BE", "PL"]))
    n = IBAN_LENGTHS[country] - 4
    letters = 4 if country in ("GB", "NL") else 1 if country == "IT" else 0
    bban = draw(st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=letters, max_size=letters))
    bban += draw(st.text("0123456789", min_size=n - letters, max_size=n - letters))
    iban = country + iban_check_digits(country, bban) + bban
    if draw(st.booleans()):
        iban = draw(st.sampled_from([" ", "-", "\n"])).join(
            iban[i : i + 4] for i in range(0, len(iban), 4)
        )
    if draw(st.booleans()):
        iban = iban.lower()
    return "IBAN", draw(sprinkle(draw(digit_glyphs(iban))))


NAMES = ["john", "jane.doe", "a.b", "x_y", "claims-team", "m42", "o'brien".replace("'", "")]
DOMAINS = ["example", "mail.example", "bank-1", "corp.example"]
TLDS = ["com", "org", "net", "de", "co.uk", "io"]


@st.composite
def emails(draw: st.DrawFn) -> tuple[str, str]:
    local = draw(st.sampled_from(NAMES))
    domain = draw(st.sampled_from(DOMAINS)) + "." + draw(st.sampled_from(TLDS))
    style = draw(st.sampled_from(["plain", "paren", "bracket", "spoken", "entity", "fullwidth", "spaced", "brace"]))  # fmt: skip
    at, dot = {
        "plain": ("@", "."),
        "paren": ("(at)", "(dot)"),
        "bracket": (" [at] ", " [dot] "),
        "spoken": (" at ", " dot "),
        "entity": ("&#64;", "&#46;"),
        "fullwidth": ("\uff20", "\uff0e"),
        "spaced": (" @ ", " . "),
        "brace": ("{at}", "{dot}"),
    }[style]
    shown = local.replace(".", dot) + at + domain.replace(".", dot)
    if draw(st.booleans()):
        shown = shown.upper()
    if style != "entity":
        shown = draw(sprinkle(shown))
    return "EMAIL", shown


@st.composite
def ips(draw: st.DrawFn) -> tuple[str, str]:
    if draw(st.booleans()):
        ip = str(ipaddress.IPv4Address(draw(st.integers(0x01000000, 2**32 - 1))))
        ip = draw(st.sampled_from([ip, ip.replace(".", "[.]"), fullwidth(ip)]))
    else:
        ip = str(ipaddress.IPv6Address(draw(st.integers(2**64, 2**128 - 1))))
    return "IP_ADDRESS", ip


pii = st.one_of(cards(), ibans(), emails(), ips())


@PROPERTY
@given(pii, filler, filler)
def test_generated_pii_embedded_anywhere_is_always_redacted(
    value: tuple[str, str], before: str, after: str
) -> None:
    kind, shown = value
    start = len(before) + 1
    text = f"{before} {shown} {after}"
    redaction = REDACTOR.redact(text)
    covering = [f for f in redaction.findings if f.start <= start and f.end >= start + len(shown)]
    assert covering, (text, redaction.findings)
    assert covering[0].kind == kind
    left = normalize(redaction.text).text
    if kind in ("CREDIT_CARD", "IBAN") or (kind == "IP_ADDRESS" and "." in normalize(shown).text):
        assert not any(c.isdigit() for c in left), redaction.text


ALPHABET = "ab x@.-()[]+/:\n0123456789\u200b\uff11\u00ad"
TOKENS = [
    "at", " dot ", "phone ", "SSN ", "4111", "1111", "+44", "DE89", "&#64;", "<b>", "0", "555",
    "<EMAIL>", "<PHONE_1>", "com", "\u0336", "ﬀ", "&amp;",
]  # fmt: skip
noisy_text = st.lists(
    st.one_of(st.sampled_from(TOKENS), st.text(ALPHABET, max_size=6)), max_size=25
).map("".join)


@PROPERTY
@given(st.one_of(noisy_text, st.builds(lambda a, v, b: f"{a} {v[1]} {b}", filler, pii, filler)))
def test_redaction_is_idempotent(text: str) -> None:
    for numbered in (False, True):
        once = REDACTOR.redact(text, numbered=numbered).text
        assert REDACTOR.redact(once, numbered=numbered).text == once


@PROPERTY
@given(noisy_text, st.data())
def test_normaliser_offsets_map_back(text: str, data: st.DataObject) -> None:
    norm = normalize(text)
    n = len(norm.text)
    previous = (0, 0)
    for i in range(n):
        s, e = norm.source_span(i, i + 1)
        assert 0 <= s < e <= len(text)
        assert (s, e) >= previous
        previous = (s, e)
        assert norm.text[i] in normalize(text[s:e]).text
    if n:
        a = data.draw(st.integers(0, n - 1))
        b = data.draw(st.integers(a + 1, n))
        s, e = norm.source_span(a, b)
        assert norm.text[a:b] in normalize(text[s:e]).text
    # Detection spans always map to whole, in-range source spans.
    for f in REDACTOR.detect(text):
        assert 0 <= f.start < f.end <= len(text)
