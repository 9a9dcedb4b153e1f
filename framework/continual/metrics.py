"""Continual-learning metrics in bits from the exact posterior (SPEC §4). Lower is better.

The error matrix ``R[i][j]`` is ``kl_bits`` (mean over sequences of the mean over scored positions
of KL(posterior || model), bits) on experience j's held-out test set after training through
experience i, for every j, including j > i (not yet seen). Because R is an error, the signs of
the accuracy-based definitions flip; every summary carries ``SIGN`` saying so.

From R (N rows of trained-through experiences, one column per experience):

* ``average_error``: mean_j R[N-1][j] (GEM's ACC, as an error).
* ``bwt``: mean_{j<N-1} R[N-1][j] - R[j][j] (GEM's backward transfer on errors): > 0 means the
  error on old experiences grew (forgetting), < 0 means later training helped them.
* ``fwt``: mean_{j>=1} R[j-1][j] - b_j, with b_j the error of the freshly initialised model on
  experience j (GEM's forward transfer; "random init" there): < 0 means what came before helped.
* ``forgetting`` (Chaudhry et al. 2018): mean_{j<N-1} of R[N-1][j] - min_{j<=l<N-1} R[l][j], the
  last error minus the best error since j was learned ("max over history minus last" in accuracy
  units; the history starts when j was learned, as in Avalanche, so lost forward transfer on an
  unseen j is not counted). Negative when the last error is the best so far.
* ``forgetting_first_last`` (Avalanche's Forgetting): mean_{j<N-1} R[N-1][j] - R[j][j]; equal to
  ``bwt`` as a mean, reported beside Chaudhry's because the two differ per experience.
* ``plasticity_ratio``: R[j][j] / F_j, with F_j the error a freshly initialised model reaches on
  experience j trained on it alone with the same budget: > 1 means the stream has cost
  plasticity (loss of plasticity, Dohare et al. 2024), < 1 means it helped.
* ``intransigence`` (Chaudhry et al.): R[j][j] - F_j, the same comparison as a difference (their
  reference is a model trained on all data so far; ours is the fresh model on j alone).

Of the features along the stream (Dohare et al.; Sokar et al.; Plasticine): the fraction of
tau-dormant units (E|h_i| / mean_j E|h_j| <= tau over a fixed probe set; tau = 0 counts units that
never activate, "dead"), the effective rank of the final features (exp of the entropy of the
normalised singular values), their approximate rank (singular values covering 99% of sigma^2) and
stable rank (sum sigma^2 / max sigma^2), the mean weight magnitude, and the L2 distance of the
weights from their initial values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from avalanche.training.plugins import SupervisedPlugin
from torch import nn
from torch.utils.data import DataLoader

from framework.continual.strategies import StrategyConfig, build_strategy, scored
from framework.continual.streams import WindTunnelStream, sequence_model
from framework.continual.units import ActivationStats, find_units
from framework.metrics.bits import entropy_bits, entropy_bits_from_logits, kl_bits

SIGN = ("bits from the exact posterior, lower is better; bwt and forgetting > 0: the error on earlier "
        "experiences grew (forgetting); fwt < 0: earlier experiences lowered the error on a new one; "
        "plasticity_ratio > 1: a fresh model learns the experience better in the same budget")


# ---------------------------------------------------------------- evaluation of one experience

@torch.no_grad()
def experience_bits(model: nn.Module, dataset, device="cpu", batch_size: int = 128) -> dict:
    """Bits of ``model`` on an experience dataset (items: tokens, target, task label), per sequence."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    kls, maes, n_positions = [], [], 0
    for batch in DataLoader(dataset, batch_size=batch_size, collate_fn=getattr(dataset, "collate_fn", None)):
        tokens, target = batch[0].to(device), batch[1].to(device)
        logits = model(tokens).double()  # (B, T, C)
        mask = scored(target).double()  # (B, T)
        count = mask.sum(-1)  # (B,)
        kl = kl_bits(target, logits) * mask  # (B, T), 0 off the scored positions
        mae = (entropy_bits_from_logits(logits) - entropy_bits(target)).abs() * mask
        kls.append((kl.sum(-1) / count).cpu())
        maes.append((mae.sum(-1) / count).cpu())
        n_positions = int(count.max())
    model.train(was_training)
    kl, mae = torch.cat(kls), torch.cat(maes)
    n = kl.numel()
    se = (lambda x: x.std(unbiased=True).item() / math.sqrt(n)) if n > 1 else (lambda x: float("nan"))
    return {"kl_bits": kl.mean().item(), "kl_bits_stderr": se(kl), "entropy_mae_bits": mae.mean().item(),
            "entropy_mae_bits_stderr": se(mae), "n_sequences": n, "n_positions": n_positions}


def stream_row(model: nn.Module, stream: WindTunnelStream, columns: Optional[Sequence[int]] = None,
               device="cpu", batch_size: int = 128) -> list[float]:
    """kl_bits on the test set of each experience in ``columns`` (all by default): one row of R."""
    columns = range(len(stream)) if columns is None else columns
    return [experience_bits(model, stream.test_stream[j].dataset, device, batch_size)["kl_bits"] for j in columns]


# ---------------------------------------------------------------- the error matrix

def _matrix(R) -> np.ndarray:
    R = np.asarray(R, dtype=np.float64)
    if R.ndim != 2 or R.shape[0] < 1 or R.shape[1] < R.shape[0]:
        raise ValueError(f"R must be (rows trained-through, >= rows experiences), got shape {R.shape}")
    return R


def average_error(R) -> float:
    return float(_matrix(R)[-1].mean())


def bwt(R) -> float:
    R = _matrix(R)
    N = R.shape[0]
    if N < 2:
        return float("nan")
    return float(np.mean([R[N - 1, j] - R[j, j] for j in range(N - 1)]))


def fwt(R, initial: Sequence[float]) -> float:
    R, b = _matrix(R), np.asarray(initial, dtype=np.float64)
    N = R.shape[0]
    if N < 2:
        return float("nan")
    return float(np.mean([R[j - 1, j] - b[j] for j in range(1, N)]))


def forgetting_per_experience(R) -> list[float]:
    """Chaudhry et al.: R[N-1][j] - min_{j <= l < N-1} R[l][j], for j < N-1."""
    R = _matrix(R)
    N = R.shape[0]
    return [float(R[N - 1, j] - R[j : N - 1, j].min()) for j in range(N - 1)]


def forgetting(R) -> float:
    values = forgetting_per_experience(R)
    return float(np.mean(values)) if values else float("nan")


def forgetting_first_last(R) -> float:
    """Avalanche's Forgetting on errors: last minus the value right after learning, averaged."""
    return bwt(R)


def plasticity_ratios(R, fresh: Sequence[float]) -> list[float]:
    R = _matrix(R)
    return [float(R[j, j] / fresh[j]) if fresh[j] > 0 else float("inf") for j in range(R.shape[0])]


def intransigence(R, fresh: Sequence[float]) -> float:
    R = _matrix(R)
    return float(np.mean([R[j, j] - fresh[j] for j in range(R.shape[0])]))


def summarise(R, initial: Optional[Sequence[float]] = None, fresh: Optional[Sequence[float]] = None) -> dict:
    """Every matrix metric of R (and of the fresh-model baselines when given), with the sign convention."""
    R = _matrix(R)
    out = {
        "sign": SIGN,
        "R_kl_bits": R.tolist(),
        "average_error_bits": average_error(R),
        "bwt_bits": bwt(R),
        "forgetting_bits": forgetting(R),
        "forgetting_per_experience_bits": forgetting_per_experience(R),
        "forgetting_first_last_bits": forgetting_first_last(R),
        "learned_bits": [float(R[j, j]) for j in range(R.shape[0])],  # the error reached on each new experience
    }
    if initial is not None:
        out["initial_kl_bits"] = [float(x) for x in initial]
        out["fwt_bits"] = fwt(R, initial)
    if fresh is not None:
        ratios = plasticity_ratios(R, fresh)
        out["fresh_kl_bits"] = [float(x) for x in fresh]
        out["plasticity_ratio"] = ratios
        out["plasticity_ratio_mean"] = float(np.mean(ratios))
        out["intransigence_bits"] = intransigence(R, fresh)
    return out


# ---------------------------------------------------------------- features and weights

@torch.no_grad()
def dormant_fraction(model: nn.Module, tokens: torch.Tensor, tau: float = 0.025, batch_size: int = 128) -> dict:
    """Fraction of tau-dormant units over ``tokens`` (every position), overall and per unit group."""
    groups = find_units(model)
    stats = ActivationStats(groups)
    was_training = model.training
    model.eval()
    stats.armed = True
    try:
        for chunk in tokens.split(batch_size):
            model(chunk)
    finally:
        stats.remove()
        model.train(was_training)
    per_group, dormant, total = {}, 0, 0
    for g in groups:
        mean_abs = stats.mean_abs(g.name)
        score = mean_abs / mean_abs.mean().clamp_min(1e-12) if tau > 0 else mean_abs
        count = int((score <= tau).sum())
        per_group[g.name] = count / g.size
        dormant, total = dormant + count, total + g.size
    return {"fraction": dormant / total, "per_group": per_group, "tau": tau}


@torch.no_grad()
def features_at_scored(model: nn.Module, tokens: torch.Tensor, target: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """(N, d) the final features (``hook_features``) at every scored position of the sequences."""
    inner = sequence_model(model)
    captured: list[torch.Tensor] = []
    handle = inner.hook_features.register_forward_hook(lambda m, i, out: captured.append(out.detach()))
    was_training = model.training
    model.eval()
    try:
        for chunk in tokens.split(batch_size):
            model(chunk)
    finally:
        handle.remove()
        model.train(was_training)
    features = torch.cat(captured).double().cpu()  # (B, T, d)
    return features[scored(target.cpu())]


def singular_values(features: torch.Tensor) -> torch.Tensor:
    return torch.linalg.svdvals(features.double())


def effective_rank(features: torch.Tensor) -> float:
    """exp(H(sigma / sum sigma)) (Roy & Vetterli 2007; Dohare et al. 2024), in [1, min(N, d)]."""
    s = singular_values(features)
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def approximate_rank(features: torch.Tensor, fraction: float = 0.99) -> int:
    """The fewest singular values whose squares cover ``fraction`` of the total (Dohare et al.)."""
    s2 = singular_values(features) ** 2
    covered = s2.cumsum(0) / s2.sum()
    return int((covered < fraction - 1e-12).sum()) + 1


def stable_rank(features: torch.Tensor) -> float:
    """sum sigma^2 / max sigma^2 (Plasticine's stable rank): how many directions carry the energy."""
    s2 = singular_values(features) ** 2
    return float(s2.sum() / s2.max())


def weight_stats(model: nn.Module, initial: Optional[dict] = None) -> dict:
    """Mean |w| and the L2 norm over every parameter; the L2 distance from ``initial`` when given."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    total = sum(p.numel() for p in params.values())
    out = {"mean_abs_weight": float(sum(p.abs().sum() for p in params.values()) / total),
           "weight_norm": float(torch.sqrt(sum((p.double() ** 2).sum() for p in params.values())))}
    if initial is not None:
        out["distance_from_init"] = float(torch.sqrt(sum(((p.double() - initial[n].double()) ** 2).sum()
                                                         for n, p in params.items() if n in initial)))
    return out


# ---------------------------------------------------------------- recorder and baselines

class ContinualRecorder(SupervisedPlugin):
    """Fills R and the feature diagnostics as a strategy trains through a stream.

    Before training: the initial model's row (the b_j of FWT). After each training experience i:
    row i of R on the test sets of ``columns`` (all experiences by default; a subset keeps a
    200-experience stream's R affordable), and, on a fixed probe set (the first ``n_probe`` test
    sequences of the experience just trained), the dormant fraction at ``tau`` and of dead units,
    the effective and approximate rank of the features, and the weight statistics.
    """

    def __init__(self, stream: WindTunnelStream, columns: Optional[Sequence[int]] = None, device="cpu",
                 batch_size: int = 128, n_probe: int = 128, tau: float = 0.025):
        super().__init__()
        self.stream, self.device, self.batch_size, self.n_probe, self.tau = stream, device, batch_size, n_probe, tau
        self.columns = list(range(len(stream)) if columns is None else columns)
        self.initial: Optional[list[float]] = None
        self.rows: list[list[float]] = []
        self.diagnostics: list[dict] = []
        self._initial_params: Optional[dict] = None

    def before_training(self, strategy, **kwargs):
        if self.initial is None:
            self._initial_params = {n: p.detach().clone() for n, p in strategy.model.named_parameters()}
            self.initial = stream_row(strategy.model, self.stream, self.columns, self.device, self.batch_size)

    def after_training_exp(self, strategy, **kwargs):
        model = strategy.model
        self.rows.append(stream_row(model, self.stream, self.columns, self.device, self.batch_size))
        with strategy.experience.no_attribute_masking():  # masked in train mode; a metric may read it
            index = int(strategy.experience.current_experience)
        dataset = self.stream.test_stream[index].dataset
        n = min(self.n_probe, len(dataset))
        batch = next(iter(DataLoader(dataset, batch_size=n, collate_fn=getattr(dataset, "collate_fn", None))))
        tokens, target = batch[0].to(self.device), batch[1].to(self.device)
        features = features_at_scored(model, tokens, target)
        self.diagnostics.append({
            "experience": index,
            "dormant": dormant_fraction(model, tokens, self.tau),
            "dead_fraction": dormant_fraction(model, tokens, 0.0)["fraction"],
            "effective_rank": effective_rank(features),
            "approximate_rank": approximate_rank(features),
            "stable_rank": stable_rank(features),
            **weight_stats(model, self._initial_params),
        })

    def matrix(self) -> np.ndarray:
        """R restricted to the recorded columns: (rows so far, len(columns))."""
        return np.asarray(self.rows)

    def summary(self, fresh: Optional[Sequence[float]] = None) -> dict:
        """summarise(R) when every experience is a column; the rows and diagnostics always."""
        out = {"sign": SIGN, "columns": self.columns, "R_kl_bits": [list(r) for r in self.rows],
               "initial_kl_bits": self.initial, "diagnostics": self.diagnostics}
        if self.columns == list(range(len(self.stream))) and self.rows:
            out.update(summarise(self.rows, self.initial, fresh))
        return out


def fresh_baseline(make_model: Callable[[], nn.Module], config: StrategyConfig, stream: WindTunnelStream,
                   experiences: Optional[Sequence[int]] = None, device="cpu") -> list[float]:
    """F_j: kl_bits on experience j's test set of a freshly initialised model (``make_model()``,
    already prepared for the stream) trained on experience j alone, with the same budget (the
    optimiser settings, minibatch size and epochs of ``config``, as Naive)."""
    experiences = range(len(stream)) if experiences is None else experiences
    naive = dataclasses.replace(config, name="naive")
    out = []
    for j in experiences:
        model = make_model()
        strategy = build_strategy(naive, model, device=device)
        strategy.train(stream.train_stream[j])
        out.append(experience_bits(strategy.model, stream.test_stream[j].dataset, device, config.eval_mb_size)["kl_bits"])
    return out
