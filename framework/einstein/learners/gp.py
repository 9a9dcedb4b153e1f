"""Genetic-programming symbolic regression with gplearn (Stephens, gplearn 0.4).

gplearn 0.4.3 imports and runs beside scikit-learn 1.9 (checked by the tests). Its program is
parsed into a sympy formula; its protected operators (``div`` returns 1 for a divisor under 0.001,
``sqrt`` and ``log`` take absolute values, ``inv`` likewise) are written as the plain operators, so the
formula equals the program wherever the program stays clear of those guards. It fits on the same
standardised features as the correlational learners, and the formula maps them back.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from framework.errors import require
from framework.einstein.learners.base import FitData, Learner, LearnerConfig, seed_of


@dataclass
class GPLearnConfig(LearnerConfig):
    name: str = "gplearn"
    population_size: int = 500
    generations: int = 10
    parsimony_coefficient: float = 0.001
    function_set: list[str] | None = None  # default: add sub mul div sqrt inv neg

    def __post_init__(self):
        self.function_set = list(self.function_set or ["add", "sub", "mul", "div", "sqrt", "inv", "neg"])
        require(self.population_size >= 10, "population_size", f"must be >= 10, got {self.population_size}")
        require(self.generations >= 1, "generations", f"must be >= 1, got {self.generations}")


_SYMPY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "sqrt": lambda a: sp.sqrt(a),
    "log": lambda a: sp.log(a),
    "inv": lambda a: 1 / a,
    "neg": lambda a: -a,
    "abs": lambda a: sp.Abs(a),
    "sin": sp.sin,
    "cos": sp.cos,
    "tan": sp.tan,
    "max": sp.Max,
    "min": sp.Min,
}


def program_to_sympy(program: list, symbols: tuple) -> sp.Expr:
    """A gplearn program (prefix list of _Function, int feature index, float constant) -> sympy."""
    stack: list[list] = []
    for node in program:
        if hasattr(node, "arity"):
            stack.append([node.name, node.arity])
            continue
        value = symbols[node] if isinstance(node, (int, np.integer)) else sp.Float(node)
        while stack:
            stack[-1].append(value)
            name, arity, *args = stack[-1]
            if len(args) < arity:
                break
            stack.pop()
            value = _SYMPY[name](*args)
        else:
            return value
    raise ValueError("incomplete gplearn program")


class GPLearner(Learner):
    name = "gplearn"
    sees = ("train", "anomalies", "variables")

    def fit(self, data: FitData, rng):
        from gplearn.genetic import SymbolicRegressor  # imported here: optional until used

        x, y = data.xy()
        c = self.config
        self.mu_x, self.sd_x = x.mean(0), x.std(0)
        self.sd_x[self.sd_x == 0] = 1.0
        self.mu_y, self.sd_y = float(y.mean()), float(y.std()) or 1.0
        self.regressor = SymbolicRegressor(
            population_size=c.population_size,
            generations=c.generations,
            function_set=tuple(c.function_set),
            parsimony_coefficient=c.parsimony_coefficient,
            random_state=seed_of(rng),
            n_jobs=1,
        )
        self.regressor.fit((x - self.mu_x) / self.sd_x, (y - self.mu_y) / self.sd_y)
        names = data.variables or tuple(f"x{i}" for i in range(x.shape[1]))
        self.symbols = tuple(sp.Symbol(v, positive=True) for v in names)

    def predict(self, x):
        z = self.regressor.predict((np.asarray(x, dtype=float) - self.mu_x) / self.sd_x)
        return z * self.sd_y + self.mu_y

    def formula(self):
        scaled = tuple((s - float(m)) / float(d) for s, m, d in zip(self.symbols, self.mu_x, self.sd_x))
        return program_to_sympy(self.regressor._program.program, scaled) * self.sd_y + self.mu_y
