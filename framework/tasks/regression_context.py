"""Regression in context, PFN style (Müller et al., "Transformers Can Do Bayesian Inference", 2022).

A sequence is one random function on ``[0, 1]^d`` shown as noisy (x, y) points, then probe inputs
whose y the model predicts as a distribution over ``y_bins`` value bins. Trained on many functions
from a prior, the Bayes-optimal predictor is the prior's posterior predictive, which is what a PFN
approximates. The Einstein test uses it as an in-context learner (``framework.einstein.learners.pfn``),
which maps each world instance into this task's normalised coordinates; nothing here knows a world.

Layout (every value a bin: x in ``x_bins`` equal bins of [0, 1], y in ``y_bins``)::

    x_11 .. x_1d y_1   ...   x_n1 .. x_nd y_n   |   p_11 .. p_1d Q   ...   p_P1 .. p_Pd Q

x tokens are ``0..x_bins-1``, y tokens ``x_bins + c``, Q is the query token ``x_bins + y_bins``; the
scored positions are the Q's, and class c is the y bin c. An x is its bin's centre, exactly.

The Einstein shape of the data: context inputs lie in the lower half [0, 1/2)^d, most in a cluster of
``low_bins`` bins at the origin (the "training regime"), a random number (0..``max_spread``) spread
over the whole lower half (the "anomalies"); probes anywhere in [0, 1]^d, so half of the probe
coordinates extrapolate.

The prior is finite, so the posterior is exact. A hypothesis is an additive law with one shared bend,

    f(x) = y0 + sum_j a_j s(x_j),   s(x) = (1 - lam) x / (1/2) + lam g(x) / g(1/2),

with every amplitude vector a in ``amplitudes``^d, bend lam in ``bends``, shape g in ``shapes``
(square, sqrt, saturate = x / (1/4 + x), exp = e^{2x} - 1), uniform over the (a, lam, g) grid. Over
the context half every s runs from 0 to 1, so lam is invisible in the cluster and only partly visible
in the context half: extrapolation is where hypotheses part. y0 puts the law's minimum over the
context half at ``Y_FLOOR``. Observation: ``y = f(x) + noise * N(0, 1)``, binned (the edge bins
take the tails). Given the tokens, P(h | context) ∝ prod_i P(bin y_i | f_h(x_i)), and the target is
P(bin | probe) = sum_h P(h | context) P(bin | f_h(probe)): Gaussian mass in each bin. The fast oracle
batches this over the hypotheses with weight above PRUNE = 1e-12; the reference loops in plain Python floats with math.erf.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from framework.errors import require
from framework.tasks.base import Batch, Task, TaskConfig

CONTEXT_HALF = 0.5  # context inputs lie in [0, CONTEXT_HALF)^d
Y_FLOOR = 0.25  # every hypothesis's minimum over the context half
SHAPES = ("square", "sqrt", "saturate", "exp")
MAX_HYPOTHESES = 20_000
PRUNE = 1e-12  # posterior weight below which a hypothesis is left out of the predictive


def shape_fn(name: str, x: torch.Tensor) -> torch.Tensor:
    if name == "square":
        return x * x
    if name == "sqrt":
        return x.sqrt()
    if name == "saturate":
        return x / (0.25 + x)
    return torch.expm1(2 * x)  # "exp"


@dataclass
class RegressionContextConfig(TaskConfig):
    name: str = "regression_context"
    d: int = 2  # inputs per point
    n_context: int = 24  # context points
    n_probe: int = 4  # probe points (their y is never shown)
    x_bins: int = 32  # bins per input over [0, 1]; even, so the context half is whole bins
    y_bins: int = 48  # output bins over [0, 1] = classes
    noise: float = 0.01  # observation sd, in units of the [0, 1] output range
    low_bins: int = 2  # the cluster: context inputs in bins [0, low_bins) of every coordinate
    max_spread: Optional[int] = None  # most context points spread over the context half; None: n_context // 2
    amplitudes: List[float] = field(default_factory=lambda: [-0.25, -0.125, 0.0, 0.125, 0.25])
    bends: List[float] = field(default_factory=lambda: [-1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    shapes: List[str] = field(default_factory=lambda: ["square", "sqrt", "saturate"])

    def __post_init__(self) -> None:
        for key in ("d", "n_context", "n_probe"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(self.x_bins >= 4 and self.x_bins % 2 == 0, "x_bins", f"must be even and >= 4, got {self.x_bins}")
        require(self.y_bins >= 4, "y_bins", f"must be >= 4, got {self.y_bins}")
        require(0 < self.noise <= 0.5, "noise", f"must be in (0, 0.5], got {self.noise}")
        require(1 <= self.low_bins <= self.x_bins // 2, "low_bins", f"must be in 1..x_bins/2={self.x_bins // 2}, got {self.low_bins}")
        if self.max_spread is None:
            self.max_spread = self.n_context // 2
        require(0 <= self.max_spread <= self.n_context, "max_spread", f"must be in 0..n_context={self.n_context}, got {self.max_spread}")
        require(len(self.amplitudes) >= 1 and len(self.bends) >= 1, "amplitudes", "amplitudes and bends need >= 1 value each")
        for s in self.shapes:
            require(s in SHAPES, "shapes", f"unknown shape {s!r}; choose from {', '.join(SHAPES)}")
        require(len(self.shapes) >= 1, "shapes", "needs >= 1 shape")
        n = len(self.amplitudes) ** self.d * len(self.bends) * len(self.shapes)
        require(n <= MAX_HYPOTHESES, "amplitudes", f"the prior has {n} hypotheses; at most {MAX_HYPOTHESES} (fewer amplitudes, bends or shapes)")


class RegressionContextTask(Task):
    name = "regression_context"

    def __init__(self, config: RegressionContextConfig):
        c = self.config = config
        self.d, self.n_context, self.n_probe = c.d, c.n_context, c.n_probe
        self.query = c.x_bins + c.y_bins
        self.vocab_size = c.x_bins + c.y_bins + 1
        self.n_classes = c.y_bins
        self.seq_len = (c.n_context + c.n_probe) * (c.d + 1)
        self.centres = (torch.arange(c.x_bins, dtype=torch.float64) + 0.5) / c.x_bins  # (X,)
        self.hypotheses = list(itertools.product(itertools.product(c.amplitudes, repeat=c.d), c.bends, c.shapes))
        # table[h, j, b] = a_j s(x_b); y0[h] puts the minimum over the context half at Y_FLOOR
        half = c.x_bins // 2
        rows, y0 = [], []
        for amps, lam, shape in self.hypotheses:
            s = (1 - lam) * self.centres / CONTEXT_HALF + lam * shape_fn(shape, self.centres) / shape_fn(shape, torch.tensor(CONTEXT_HALF, dtype=torch.float64))
            row = torch.stack([a * s for a in amps])  # (d, X)
            rows.append(row)
            y0.append(Y_FLOOR - sum(float(r[:half].min()) for r in row))
        self.table = torch.stack(rows)  # (H, d, X) float64
        self.y0 = torch.tensor(y0, dtype=torch.float64)  # (H,)
        edges = torch.arange(c.y_bins + 1, dtype=torch.float64) / c.y_bins
        edges[0], edges[-1] = -math.inf, math.inf
        self.edges = edges  # (C + 1,)

    @property
    def n_hypotheses(self) -> int:
        return len(self.hypotheses)

    def positions(self) -> torch.Tensor:
        c = self.config
        start = c.n_context * (c.d + 1)
        return torch.arange(start + c.d, self.seq_len, c.d + 1)

    # --- tokens <-> values ---------------------------------------------------------------------
    def x_bin(self, x: torch.Tensor) -> torch.Tensor:
        """Values in [0, 1] (clipped) -> bins."""
        return (x.clamp(0, 1) * self.config.x_bins).long().clamp(0, self.config.x_bins - 1)

    def y_bin(self, y: torch.Tensor) -> torch.Tensor:
        return (y * self.config.y_bins).floor().clamp(0, self.config.y_bins - 1).long()

    def y_centres(self) -> torch.Tensor:
        return (torch.arange(self.config.y_bins, dtype=torch.float64) + 0.5) / self.config.y_bins

    def encode(self, x_bins: torch.Tensor, y_bins: torch.Tensor, probe_bins: torch.Tensor) -> torch.Tensor:
        """(B, n, d) context x bins, (B, n) y bins, (B, P, d) probe x bins -> (B, T) tokens."""
        B = x_bins.shape[0]
        ctx = torch.cat([x_bins, (y_bins + self.config.x_bins).unsqueeze(-1)], dim=-1)  # (B, n, d+1)
        q = torch.full((B, probe_bins.shape[1], 1), self.query, dtype=torch.long, device=x_bins.device)
        probes = torch.cat([probe_bins, q], dim=-1)  # (B, P, d+1)
        return torch.cat([ctx.reshape(B, -1), probes.reshape(B, -1)], dim=1)

    def decode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.config
        B = tokens.shape[0]
        ctx = tokens[:, : c.n_context * (c.d + 1)].reshape(B, c.n_context, c.d + 1)
        probes = tokens[:, c.n_context * (c.d + 1):].reshape(B, c.n_probe, c.d + 1)
        return ctx[..., : c.d], ctx[..., c.d] - c.x_bins, probes[..., : c.d]

    def values(self, h: torch.Tensor | None, bins: torch.Tensor) -> torch.Tensor:
        """f_h at x bins. h (B,) -> (B, N); h None -> every hypothesis, (B, H, N). bins (B, N, d)."""
        table = self.table.to(bins.device)
        y0 = self.y0.to(bins.device)
        if h is not None:
            rows = table[h]  # (B, d, X)
            out = y0[h].unsqueeze(1).clone()
            for j in range(self.d):
                out = out + torch.gather(rows[:, j], 1, bins[..., j])
            return out
        out = y0.view(1, -1, 1).expand(bins.shape[0], -1, bins.shape[1]).clone()
        for j in range(self.d):
            out = out + table[:, j][:, bins[..., j]].permute(1, 0, 2)  # (B, H, N)
        return out

    def _bin_log_mass(self, f: torch.Tensor, bins: torch.Tensor | None) -> torch.Tensor:
        """log P(y bin | f): for the given bins (same shape as f), or every bin (..., C) when None."""
        edges = self.edges.to(f.device)
        sd = self.config.noise
        if bins is None:  # every bin: one CDF per edge (a bin's mass is then exact to ~1e-16 absolute)
            cdf = torch.special.ndtr((edges - f.unsqueeze(-1)) / sd)  # (..., C + 1)
            return (cdf[..., 1:] - cdf[..., :-1]).clamp_min(1e-300).log()
        lo, hi = edges[bins], edges[bins + 1]
        # Mass on the side away from f, where ndtr does not round to 1: Phi(b) - Phi(a) or its mirror.
        flip = torch.where((lo + hi.clamp(max=2.0)) / 2 > f, -1.0, 1.0)
        mass = (torch.special.ndtr(flip * (hi - f) / sd) - torch.special.ndtr(flip * (lo - f) / sd)).abs()
        return mass.clamp_min(1e-300).log()

    # --- the sampler and the oracle ------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        c, dev = self.config, generator.device
        B, n, P, d = batch_size, c.n_context, c.n_probe, c.d
        h = torch.randint(self.n_hypotheses, (B,), generator=generator, device=dev)
        spread = torch.randint(c.max_spread + 1, (B, 1), generator=generator, device=dev)
        is_spread = torch.arange(n, device=dev).unsqueeze(0) >= n - spread  # (B, n): the last `spread` points
        low = torch.randint(c.low_bins, (B, n, d), generator=generator, device=dev)
        wide = torch.randint(c.x_bins // 2, (B, n, d), generator=generator, device=dev)
        x_ctx = torch.where(is_spread.unsqueeze(-1), wide, low)
        x_probe = torch.randint(c.x_bins, (B, P, d), generator=generator, device=dev)
        f = self.values(h, torch.cat([x_ctx, x_probe], 1))  # (B, n + P)
        y = f + c.noise * torch.randn(f.shape, generator=generator, device=dev, dtype=torch.float64)
        yb = self.y_bin(y)
        tokens = self.encode(x_ctx, yb[:, :n], x_probe)
        return Batch(tokens, self.positions().to(dev), self.posterior(tokens), yb[:, n:])

    def hypothesis_posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, H) P(h | context tokens) under the uniform prior."""
        x_ctx, y_ctx, _ = self.decode(tokens)
        half = self.config.x_bins // 2
        table = self._context_table(tokens.device)
        if table is not None and bool((x_ctx < half).all()):  # the sampler's case: a lookup
            flat = sum(x_ctx[..., j] * half ** (self.d - 1 - j) for j in range(self.d))  # (B, n)
            loglik = table[:, flat, y_ctx].permute(1, 0, 2)  # (B, H, n)
        else:
            loglik = self._bin_log_mass(self.values(None, x_ctx), y_ctx.unsqueeze(1).expand(-1, self.n_hypotheses, -1))
        return torch.softmax(loglik.sum(-1), dim=-1)

    def _context_table(self, device) -> torch.Tensor | None:
        """(H, half^d, C) log P(y bin | f_h(x)) for every x in the context half, when it is small enough."""
        half, C = self.config.x_bins // 2, self.config.y_bins
        if self.n_hypotheses * half**self.d * C > 2e7:
            return None
        if getattr(self, "_table", None) is None:
            grid = torch.cartesian_prod(*[torch.arange(half)] * self.d).reshape(1, -1, self.d)  # (1, half^d, d)
            self._table = self._bin_log_mass(self.values(None, grid)[0], None)  # (H, half^d, C)
        return self._table.to(device)

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        w = self.hypothesis_posterior(tokens)  # (B, H)
        _, _, x_probe = self.decode(tokens)
        # Hypotheses with posterior weight under PRUNE are left out of the predictive (then
        # renormalised): they change no probability by more than PRUNE * H, far below float32.
        b, h = (w > PRUNE).nonzero(as_tuple=True)
        rows = self.table.to(tokens.device)[h]  # (n, d, X)
        fp = self.y0.to(tokens.device)[h].unsqueeze(1) + sum(
            torch.gather(rows[:, j], 1, x_probe[b, :, j]) for j in range(self.d))  # (n, P)
        out = torch.zeros(tokens.shape[0], self.n_probe, self.n_classes, dtype=torch.float64, device=tokens.device)
        for s in range(0, len(b), 4096):
            cdf = torch.special.ndtr((self.edges.to(fp.device) - fp[s:s + 4096].unsqueeze(-1)) / self.config.noise)
            mass = (cdf[..., 1:] - cdf[..., :-1]) * w[b[s:s + 4096], h[s:s + 4096]].view(-1, 1, 1)  # (n, P, C)
            out.index_add_(0, b[s:s + 4096], mass)
        return out / out.sum(-1, keepdim=True)

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        c = self.config
        centres = [(b + 0.5) / c.x_bins for b in range(c.x_bins)]
        edges = [-math.inf] + [k / c.y_bins for k in range(1, c.y_bins)] + [math.inf]

        def phi(z: float) -> float:
            return 0.5 * (1 + math.erf(z / math.sqrt(2)))

        def mass(f: float, k: int) -> float:
            lo, hi = edges[k], edges[k + 1]
            return max(phi((hi - f) / c.noise) - phi((lo - f) / c.noise), 1e-300)

        def law(amps, lam, shape, xb) -> float:
            def s(x):
                g = {"square": x * x, "sqrt": math.sqrt(x), "saturate": x / (0.25 + x), "exp": math.expm1(2 * x)}[shape]
                g_half = {"square": 0.25, "sqrt": math.sqrt(0.5), "saturate": 0.5 / 0.75, "exp": math.expm1(1.0)}[shape]
                return (1 - lam) * x / CONTEXT_HALF + lam * g / g_half
            half = [centres[b] for b in range(c.x_bins // 2)]
            y0 = Y_FLOOR - sum(min(a * s(x) for x in half) for a in amps)
            return y0 + sum(a * s(centres[b]) for a, b in zip(amps, xb))

        out = torch.zeros(tokens.shape[0], c.n_probe, c.y_bins, dtype=torch.float64)
        for b in range(tokens.shape[0]):
            seq = tokens[b].tolist()
            pts = [seq[i * (c.d + 1):(i + 1) * (c.d + 1)] for i in range(c.n_context + c.n_probe)]
            ctx, probes = pts[: c.n_context], pts[c.n_context:]
            logw = []
            for amps, lam, shape in self.hypotheses:
                logw.append(sum(math.log(mass(law(amps, lam, shape, p[:c.d]), p[c.d] - c.x_bins)) for p in ctx))
            top = max(logw)
            w = [math.exp(v - top) for v in logw]
            z = sum(w)
            for j, p in enumerate(probes):
                for hi, (amps, lam, shape) in enumerate(self.hypotheses):
                    f = law(amps, lam, shape, p[:c.d])
                    for k in range(c.y_bins):
                        out[b, j, k] += w[hi] / z * mass(f, k)
        return out / out.sum(-1, keepdim=True)
