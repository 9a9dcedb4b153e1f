"""Answer parsing: yes/no, numbers and probabilities read out of model text; failures are kept, never raised."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.adapters import Answer, matches, parse, parse_number, parse_probability, parse_yes_no
from framework.adapters.parsing import answer_segment, find_numbers


@pytest.mark.parametrize("text, value", [
    ("Yes", True), ("yes.", True), ("YES!", True), ("Yes, X causes Y.", True), ("**Yes**", True),
    ("y", True), ("Yeah", True), ("yep, definitely", True), ("True", True), ("Correct.", True),
    ("No", False), ("no.", False), ("No, it does not.", False), ("no, because the back-door path is open", False),
    ("Nope", False), ("n", False), ("False", False), ("Incorrect", False),
    ("Answer: yes", True), ("**Answer:** No", False), ("The answer is no.", False), ("The answer is: Yes", True),
    ("Let me think. X blocks the path, so Z is independent.\nFinal answer: no", False),
    ("Final Answer: **Yes**", True),
    ("I believe the answer is yes, not no.", True),
    ("That is not true.", False), ("It is not correct to say so.", False), ("That isn't true", False),
    ("This is not false.", True),
    ("After adjusting, I would say yes.", True),
    ("No. Yes would require a direct edge.", False),  # a leading answer wins over later words
    ("  \n- yes", True),
    ("\\boxed{no}", False),
])
def test_yes_no_reads_common_forms(text, value):
    parsed = parse_yes_no(text)
    assert parsed.ok, (text, parsed)
    assert parsed.value is value, (text, parsed)


@pytest.mark.parametrize("text, reason", [
    ("", "empty"), ("   ", "empty"), (None, "empty"),
    ("Yes and no.", "both"), ("yes or no?", "both"), ("yes/no", "both"),
    ("It depends on the noise.", "hedged"), ("No idea.", "hedged"), ("I don't know.", "hedged"),
    ("This cannot be determined from the data.", "hedged"),
    ("Maybe.", "no yes/no"), ("X causes Y.", "no yes/no"),
    ("The first option is true, the second is false.", "both"),
    ("Answer:", "nothing"),
])
def test_yes_no_failures_say_why(text, reason):
    parsed = parse_yes_no(text)
    assert not parsed.ok and parsed.value is None
    assert reason in parsed.reason, (text, parsed)


@pytest.mark.parametrize("text, value", [
    ("0.25", 0.25), ("The answer is 0.25.", 0.25), ("-3", -3.0), ("+2", 2.0), ("1,234.5", 1234.5),
    ("1,000,000", 1e6), (".5", 0.5), ("3/7", 3 / 7), ("3 / 7", 3 / 7), ("-1/4", -0.25),
    ("\\frac{3}{8}", 0.375), ("$\\dfrac{1}{3}$", 1 / 3), ("42%", 0.42), ("12.5 %", 0.125), ("7 percent", 0.07),
    ("1.5e-3", 1.5e-3), ("2E5", 2e5), ("1.5 × 10^-3", 1.5e-3), ("1.5x10^{-3}", 1.5e-3), ("3 \\times 10^{2}", 300.0),
    ("2×10⁻³", 2e-3), ("\u22120.5", -0.5),
    ("P(Y=1 | do(X=0)) = 0.3", 0.3), ("Final answer: P(Y=1)=0.7", 0.7), ("P(Y=1|X=0) is 0.3.", 0.3),
    ("Final answer: 0.3, because Y=1 blocks it", 0.3),
    ("We sum 0.2 and 0.1.\nFinal answer: 0.3", 0.3),
    ("So the probability is 0.12 (12%).\n#### 0.12", 0.12),
    ("\\boxed{0.625}", 0.625), ("answer = 5", 5.0),
    ("X1 and X2 give 0.4", 0.4),  # digits inside variable names are not numbers
    ("**0.35**", 0.35),
])
def test_numbers_read_common_forms(text, value):
    parsed = parse_number(text)
    assert parsed.ok, (text, parsed)
    assert parsed.value == pytest.approx(value, rel=1e-12, abs=0), (text, parsed)


def test_number_conventions():
    assert parse_number("about 0.2, maybe 0.3").value == 0.3  # no marker: the last number
    strict = parse_number("about 0.2, maybe 0.3", strict=True)
    assert not strict.ok and "different numbers" in strict.reason
    assert parse_number("0.3 or 0.3", strict=True).value == 0.3  # the same number twice is not ambiguous
    assert parse_number("42%", percent_as_fraction=False).value == 42.0
    assert parse_number("Answer: 0.1%").value == 0.001  # exact: one rounding, not 0.1 / 100
    assert not parse_number("Final answer: unknown").ok
    assert "after the answer marker" in parse_number("Final answer: unknown").reason
    assert not parse_number("1/0").ok  # no number from a zero denominator; nothing else to read
    assert not parse_number("1e999").ok and not parse_number("1e-9999").ok
    assert not parse_number("no digits here").ok


@pytest.mark.parametrize("text, ok", [("0.3", True), ("0", True), ("1", True), ("30%", True), ("1.2", False),
                                      ("-0.1", False), ("150%", False), ("3/7", True), ("7/3", False)])
def test_probability_range(text, ok):
    parsed = parse_probability(text)
    assert parsed.ok is ok and parsed.kind == "probability"
    if not ok:
        assert "not a probability" in parsed.reason


def test_parse_dispatch_and_scoring():
    good = Answer("q", "a", "The answer is 0.25.")
    failed = Answer("q", "a", None, error="HTTP 500: boom")
    assert parse(good, "probability").value == 0.25
    bad = parse(failed, "yes_no")
    assert not bad.ok and "HTTP 500" in bad.reason
    assert not matches(bad, True)  # a failed call is a wrong answer, counted, not dropped
    assert matches(parse("yes", "yes_no"), True) and not matches(parse("yes", "yes_no"), False)
    assert not matches(parse("maybe", "yes_no"), False)
    assert matches(parse("0.301", "number"), 0.3, abs_tol=0.005)
    assert not matches(parse("0.31", "number"), 0.3, abs_tol=0.005)
    assert not matches(parse_number("1"), True)  # a number is not a yes
    with pytest.raises(ValueError, match="unknown answer kind"):
        parse("x", "colour")


def test_answer_segment():
    assert answer_segment("blah. Answer: A. Final answer: B") == ("B", True)
    assert answer_segment("I cannot answer that") == ("I cannot answer that", False)
    assert answer_segment("\\boxed{x} then answer: y") == ("x", True)  # boxed wins


# -- properties -------------------------------------------------------------------------------------

_TEMPLATES = ["{}", "The answer is {}.", "Final answer: {}", "**Answer:** {}", "I computed it.\n#### {}",
              "After some algebra, P(Y=1 | do(X=0)) = {}", "\\boxed{{{}}}", "Answer: {} (rounded)"]


@settings(max_examples=150, deadline=None)
@given(x=st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), template=st.sampled_from(_TEMPLATES))
def test_any_float_round_trips_through_text(x, template):
    for spelled in {repr(x), f"{x:.6g}", f"{x:e}"}:
        parsed = parse_number(template.format(spelled))
        assert parsed.ok, (spelled, template, parsed)
        assert parsed.value == float(spelled), (spelled, template, parsed)


@settings(max_examples=150, deadline=None)
@given(p=st.integers(-1000, 1000), q=st.integers(1, 1000), template=st.sampled_from(_TEMPLATES))
def test_fractions_are_exact(p, q, template):
    assert parse_number(template.format(f"{p}/{q}")).value == float(Fraction(p, q))
    assert parse_number(template.format(f"\\frac{{{p}}}{{{q}}}")).value == float(Fraction(p, q))


@settings(max_examples=100, deadline=None)
@given(k=st.integers(0, 20_000))
def test_percentages(k):
    assert parse_number(f"about {k / 100:g}%").value == float(Fraction(str(f"{k / 100:g}")) / 100)
    assert parse_probability(f"{k / 100:g}%").ok is (k <= 10_000)


@settings(max_examples=100, deadline=None)
@given(value=st.booleans(), template=st.sampled_from(["{}", "{}.", "{}, because the path is blocked.",
                                                      "Answer: {}", "The answer is {}.", "**{}**", "Final answer: {}"]),
       case=st.sampled_from([str.lower, str.upper, str.capitalize]))
def test_yes_no_round_trips(value, template, case):
    parsed = parse_yes_no(template.format(case("yes" if value else "no")))
    assert parsed.ok and parsed.value is value


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_parsers_never_raise(text):
    for parsed in (parse_yes_no(text), parse_number(text), parse_probability(text), parse_number(text, strict=True)):
        assert parsed.ok is (parsed.value is not None)
        assert parsed.ok or parsed.reason
        if parsed.ok and parsed.kind != "yes_no":
            assert math.isfinite(parsed.value)


@settings(max_examples=100, deadline=None)
@given(xs=st.lists(st.integers(-10**6, 10**6), min_size=1, max_size=6))
def test_find_numbers_finds_each_number_in_order(xs):
    text = " then ".join(f"v{i} is {x}" for i, x in enumerate(xs))  # "v0" is a name, not a number
    assert [v for v, _ in find_numbers(text)] == [float(x) for x in xs]
