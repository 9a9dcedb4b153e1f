"""Muon for the hidden matrices, AdamW for everything else, stepped as one optimizer.

Muon (Jordan et al., "Muon: an optimizer for hidden layers in neural networks", 2024; Liu et al.,
"Muon is scalable for LLM training", arXiv 2502.16982) replaces each hidden matrix's momentum update
by its nearest semi-orthogonal matrix, found by five Newton-Schulz iterations. Embeddings, the output
head, biases and norms stay on AdamW, as its authors prescribe.

``torch.optim.Muon`` is kept for what it does well (hyperparameters, checks, parameter groups,
state, the learning-rate adjustment) with one workaround in the open: it orthogonalises one matrix at
a time (in bfloat16), which on this project's CPUs costs 20 to 24 ms a step for the demo
transformer, more than the rest of its batch-32 step. ``BatchedMuon`` runs the same iteration batched over
the matrices of one shape, in the parameters' own dtype: 3 to 7 ms (benchmarks/muon_step.py; the
spread is the machine's load), or in bfloat16 as torch does where ``train.precision`` says so
(framework.training.precision). ``tests/test_muon.py`` checks the iteration against
its closed form through the SVD and the whole step against torch's with the orthogonalisation made
exact.
"""
from __future__ import annotations

import torch
from torch.optim._muon import _adjust_lr  # torch's per-shape learning-rate rule, kept identical
from torch.optim.optimizer import _to_scalar



def newton_schulz(updates: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int,
                  eps: float, dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Each update's approximate orthogonalisation: torch.optim.Muon's quintic Newton-Schulz iteration
    (X <- aX + (b XX^T + c (XX^T)^2) X from X = G / |G|_F, on the wide orientation), one batched
    iteration per shape, in the updates' own dtype, or in ``dtype`` for float32 updates (bfloat16 under
    ``train.precision``; float64 stays float64). The results come back in the updates' dtypes."""
    if steps >= 100 or len(coefficients) != 3:  # torch.optim.Muon's own checks
        raise ValueError(f"Newton-Schulz needs 3 coefficients and fewer than 100 steps; got {coefficients}, {steps}")
    a, b, c = coefficients
    out: list[torch.Tensor | None] = [None] * len(updates)
    by_shape: dict[tuple, list[int]] = {}
    for i, u in enumerate(updates):
        by_shape.setdefault((min(u.shape), max(u.shape), u.dtype, u.device), []).append(i)
    for (_, _, own, _), indices in by_shape.items():
        x = torch.stack([updates[i] if updates[i].shape[0] <= updates[i].shape[1] else updates[i].T
                         for i in indices])  # (n, rows <= cols)
        x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
        if dtype is not None and own == torch.float32:
            x = x.to(dtype)
        for _ in range(steps):
            gram = x @ x.mT  # (n, rows, rows)
            x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
        for i, xi in zip(indices, x.to(own)):
            out[i] = xi if updates[i].shape[0] <= updates[i].shape[1] else xi.T
    return out  # type: ignore[return-value]


class BatchedMuon(torch.optim.Muon):
    """torch.optim.Muon with the orthogonalisation of ``newton_schulz`` (the module docstring says why),
    in ``ns_dtype`` for float32 parameters (None: their own)."""

    def __init__(self, params, *, ns_dtype: torch.dtype | None = None, **kwargs):
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            updates = []
            for grad, buffer in zip(grads, buffers):
                buffer.lerp_(grad, 1 - group["momentum"])
                updates.append(grad.lerp(buffer, group["momentum"]) if group["nesterov"] else buffer)
            orthogonal = newton_schulz(updates, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       self.ns_dtype)
            lr = _to_scalar(group["lr"])
            for p, update in zip(params, orthogonal):
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


class MuonWithAdamW:
    """Two optimizers over disjoint parameters, seen by the training loop as one: ``param_groups`` (whose
    ``lr`` the loop sets every step), ``zero_grad``, ``step`` and a single state dict."""

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer):
        self.parts = {"muon": muon, "adamw": adamw}

    @property
    def param_groups(self) -> list[dict]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def state_dict(self) -> dict:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:  # AdamW's state: a KeyError, which restore() names
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
