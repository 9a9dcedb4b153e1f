"""The world interface of the Einstein test (SPEC §6): an old law, a new law, and their regimes.

A world instance is one randomised universe: constants drawn log-uniformly from declared ranges,
inputs and output renamed, and four point sets drawn from it:

* ``train``: the regime where the old law fits within the noise (checked on every instance);
* ``anomaly``: a small set where the new law departs, without which it is not identifiable;
* ``probe``: where the two laws differ by at least ``PROBE_SIGMA`` noise sds, with exact answers;
* ``regime``: fresh noise-free points from the training regime, for the in-regime control.

Each instance is checked for well-posedness: the new law must have a shorter description length
than the old law plus per-point exceptions, on train + anomaly data together
(:mod:`framework.einstein.description`). Instances that fail are redrawn; the count is reported.

A world subclass supplies its constants, the two laws (vectorised, in displayed units), an
independent reference computation of the new law, sympy forms of both laws, and samplers for its
regimes. Everything else (renaming, noise, probe filtering, well-posedness) lives here.
"""
from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import sympy as sp

from framework.errors import ConfigError, require
from framework.einstein import description

PROBE_SIGMA = 10.0  # probes sit where |y_new - y_old| >= PROBE_SIGMA * sd
# In the training regime |y_new - y_old| <= TRAIN_SIGMA * sd at every point. Half an sd per point is
# not enough: over 64 points the sub-noise curvature adds up and the new law becomes identifiable
# without any anomaly (measured on W4); at 0.1 sd the whole training set carries chi^2 < 1.
TRAIN_SIGMA = 0.1
NAME_POOL = (
    "a b d f g h j k p q s w z alpha gamma delta eta zeta theta iota kappa mu nu xi rho sigma tau "
    "phi chi psi omega"
).split()


@dataclass
class WorldConfig:
    """Fields every world config carries. ``ranges`` narrows a constant's log-uniform range."""

    name: str = "?"
    n_train: int = 64  # points in the training regime
    n_anomaly: int = 8  # anomaly points (the Michelson-Morley / Mercury analogue)
    n_probe: int = 32  # probe points, each >= PROBE_SIGMA sds from the old law
    n_regime: int = 64  # fresh in-regime points for the control score
    noise: float = 0.01  # noise level; each world's docstring says in which unit
    max_resample: int = 50  # redraws allowed per instance before the world gives up
    ranges: dict[str, Any] = field(default_factory=dict)  # constant -> [lo, hi], within the declared range

    DECLARED: ClassVar[dict[str, tuple[float, float]]] = {}  # constant -> (default lo, default hi)
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {}  # constant -> widest range the world supports

    def __post_init__(self) -> None:
        for key in ("n_train", "n_probe", "n_regime"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(
            self.n_anomaly >= 1,
            "n_anomaly",
            f"must be >= 1: with an empty anomaly set the new law is not identifiable, got {self.n_anomaly}",
        )
        require(0 < self.noise <= 0.1, "noise", f"must be in (0, 0.1], got {self.noise}")
        require(self.max_resample >= 0, "max_resample", f"must be >= 0, got {self.max_resample}")
        ranges = dict(self.ranges or {})
        for key, value in ranges.items():
            if key not in self.DECLARED:
                raise ConfigError(f"ranges.{key}", f"not a constant of {self.name}; constants: {', '.join(self.DECLARED)}")
            try:
                lo, hi = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(f"ranges.{key}", f"must be [lo, hi], got {value!r}") from None
            limit_lo, limit_hi = self.LIMITS[key]
            require(
                limit_lo <= lo <= hi <= limit_hi,
                f"ranges.{key}",
                f"[{lo:g}, {hi:g}] is outside the declared range [{limit_lo:g}, {limit_hi:g}] of {self.name}",
            )
            ranges[key] = (lo, hi)
        self.ranges = ranges

    def range_of(self, key: str) -> tuple[float, float]:
        return self.ranges.get(key, self.DECLARED[key])


@dataclass
class Instance:
    """One randomised world. Arrays are float64; ``x_*`` are (N, d) in displayed units."""

    world: str
    seed: int
    constants: dict[str, float]
    variables: tuple[str, ...]  # the displayed (renamed) input names, one per column of x
    output: str  # the displayed output name
    x_train: np.ndarray
    y_train: np.ndarray  # noisy
    sd_train: np.ndarray
    x_anomaly: np.ndarray
    y_anomaly: np.ndarray  # noisy
    sd_anomaly: np.ndarray
    x_probe: np.ndarray
    y_probe_new: np.ndarray  # exact
    y_probe_old: np.ndarray  # exact
    sd_probe: np.ndarray
    x_regime: np.ndarray
    y_regime_new: np.ndarray  # exact
    sd_regime: np.ndarray
    expr_old: sp.Expr  # in the displayed variable symbols, constants as floats
    expr_new: sp.Expr
    law_old_symbolic: sp.Expr  # the same with the constants as symbols (constant_symbols)
    law_new_symbolic: sp.Expr
    constant_symbols: dict[str, sp.Symbol]  # constant name -> its symbol in the symbolic laws
    dl_new_bits: float  # well-posedness: L(new) on train + anomaly
    dl_old_exceptions_bits: float  # L(old) + exceptions on the same data
    resampled: int  # draws rejected before this one
    world_obj: "World" = field(repr=False, default=None)

    def law_old(self, x: np.ndarray) -> np.ndarray:
        return self.world_obj.law_old(np.asarray(x, dtype=float), self.constants)

    def law_new(self, x: np.ndarray) -> np.ndarray:
        return self.world_obj.law_new(np.asarray(x, dtype=float), self.constants)

    def symbols(self) -> tuple[sp.Symbol, ...]:
        return tuple(sp.Symbol(v, positive=True) for v in self.variables)

    def summary(self) -> dict[str, Any]:
        """JSON-able description (no arrays)."""
        return {
            "seed": self.seed,
            "constants": {k: float(v) for k, v in self.constants.items()},
            "variables": list(self.variables),
            "output": self.output,
            "law_old": str(self.expr_old),
            "law_new": str(self.expr_new),
            "dl_new_bits": float(self.dl_new_bits),
            "dl_old_exceptions_bits": float(self.dl_old_exceptions_bits),
            "resampled": int(self.resampled),
        }


def log_uniform(rng: np.random.Generator, lo: float, hi: float, size: Any = None) -> Any:
    return np.exp(rng.uniform(math.log(lo), math.log(hi), size))


class World(abc.ABC):
    """A pair of laws (old, new) and the regimes that make the Einstein test on them well posed."""

    name: str
    title: str  # one line, for plots and reports: "W1 Galilean -> Lorentz velocity composition"
    inputs: tuple[str, ...]  # physical input names (never shown to learners)
    output_name: str
    noise_kind: str  # "absolute" or "relative"

    def __init__(self, config: WorldConfig):
        self.config = config

    # --- what a world supplies ---------------------------------------------------------------
    @abc.abstractmethod
    def law_old(self, x: np.ndarray, k: dict[str, float]) -> np.ndarray:
        """(N, d) displayed inputs -> (N,) the old law's exact answer."""

    @abc.abstractmethod
    def law_new(self, x: np.ndarray, k: dict[str, float]) -> np.ndarray:
        """(N, d) displayed inputs -> (N,) the new law's exact answer (closed form or fast solve)."""

    @abc.abstractmethod
    def law_new_reference(self, x: np.ndarray, k: dict[str, float]) -> np.ndarray:
        """The new law by an independent method (quadrature, ODE, root finding), slow and plain."""

    @abc.abstractmethod
    def expressions(self, symbols: tuple[sp.Symbol, ...], k: dict[str, Any]) -> tuple[sp.Expr, sp.Expr]:
        """(old, new) as sympy expressions in ``symbols``; ``k`` maps constant names to numbers or symbols."""

    @abc.abstractmethod
    def sample_inputs(self, rng: np.random.Generator, k: dict[str, float], n: int, regime: str) -> np.ndarray:
        """(n, d) inputs for ``regime`` in {"train", "anomaly", "probe"}; probes are filtered afterwards."""

    @abc.abstractmethod
    def noise_scale(self, k: dict[str, float]) -> float:
        """The absolute sd (noise_kind "absolute") or the relative sd (noise_kind "relative")."""

    def derived(self, rng: np.random.Generator, k: dict[str, float]) -> dict[str, float]:
        """Constants that are not log-uniform (phases, ...) or follow from others; none by default."""
        return {}

    # --- shared machinery --------------------------------------------------------------------
    def noise_sd(self, y: np.ndarray, k: dict[str, float]) -> np.ndarray:
        scale = self.noise_scale(k)
        if self.noise_kind == "relative":
            return scale * np.abs(y)
        return np.full(np.shape(y), scale, dtype=float)

    def check_constants(self, constants: dict[str, float]) -> None:
        """A ConfigError naming the constant when one is unknown or outside the world's limits."""
        for key, value in constants.items():
            if key not in self.config.DECLARED:
                raise ConfigError(f"constants.{key}", f"not a constant of {self.name}; constants: {', '.join(self.config.DECLARED)}")
            lo, hi = self.config.LIMITS[key]
            require(
                isinstance(value, (int, float)) and lo <= float(value) <= hi,
                f"constants.{key}",
                f"{value!r} is outside the declared range [{lo:g}, {hi:g}] of {self.name}",
            )

    def sample_constants(self, rng: np.random.Generator) -> dict[str, float]:
        return {key: float(log_uniform(rng, *self.config.range_of(key))) for key in self.config.DECLARED}

    def _probes(self, rng: np.random.Generator, k: dict[str, float], n: int) -> np.ndarray:
        """n probe inputs where the laws differ by >= PROBE_SIGMA sds (rejection from the probe regime)."""
        kept: list[np.ndarray] = []
        total = 0
        for _ in range(50):
            x = self.sample_inputs(rng, k, 4 * n, "probe")
            new, old = self.law_new(x, k), self.law_old(x, k)
            ok = np.isfinite(new) & (np.abs(new - old) >= PROBE_SIGMA * self.noise_sd(new, k))
            kept.append(x[ok])
            total += int(ok.sum())
            if total >= n:
                break
        x = np.concatenate(kept)[:n]
        if len(x) < n:
            raise ConfigError("n_probe", f"{self.name}: found only {len(x)} probes >= {PROBE_SIGMA:g} sd apart")
        return x

    def _draw(self, rng: np.random.Generator, constants: dict[str, float] | None) -> Instance | None:
        cfg = self.config
        k = dict(constants) if constants is not None else self.sample_constants(rng)
        k.update(self.derived(rng, k))
        x_train = self.sample_inputs(rng, k, cfg.n_train, "train")
        x_anomaly = self.sample_inputs(rng, k, cfg.n_anomaly, "anomaly")
        x_regime = self.sample_inputs(rng, k, cfg.n_regime, "train")
        x_probe = self._probes(rng, k, cfg.n_probe)
        exact_train = self.law_new(x_train, k)
        sd_train = self.noise_sd(exact_train, k)
        # The old law must fit the training regime within the noise, or the test is not about a new theory.
        if not np.all(np.abs(exact_train - self.law_old(x_train, k)) <= TRAIN_SIGMA * sd_train):
            return None
        exact_anomaly = self.law_new(x_anomaly, k)
        sd_anomaly = self.noise_sd(exact_anomaly, k)
        y_train = exact_train + sd_train * rng.standard_normal(len(exact_train))
        y_anomaly = exact_anomaly + sd_anomaly * rng.standard_normal(len(exact_anomaly))
        names = rng.choice(len(NAME_POOL), size=len(self.inputs) + 1, replace=False)
        variables = tuple(NAME_POOL[i] for i in names[:-1])
        symbols = tuple(sp.Symbol(v, positive=True) for v in variables)
        constant_symbols = {key: sp.Symbol(f"const_{key}") for key in k}
        sym_old, sym_new = self.expressions(symbols, constant_symbols)
        values = {constant_symbols[key]: sp.Float(v) for key, v in k.items()}
        expr_old, expr_new = sym_old.subs(values), sym_new.subs(values)
        x_all = np.concatenate([x_train, x_anomaly])
        y_all = np.concatenate([y_train, y_anomaly])
        sd_all = np.concatenate([sd_train, sd_anomaly])
        named = tuple(constant_symbols.values())
        dl_new = description.law_bits(sym_new, y_all, self.law_new(x_all, k), sd_all, named)
        dl_old = description.law_with_exceptions_bits(sym_old, y_all, self.law_old(x_all, k), sd_all, named)
        if not dl_new < dl_old:
            return None
        y_regime = self.law_new(x_regime, k)
        y_probe_new = self.law_new(x_probe, k)
        return Instance(
            world=self.name,
            seed=-1,
            constants=k,
            variables=variables,
            output=NAME_POOL[names[-1]],
            x_train=x_train,
            y_train=y_train,
            sd_train=sd_train,
            x_anomaly=x_anomaly,
            y_anomaly=y_anomaly,
            sd_anomaly=sd_anomaly,
            x_probe=x_probe,
            y_probe_new=y_probe_new,
            y_probe_old=self.law_old(x_probe, k),
            sd_probe=self.noise_sd(y_probe_new, k),
            x_regime=x_regime,
            y_regime_new=y_regime,
            sd_regime=self.noise_sd(y_regime, k),
            expr_old=expr_old,
            expr_new=expr_new,
            law_old_symbolic=sym_old,
            law_new_symbolic=sym_new,
            constant_symbols=constant_symbols,
            dl_new_bits=dl_new,
            dl_old_exceptions_bits=dl_old,
            resampled=0,
            world_obj=self,
        )

    def instance(self, seed: int, constants: dict[str, float] | None = None) -> Instance:
        """A well-posed instance; redraws (fresh constants unless ``constants`` fixes them) until one is.

        ``constants`` fixes some or all log-uniform constants (the rest are drawn); each is checked
        against the world's declared limits first.
        """
        if constants is not None:
            self.check_constants(constants)
        rng = np.random.default_rng(seed)
        for attempt in range(self.config.max_resample + 1):
            drawn = self.sample_constants(rng)
            if constants is not None:
                drawn.update({key: float(v) for key, v in constants.items()})
            inst = self._draw(rng, drawn)
            if inst is not None:
                inst.seed, inst.resampled = seed, attempt
                return inst
        raise ConfigError(
            "max_resample",
            f"{self.name}: no well-posed instance in {self.config.max_resample + 1} draws (seed {seed}); "
            "give more anomaly points or less noise",
        )
