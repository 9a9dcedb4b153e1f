"""Reading answers out of model text: yes/no, numbers, probabilities.

Every parser returns a :class:`Parsed`; text it cannot read is a failure with a reason (``ok`` is
False), never an exception and never dropped, so a scorer counts it as wrong (:func:`matches`).

Where the answer is: the text after the last final-answer marker ("Final answer:", "The answer
is", "Answer:", "####", ``\\boxed{...}``), else the whole text. Numbers inside probability
expressions such as ``P(Y=1 | do(X=0))`` are the question echoed, not an answer, and are skipped.
With a marker the first number after it is the answer; without one the last number in the text is
(the usual "flexible" convention), or, with ``strict=True``, the only one.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

KINDS = ("yes_no", "number", "probability")


@dataclass(frozen=True)
class Parsed:
    value: bool | float | None  # bool for yes_no, float for number and probability; None on failure
    ok: bool
    kind: str
    reason: str = ""  # why not, when not ok
    span: str = ""  # the text the value was read from

    @classmethod
    def fail(cls, kind: str, reason: str, span: str = "") -> "Parsed":
        return cls(None, False, kind, reason, span)


# -- where the answer is ----------------------------------------------------------------------------

_BOXED = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_MARKER = re.compile(r"(?:####|\bfinal\s+answer\b\s*(?:is\b|[:=])?|\banswer\s*(?:is\b|[:=]))", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`]+")
# P(...) / Pr(...) / E[...] with one level of nesting: P(Y=1 | do(X=0)).
_PROB_EXPR = re.compile(r"\b(?:P|Pr|E)\s*(?:\((?:[^()]|\([^()]*\))*\)|\[(?:[^\[\]]|\[[^\[\]]*\])*\])")


def answer_segment(text: str) -> tuple[str, bool]:
    """(the part of ``text`` holding the answer, whether a final-answer marker located it)."""
    text = _MARKUP.sub("", text)
    boxed = _BOXED.findall(text)
    if boxed:
        return boxed[-1].strip(), True
    last = None
    for last in _MARKER.finditer(text):
        pass
    if last is not None:
        return text[last.end():].strip(), True
    return text.strip(), False


# -- numbers ---------------------------------------------------------------------------------------

_SUPERSCRIPT = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_SUP_RUN = re.compile(r"[⁻⁺]?[⁰¹²³⁴⁵⁶⁷⁸⁹]+")
_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+(?![\d,])|\d+)(?:\.\d+)?|\.\d+"
_NUM = rf"[-+]?(?:{_UNSIGNED})"
_EXP = r"[-+]?\d+"
_NUMBER = re.compile(
    rf"""(?<![\w.])(?:
        \\[dt]?frac\s*\{{\s*(?P<fn>{_NUM})\s*\}}\s*\{{\s*(?P<fd>{_NUM})\s*\}}
      | (?P<n>{_NUM})\s*/\s*(?P<d>{_UNSIGNED})(?![\d/])
      | (?P<m>{_NUM})\s*(?:[x×*·]|\\times|\\cdot)\s*10\s*\^\s*\{{?\s*(?P<e10>{_EXP})\s*\}}?
      | (?P<v>{_NUM})(?:[eE](?P<e>{_EXP}))?
    )(?P<pct>\s*(?:%|\\%|\s+percent\b))?""",
    re.VERBOSE | re.IGNORECASE,
)


def _normalise_number_text(text: str) -> str:
    text = text.replace("\u2212", "-").replace("\u2013", "-")  # unicode minus, en dash
    return _SUP_RUN.sub(lambda m: "^" + m.group(0).translate(_SUPERSCRIPT), text)


def _exact(s: str) -> Fraction:
    return Fraction(s.replace(",", ""))


def _value(m: re.Match[str], percent_as_fraction: bool) -> float | None:
    """The number a match spells, computed exactly and rounded once (so "0.1%" is float("0.001"))."""
    g = m.groupdict()
    exponent = g["e10"] if g["m"] is not None else g["e"]
    if exponent is not None and abs(int(exponent)) > 400:  # beyond float range either way
        return None
    if g["fn"] is not None or g["n"] is not None:
        num, den = (g["fn"], g["fd"]) if g["fn"] is not None else (g["n"], g["d"])
        if _exact(den) == 0:
            return None
        value = _exact(num) / _exact(den)
    elif g["m"] is not None:
        value = _exact(g["m"]) * Fraction(10) ** int(g["e10"])
    else:
        value = _exact(g["v"]) * Fraction(10) ** int(g["e"] or 0)
    if g["pct"] and percent_as_fraction:
        value /= 100
    result = float(value)
    return result if math.isfinite(result) else None


def find_numbers(text: str, percent_as_fraction: bool = True) -> list[tuple[float, str]]:
    """Every number in ``text`` as (value, the text it came from), in order; probability expressions skipped."""
    text = _PROB_EXPR.sub(" ", _normalise_number_text(text))
    found = []
    for m in _NUMBER.finditer(text):
        try:
            value = _value(m, percent_as_fraction)
        except (OverflowError, ValueError, ZeroDivisionError):  # float() of a 1000-digit number
            value = None
        if value is not None:
            found.append((value, m.group(0).strip()))
    return found


def parse_number(text: str | None, *, strict: bool = False, percent_as_fraction: bool = True) -> Parsed:
    """A number: ``0.25``, ``-3``, ``1,234.5``, ``3/7``, ``\\frac{3}{7}``, ``42%`` (0.42), ``1.5e-3``,
    ``1.5 × 10^-3``."""
    kind = "number"
    if not text or not text.strip():
        return Parsed.fail(kind, "empty answer")
    segment, marked = answer_segment(text)
    numbers = find_numbers(segment if marked else text, percent_as_fraction)
    if not numbers:
        return Parsed.fail(kind, "no number found" + (" after the answer marker" if marked else ""), segment[:80])
    if marked:
        return Parsed(numbers[0][0], True, kind, span=numbers[0][1])
    if strict and len({v for v, _ in numbers}) > 1:
        return Parsed.fail(kind, f"{len(numbers)} different numbers and no answer marker", segment[:80])
    return Parsed(numbers[-1][0], True, kind, span=numbers[-1][1])


def parse_probability(text: str | None, *, strict: bool = False) -> Parsed:
    """A number in [0, 1] (percentages allowed: ``42%`` is 0.42); outside it is a failure."""
    p = parse_number(text, strict=strict)
    if not p.ok:
        return Parsed.fail("probability", p.reason, p.span)
    if not 0.0 <= p.value <= 1.0:  # type: ignore[operator]
        return Parsed.fail("probability", f"{p.value:g} is not a probability", p.span)
    return Parsed(p.value, True, "probability", span=p.span)


# -- yes / no --------------------------------------------------------------------------------------

_POLARITY = {"yes": True, "yeah": True, "yep": True, "yup": True, "true": True, "correct": True,
             "affirmative": True, "no": False, "nope": False, "nah": False, "false": False, "incorrect": False}
_YES_NO = re.compile(r"(?P<neg>\bnot\s+|n't\s+)?\b(?P<w>" + "|".join(_POLARITY) + r")\b", re.IGNORECASE)
_BOTH = re.compile(r"^\W*(?:yes|no)\s*(?:and|or|/)\s*(?:yes|no)\b", re.IGNORECASE)
_HEDGE = re.compile(r"\b(?:no idea|not sure|unsure|(?:do not|don't) know|(?:cannot|can't|can not) (?:be )?"
                    r"(?:determined?|tell|told|say)|unclear|uncertain|unknown|it depends|"
                    r"(?:insufficient|not enough) information)\b", re.IGNORECASE)
_LEADING = re.compile(r"^[\W\s]*(?P<w>" + "|".join(_POLARITY) + r"|y|n)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> Parsed:
    """Yes or no: ``"Yes."``, ``"no, because ..."``, ``"**Answer:** No"``, ``"That is not true"`` (no), ``"True"``.

    A leading yes/no word is the answer ("No, it is not true that ..." is no); otherwise every
    yes/no word in the answer must agree ("not true" counts as no, "not false" as yes); "yes and
    no", mixed answers and hedges ("no idea", "it depends", "cannot be determined") are failures.
    """
    kind = "yes_no"
    if not text or not text.strip():
        return Parsed.fail(kind, "empty answer")
    segment, _ = answer_segment(text)
    if not segment:
        return Parsed.fail(kind, "nothing after the answer marker")
    if _BOTH.match(segment):
        return Parsed.fail(kind, "both yes and no", segment[:80])
    lead = _LEADING.match(segment)
    if lead:
        word = lead.group("w").lower()
        value = {"y": True, "n": False}.get(word, _POLARITY.get(word))
        rest = segment[lead.end():]
        # "Yes." / "No, ..." / a bare "y": a leading word answers, unless it starts a hedge ("no idea")
        if (word not in ("y", "n") or not rest.strip()) and not _HEDGE.match(segment[lead.start("w"):]):
            return Parsed(value, True, kind, span=lead.group(0).strip())
    if _HEDGE.search(segment):
        return Parsed.fail(kind, "hedged", segment[:80])
    votes = [_POLARITY[m.group("w").lower()] != bool(m.group("neg")) for m in _YES_NO.finditer(segment)]
    if not votes:
        return Parsed.fail(kind, "no yes/no found", segment[:80])
    if len(set(votes)) > 1:
        return Parsed.fail(kind, "both yes and no", segment[:80])
    return Parsed(votes[0], True, kind, span=segment[:80])


# -- one entry point, and scoring -----------------------------------------------------------------

def parse(answer: Any, kind: str, **kw: Any) -> Parsed:
    """Parse an :class:`~framework.adapters.store.Answer`, a string, or None; a failed call is a failure."""
    if kind not in KINDS:
        raise ValueError(f"unknown answer kind {kind!r}; choose one of: {', '.join(KINDS)}")
    text = answer
    if hasattr(answer, "ok") and hasattr(answer, "text"):
        if not answer.ok:
            return Parsed.fail(kind, f"no answer: {answer.error}")
        text = answer.text
    if kind == "yes_no":
        return parse_yes_no(text)
    return (parse_number if kind == "number" else parse_probability)(text, **kw)


def matches(parsed: Parsed, target: bool | float, *, abs_tol: float = 0.0, rel_tol: float = 0.0) -> bool:
    """Whether a parsed answer is right; a parse failure is wrong."""
    if not parsed.ok:
        return False
    if isinstance(target, bool) or isinstance(parsed.value, bool):
        return parsed.value is target
    return math.isclose(float(parsed.value), float(target), rel_tol=rel_tol, abs_tol=abs_tol)  # type: ignore[arg-type]
