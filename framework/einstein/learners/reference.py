"""Reference learners: the old theory (t = 0 by construction) and the new one (the oracle, t = 1).

They bound every score and check the scorer: on every world the oracle must score t = 1 and the
old theory t = 0. They are the only learners allowed to see the instance's laws.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from framework.einstein.learners.base import FitData, Learner, LearnerConfig


@dataclass
class OldTheoryConfig(LearnerConfig):
    name: str = "old_theory"


@dataclass
class OracleConfig(LearnerConfig):
    name: str = "oracle"


class _Reference(Learner):
    sees = ("train", "laws")
    reference = True
    which = "old"

    def fit(self, data: FitData, rng: np.random.Generator) -> None:
        self.laws = data.laws

    def predict(self, x):
        return getattr(self.laws, self.which)(x)

    def formula(self):
        return getattr(self.laws, f"expr_{self.which}")


class OldTheoryLearner(_Reference):
    name = "old_theory"
    which = "old"


class OracleLearner(_Reference):
    name = "oracle"
    which = "new"
