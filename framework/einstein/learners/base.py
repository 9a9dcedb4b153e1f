"""The learner interface of the Einstein test: fit on what it may see, predict the probes.

A learner declares, in ``sees``, the fields of :class:`FitData` it asks for. The protocol hands it
exactly those and refuses, with a ConfigError before any compute, a learner that asks for a field no
learner may see during fit (the probes, their answers, the names of the laws) or one reserved for
the reference learners (the laws themselves). Probe inputs reach a learner only through
:meth:`Learner.predict`, after fit.

Adapters to come plug in here unchanged: an in-context sequence learner (PFN style) fits by
storing the data as its context and predicts by a forward pass; an external text model (LLM)
adapter receives ``variables`` and ``output`` with the data, as text, and may return a formula.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import sympy as sp

from framework.errors import ConfigError

VISIBLE = ("train", "anomalies", "variables")  # what any learner may ask for during fit
REFERENCE_ONLY = ("laws",)  # the old and new law of the instance: reference learners only
NEVER = ("probes", "probe_answers", "law_names", "constants")  # what no learner sees during fit


@dataclass
class LearnerConfig:
    """Fields every learner config carries. ``sees`` overrides the learner's declared fields."""

    name: str = "?"
    sees: list[str] | None = None


@dataclass
class Laws:
    """What a reference learner sees: the instance's two laws, as callables and sympy forms."""

    old: Callable[[np.ndarray], np.ndarray]
    new: Callable[[np.ndarray], np.ndarray]
    expr_old: sp.Expr
    expr_new: sp.Expr


@dataclass
class FitData:
    """The data handed to ``fit``; a field the learner did not ask for is None."""

    x_train: np.ndarray | None = None  # (N, d)
    y_train: np.ndarray | None = None  # (N,)
    x_anomaly: np.ndarray | None = None  # (K, d), K may be 0 (the anomaly curve starts there)
    y_anomaly: np.ndarray | None = None
    variables: tuple[str, ...] | None = None  # the displayed input names
    output: str | None = None
    laws: Laws | None = None

    def xy(self) -> tuple[np.ndarray, np.ndarray]:
        """Train and anomaly points together (what most learners fit on)."""
        xs, ys = [self.x_train], [self.y_train]
        if self.x_anomaly is not None and len(self.x_anomaly):
            xs.append(self.x_anomaly)
            ys.append(self.y_anomaly)
        return np.concatenate(xs), np.concatenate(ys)


class Learner(abc.ABC):
    name: str
    sees: ClassVar[tuple[str, ...]] = ("train", "anomalies")
    reference: ClassVar[bool] = False  # reference learners may see the laws

    def __init__(self, config: LearnerConfig):
        self.config = config

    def visible(self) -> tuple[str, ...]:
        return tuple(self.config.sees) if self.config.sees is not None else tuple(self.sees)

    @abc.abstractmethod
    def fit(self, data: FitData, rng: np.random.Generator) -> None:
        """Learn from ``data``; must not need anything it did not declare in ``sees``."""

    @abc.abstractmethod
    def predict(self, x: np.ndarray) -> np.ndarray:
        """(N, d) -> (N,) predictions, after fit."""

    def formula(self) -> sp.Expr | None:
        """The fitted law as a sympy expression in the displayed variable names, or None."""
        return None


def check_visibility(learner: Learner, field: str = "learner.sees") -> None:
    """A ConfigError, before compute, when a learner asks for data it may not see."""
    for item in learner.visible():
        if item in NEVER:
            raise ConfigError(field, f"learner {learner.name!r} asks for {item!r}, which no learner may see during fit")
        if item in REFERENCE_ONLY and not learner.reference:
            raise ConfigError(field, f"learner {learner.name!r} asks for {item!r}, which only reference learners may see")
        if item not in VISIBLE + REFERENCE_ONLY:
            raise ConfigError(field, f"learner {learner.name!r} asks for unknown data {item!r}; choose from: {', '.join(VISIBLE + REFERENCE_ONLY)}")
    if "train" not in learner.visible():
        raise ConfigError(field, f"learner {learner.name!r} must see 'train'")


def features(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Log of every positive column that spans over a decade in ``reference``, then standardised.

    The correlational learners share this, so their numbers differ by model, not by preprocessing.
    """
    x = np.asarray(x, dtype=float).copy()
    ref = np.asarray(reference, dtype=float).copy()
    for j in range(x.shape[1]):
        col = ref[:, j]
        if np.all(col > 0) and col.max() / col.min() > 10:
            ref[:, j] = np.log(col)
            x[:, j] = np.log(np.maximum(x[:, j], 1e-300))
    mu, sd = ref.mean(0), ref.std(0)
    sd[sd == 0] = 1.0
    return (x - mu) / sd


class TargetScaler:
    """Log of a positive target spanning over a decade, then standardised; and back."""

    def __init__(self, y: np.ndarray):
        y = np.asarray(y, dtype=float)
        self.log = bool(np.all(y > 0) and y.max() / y.min() > 10)
        z = np.log(y) if self.log else y
        self.mu, self.sd = float(z.mean()), float(z.std()) or 1.0

    def forward(self, y: np.ndarray) -> np.ndarray:
        z = np.log(y) if self.log else y
        return (z - self.mu) / self.sd

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float) * self.sd + self.mu
        return np.exp(np.clip(z, -700, 700)) if self.log else z


def seed_of(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))
