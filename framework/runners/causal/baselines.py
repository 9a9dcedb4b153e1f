"""Baselines for the causal harness: plain ``str -> str`` functions, and the exact answer with noise.

The functions read only the prompt (its last sentence says the answer format: ``render.ANSWER_TEXT``),
so they score as any model would: ``adapter=callable adapter.function=framework.runners.causal.baselines:always_yes``.
:class:`NoisyOracle` knows the query set (``adapter=oracle``): with ``flip=0`` and ``noise=0`` it is the
ceiling (every answer right); its noise is drawn per query from the query's id, so it is reproducible.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

from framework.causal.queryset import CausalQuery
from framework.seeds import derive_seed


def _kind(prompt: str) -> str:
    if prompt.rstrip().endswith("Answer with a number."):
        return "number"
    if "Answer with the list of variables" in prompt[-80:]:
        return "set"
    return "yes_no"


def always_yes(prompt: str) -> str:
    """Yes; 0.5 for a number; no variable for a set."""
    return {"yes_no": "Yes", "number": "0.5", "set": "none"}[_kind(prompt)]


def always_no(prompt: str) -> str:
    """No; 0 for a number; no variable for a set."""
    return {"yes_no": "No", "number": "0", "set": "none"}[_kind(prompt)]


def coin(prompt: str) -> str:
    """A fair coin per prompt (a hash of its text), a uniform number in [0, 1] for numbers."""
    u = int(hashlib.sha256(prompt.encode()).hexdigest()[:12], 16) / 16**12
    return {"yes_no": "Yes" if u < 0.5 else "No", "number": f"{u:.4f}", "set": "none"}[_kind(prompt)]


def exact_text(query: CausalQuery) -> str:
    """The exact answer as a model would write it."""
    if query.answer_kind == "yes_no":
        return "Yes" if query.answer else "No"
    if query.answer_kind == "number":
        return repr(float(query.answer))
    names = [query.variables.get(v, v) for v in query.answer]
    return ", ".join(names) if names else "none"


class NoisyOracle:
    """The exact answer, a yes/no flipped with probability ``flip``, a number plus N(0, noise^2)."""

    def __init__(self, queries: Iterable[CausalQuery], flip: float = 0.0, noise: float = 0.0, seed: int = 0):
        self.flip, self.noise, self.seed = flip, noise, seed
        self.by_prompt = {q.prompt: q for q in queries}

    def __call__(self, prompt: str) -> str:
        query = self.by_prompt[prompt]  # a KeyError is this prompt's failed call: not a query of the set
        rng = np.random.default_rng(derive_seed(self.seed, "oracle", query.id))
        if query.answer_kind == "yes_no":
            answer = query.answer != bool(rng.random() < self.flip)
            return "Yes" if answer else "No"
        if query.answer_kind == "number":
            return repr(float(query.answer + (self.noise * rng.standard_normal() if self.noise else 0.0)))
        return exact_text(query)
