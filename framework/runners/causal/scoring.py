"""Scoring answers to causal queries: per query an outcome, per stratum accuracy, error and bits.

Per query: a failed call and an unparseable answer are wrong (and counted apart); a query the adapter
cannot be asked is "not answerable" (counted, outside the accuracy). Yes/no answers must match; a
number is right within ``number_tol`` of the exact value, and its absolute error is kept; where the
number is a probability (``PROBABILITY_TYPES``) it also scores ``kl_bits`` = KL(Bernoulli(p) ||
Bernoulli(p_hat)), the stated p_hat clipped to [eps, 1 - eps]; a set answer is right when it meets
the backdoor criterion (any valid adjustment set is right, not only the minimal one given).
Per stratum (all, each rung, query type, source, graph, naming variant, answer kind): mean ± standard
error over queries and the counts behind each.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from framework.adapters.parsing import answer_segment, parse_number, parse_yes_no
from framework.adapters.store import Answer
from framework.causal.graphs import DAG
from framework.causal.querygen import valid_adjustment
from framework.causal.queryset import CausalQuery

PROBABILITY_TYPES = ("marginal", "correlation", "exp_away", "det-counterfactual", "pn", "ps")
STATUSES = ("right", "wrong", "parse_failed", "call_failed", "not_answerable")
_NONE = re.compile(r"\b(?:none|nothing|no variables?(?: at all)?|the empty set|empty set|no adjustment)\b|^\W*(?:\{\s*\}|\[\s*\]|∅)\W*$",
                   re.IGNORECASE)


@dataclass
class Outcome:
    id: str
    rung: int
    query_type: str
    source: str
    graph: str
    names: str
    answer_kind: str
    status: str  # one of STATUSES
    correct: bool | None  # None when not answerable
    abs_error: float | None = None
    kl_bits: float | None = None
    answer: Any = None  # the exact answer
    parsed: Any = None  # what was read from the text
    text: str | None = None
    reason: str = ""  # why not answerable / the call failed / the parse failed

    def record(self) -> dict:
        return asdict(self)


def parse_set(text: str, query: CausalQuery) -> tuple[str, ...] | str:
    """The nodes an answer names (by their text names or node names), or why it names none."""
    segment, _ = answer_segment(text)
    found: dict[str, int] = {}
    rest = segment
    names = {v: query.variables.get(v, v) for v in query.nodes}
    spellings = sorted({(n.lower(), v) for v, n in names.items()} | {(v.lower(), v) for v in query.nodes},
                       key=lambda s: -len(s[0]))
    for spelled, node in spellings:
        pattern = re.compile(rf"(?<![\w-]){re.escape(spelled)}(?![\w-])", re.IGNORECASE)
        for m in pattern.finditer(rest):
            found.setdefault(node, m.start())
        rest = pattern.sub(" ", rest)
    if found:
        return tuple(sorted(found, key=found.get))
    if _NONE.search(segment):
        return ()
    return "names no variable of the graph and not 'none'"


def bernoulli_kl_bits(p: float, q: float) -> float:
    def term(a: float, b: float) -> float:
        return 0.0 if a <= 0 else a * math.log2(a / b)

    return max(0.0, term(p, q) + term(1 - p, 1 - q))


def score_one(query: CausalQuery, answer: Answer | None, refused: str | None, number_tol: float,
              kl_eps: float) -> Outcome:
    base = dict(id=query.id, rung=query.rung, query_type=query.query_type, source=query.source, graph=query.graph,
                names=query.names, answer_kind=query.answer_kind,
                answer=list(query.answer) if isinstance(query.answer, tuple) else query.answer)
    if refused is not None:
        return Outcome(**base, status="not_answerable", correct=None, reason=refused)
    assert answer is not None
    if not answer.ok:
        return Outcome(**base, status="call_failed", correct=False, reason=answer.error or "no text")
    text = answer.text
    if query.answer_kind == "yes_no":
        parsed = parse_yes_no(text)
        if not parsed.ok:
            return Outcome(**base, status="parse_failed", correct=False, text=text, reason=parsed.reason)
        right = parsed.value is query.answer
        return Outcome(**base, status="right" if right else "wrong", correct=right, parsed=parsed.value, text=text)
    if query.answer_kind == "number":
        parsed = parse_number(text)
        if not parsed.ok:
            return Outcome(**base, status="parse_failed", correct=False, text=text, reason=parsed.reason)
        error = abs(float(parsed.value) - float(query.answer))
        right = error <= number_tol + 1e-12
        kl = None
        if query.query_type in PROBABILITY_TYPES:
            q = min(max(float(parsed.value), kl_eps), 1 - kl_eps)
            kl = bernoulli_kl_bits(float(query.answer), q)
        return Outcome(**base, status="right" if right else "wrong", correct=right, abs_error=error, kl_bits=kl,
                       parsed=parsed.value, text=text)
    chosen = parse_set(text or "", query)
    if isinstance(chosen, str):
        return Outcome(**base, status="parse_failed", correct=False, text=text, reason=chosen)
    dag = DAG(query.nodes, query.edges, query.latent)
    right = valid_adjustment(dag, query.treatment, query.outcome, chosen)
    return Outcome(**base, status="right" if right else "wrong", correct=right, parsed=list(chosen), text=text)


def mean_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    n = len(values)
    if n == 0:
        return None, None
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def stratum_metrics(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Accuracy over the queries asked; abs_error and kl_bits over the parsed answers they apply to."""
    asked = [o for o in outcomes if o.status != "not_answerable"]
    acc, acc_se = mean_stderr([float(o.correct) for o in asked])
    errors = [o.abs_error for o in asked if o.abs_error is not None]
    kls = [o.kl_bits for o in asked if o.kl_bits is not None]
    err, err_se = mean_stderr(errors)
    kl, kl_se = mean_stderr(kls)
    count = lambda s: sum(o.status == s for o in outcomes)  # noqa: E731
    return {"n": len(outcomes), "asked": len(asked), "correct": sum(bool(o.correct) for o in asked),
            "accuracy": acc, "accuracy_stderr": acc_se,
            "abs_error": err, "abs_error_stderr": err_se, "n_numbers": len(errors),
            "kl_bits": kl, "kl_bits_stderr": kl_se, "n_distributions": len(kls),
            "parse_failures": count("parse_failed"), "call_failures": count("call_failed"),
            "not_answerable": count("not_answerable")}


def strata(outcomes: Sequence[Outcome], by: Sequence[str]) -> list[dict[str, Any]]:
    """One row per stratum: ``{"by", "stratum", **metrics}``, the whole set first."""
    rows = [{"by": "all", "stratum": "all", **stratum_metrics(outcomes)}]
    for key in by:
        groups: dict[str, list[Outcome]] = defaultdict(list)
        for o in outcomes:
            groups[str(getattr(o, key))].append(o)
        order = sorted(groups, key=lambda s: (int(s) if s.isdigit() else math.inf, s))
        rows += [{"by": key, "stratum": s, **stratum_metrics(groups[s])} for s in order]
    return rows
