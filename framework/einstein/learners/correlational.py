"""Correlational learners: polynomial and spline regression, k nearest neighbours, a small MLP.

They fit the data and predict; none returns a formula. All share one preprocessing
(:func:`~framework.einstein.learners.base.features` and :class:`TargetScaler`: logs of positive
quantities that span decades, then standardisation), so their numbers differ by model only.
Whatever they score on the probes is measured, not tuned for: the probes lie outside the range of
the data they see, and extrapolation is the point of the test.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Ridge
from sklearn.neighbors import KNeighborsRegressor
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, SplineTransformer

from framework.errors import require
from framework.einstein.learners.base import FitData, Learner, LearnerConfig, TargetScaler, features, seed_of


@dataclass
class PolyConfig(LearnerConfig):
    name: str = "poly"
    degree: int = 3
    alpha: float = 1e-6  # ridge penalty on standardised features

    def __post_init__(self):
        require(1 <= self.degree <= 8, "degree", f"must be in 1..8, got {self.degree}")
        require(self.alpha >= 0, "alpha", f"must be >= 0, got {self.alpha}")


@dataclass
class SplineConfig(LearnerConfig):
    name: str = "spline"
    n_knots: int = 6
    degree: int = 3
    alpha: float = 1e-4

    def __post_init__(self):
        require(self.n_knots >= 2, "n_knots", f"must be >= 2, got {self.n_knots}")
        require(1 <= self.degree <= 5, "degree", f"must be in 1..5, got {self.degree}")


@dataclass
class KNNConfig(LearnerConfig):
    name: str = "knn"
    k: int = 5

    def __post_init__(self):
        require(self.k >= 1, "k", f"must be >= 1, got {self.k}")


@dataclass
class MLPConfig(LearnerConfig):
    name: str = "mlp"
    hidden: list[int] | None = None  # default [64, 64]
    max_iter: int = 2000
    alpha: float = 1e-4

    def __post_init__(self):
        self.hidden = list(self.hidden or [64, 64])
        require(all(h >= 1 for h in self.hidden), "hidden", f"every layer needs >= 1 unit, got {self.hidden}")
        require(self.max_iter >= 1, "max_iter", f"must be >= 1, got {self.max_iter}")


class _Regressor(Learner):
    sees = ("train", "anomalies")

    def model(self, rng: np.random.Generator):
        raise NotImplementedError

    def fit(self, data: FitData, rng):
        x, y = data.xy()
        self.reference_x = x
        self.scaler = TargetScaler(y)
        self.regressor = self.model(rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.regressor.fit(features(x, x), self.scaler.forward(y))

    def predict(self, x):
        return self.scaler.inverse(self.regressor.predict(features(x, self.reference_x)))


class PolyLearner(_Regressor):
    name = "poly"

    def model(self, rng):
        return make_pipeline(PolynomialFeatures(self.config.degree), Ridge(alpha=self.config.alpha))


class SplineLearner(_Regressor):
    name = "spline"

    def model(self, rng):
        c = self.config
        return make_pipeline(SplineTransformer(n_knots=c.n_knots, degree=c.degree, extrapolation="linear"), Ridge(alpha=c.alpha))


class KNNLearner(_Regressor):
    name = "knn"

    def model(self, rng):
        return KNeighborsRegressor(n_neighbors=min(self.config.k, self.n_points), weights="distance")

    def fit(self, data, rng):
        self.n_points = len(data.xy()[1])
        super().fit(data, rng)


class MLPLearner(_Regressor):
    name = "mlp"

    def model(self, rng):
        c = self.config
        return MLPRegressor(hidden_layer_sizes=tuple(c.hidden), alpha=c.alpha, max_iter=c.max_iter, tol=1e-6, random_state=seed_of(rng))
