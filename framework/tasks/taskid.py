"""In-context task identification: the talk's "DSL" wind tunnel (SPEC §3).

A fixed, finite family of M tasks, each a map f_m from n_x inputs to n_y outputs, is drawn once from
``family_seed`` (on the CPU, so it is the same family on every device) and never changes; the M maps
are distinct. A sequence picks a task m from the prior, then shows examples of it::

    x1 y1 x2 y2 ... xK        (2K-1 tokens; x tokens 0..n_x-1, y tokens n_x..n_x+n_y-1)

with x_i uniform over the inputs and y_i = f_m(x_i) with probability 1 - eps, otherwise uniform over
the other n_y - 1 outputs. The model predicts y at every x position; class j is the y token n_x + j.

Exact posterior, from the tokens alone. Before query x_i the task posterior is
P(m | examples 1..i-1) ∝ prior_m · prod_{j<i} p(y_j | x_j, m) (the inputs are uniform whatever the
task, so they carry no evidence), and the posterior predictive is
P(y | x_i, examples) = sum_m P(m | examples) p(y | x_i, m). With eps = 0 the mass on the true task
never decreases, and a task leaves the posterior the first time it contradicts an example.

``near_duplicate`` makes task 1 a copy of task 0 that differs on only ``differ_on`` inputs, so the
posterior stays split between the two until one of those inputs is shown.

The fast oracle is a cumulative sum of log-likelihoods over positions, batched; the reference loops
over sequences, positions and tasks in plain Python floats.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional

import torch

from framework.errors import require
from framework.tasks.base import MAX_ENUMERATED, Batch, Task, TaskConfig


@dataclass
class TaskIDConfig(TaskConfig):
    name: str = "taskid"
    M: int = 8  # tasks in the family
    n_x: int = 8  # inputs
    n_y: int = 4  # outputs = classes
    K: int = 10  # x positions per sequence (2K-1 tokens); the last x's y is never shown
    eps: float = 0.0  # output noise: y is a uniformly random wrong output with this probability
    prior: Optional[List[float]] = None  # weights over the M tasks (normalised); None: uniform
    family_seed: int = 0  # the family is a fixed function of this seed
    near_duplicate: bool = False  # task 1 = task 0 except on `differ_on` inputs
    differ_on: int = 1  # inputs on which the near-duplicate differs from task 0

    def __post_init__(self) -> None:
        require(self.M >= 2, "M", f"must be >= 2, got {self.M}")
        require(self.n_x >= 1, "n_x", f"must be >= 1, got {self.n_x}")
        require(self.n_y >= 2, "n_y", f"must be >= 2, got {self.n_y}")
        require(
            self.M <= self.n_y**self.n_x,
            "M",
            f"the M tasks are distinct maps, and there are only n_y^n_x = {self.n_y ** self.n_x}; got {self.M}",
        )
        require(self.K >= 1, "K", f"must be >= 1, got {self.K}")
        require(0.0 <= self.eps < 1.0, "eps", f"must be in [0, 1), got {self.eps}")
        require(self.family_seed >= 0, "family_seed", f"must be >= 0, got {self.family_seed}")
        if self.prior is not None:
            require(len(self.prior) == self.M, "prior", f"needs one weight per task (M={self.M}), got {len(self.prior)}")
            require(all(w >= 0 and math.isfinite(w) for w in self.prior), "prior", f"weights must be finite and >= 0, got {list(self.prior)}")
            require(sum(self.prior) > 0, "prior", f"weights must not all be 0, got {list(self.prior)}")
        require(
            1 <= self.differ_on <= self.n_x, "differ_on", f"must be in [1, n_x={self.n_x}], got {self.differ_on}"
        )


def draw_family(config: TaskIDConfig) -> torch.Tensor:
    """(M, n_x) long: the M distinct maps, f_m(x) = table[m, x], a deterministic function of the config."""
    M, n_x, n_y = config.M, config.n_x, config.n_y
    g = torch.Generator().manual_seed(config.family_seed)
    space = n_y**n_x
    digits = n_y ** torch.arange(n_x - 1, -1, -1)  # (n_x,) map <-> its index in [0, n_y^n_x)

    def candidates():
        if space <= 2**20:  # small space: walk a random order of all maps, so the draw always ends
            order = torch.randperm(space, generator=g)
            yield from (order[j] // digits % n_y for j in range(space))  # lazily: M << space in practice
        else:  # huge space: rejection sampling, which almost never rejects
            while True:
                yield torch.randint(0, n_y, (n_x,), generator=g)

    stream = candidates()
    table = [next(stream)]
    if config.near_duplicate:
        twin = table[0].clone()
        where = torch.randperm(n_x, generator=g)[: config.differ_on]
        twin[where] = (twin[where] + torch.randint(1, n_y, (config.differ_on,), generator=g)) % n_y
        table.append(twin)
    seen = {tuple(t.tolist()) for t in table}
    for f in stream:
        if len(table) == M:
            break
        if tuple(f.tolist()) not in seen:
            seen.add(tuple(f.tolist()))
            table.append(f)
    return torch.stack(table).long()


class TaskIDTask(Task):
    def __init__(self, config: TaskIDConfig):
        self.config = config
        self.name = config.name
        self.M, self.n_x, self.n_y, self.K, self.eps = config.M, config.n_x, config.n_y, config.K, config.eps
        self.vocab_size = config.n_x + config.n_y
        self.n_classes = config.n_y  # class j is the y token n_x + j
        self.seq_len = 2 * config.K - 1
        self._family = draw_family(config)  # (M, n_x) on the CPU
        weights = torch.ones(self.M) if config.prior is None else torch.tensor(config.prior, dtype=torch.float64)
        self.prior = weights.to(torch.float64) / weights.sum()  # (M,)
        right = self._family[:, :, None] == torch.arange(self.n_y)  # (M, n_x, n_y)
        # p(y | x, m); with eps = 0 the wrong outputs get exactly 0
        hit, miss = (torch.tensor(v, dtype=torch.float64) for v in (1.0 - self.eps, self.eps / (self.n_y - 1)))
        self.likelihood = torch.where(right, hit, miss)  # (M, n_x, n_y)

    def family(self) -> torch.Tensor:
        """(M, n_x) long: f_m(x) as an output class 0..n_y-1 (the y token is n_x + f_m(x))."""
        return self._family.clone()

    def positions(self) -> torch.Tensor:
        return torch.arange(0, self.seq_len, 2)  # (K,) the x positions

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, K, n_y, device = batch_size, self.K, self.n_y, generator.device
        m = torch.multinomial(self.prior.to(device), B, replacement=True, generator=generator)  # (B,)
        x = torch.randint(0, self.n_x, (B, K), generator=generator, device=device)  # (B, K)
        y = self._family.to(device)[m[:, None], x]  # (B, K) f_m(x_i)
        wrong = torch.rand(B, K, generator=generator, device=device) < self.eps
        shift = torch.randint(1, n_y, (B, K), generator=generator, device=device)  # uniform over the other outputs
        labels = torch.where(wrong, (y + shift) % n_y, y)  # (B, K); the last one is never shown
        tokens = torch.stack([x, labels + self.n_x], -1).reshape(B, 2 * K)[:, : self.seq_len]  # (B, 2K-1)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def task_posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, K, M) float64: P(task | the examples before x_i), for each query x_i (position 0: the prior)."""
        B, K, device = tokens.shape[0], self.K, tokens.device
        x, y = tokens[:, 0 : 2 * K - 2 : 2], tokens[:, 1::2] - self.n_x  # (B, K-1) each: the shown examples
        log_lik = self.likelihood.to(device).log()[:, x, y].permute(1, 2, 0)  # (B, K-1, M) log p(y_j | x_j, m)
        log_prior = self.prior.to(device).log().expand(B, 1, self.M)  # (B, 1, M)
        log_joint = log_prior + torch.cat([torch.zeros_like(log_prior), log_lik.cumsum(1)], 1)  # (B, K, M)
        log_evidence = torch.logsumexp(log_joint, -1, keepdim=True)  # (B, K, 1)
        if bool(torch.isneginf(log_evidence).any()):
            raise ValueError("these tokens have probability 0 under every task of the family (eps=0)")
        return (log_joint - log_evidence).exp()

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens[:, self.positions().to(tokens.device)]  # (B, K) the queries
        p_y = self.likelihood.to(tokens.device)[:, x]  # (M, B, K, n_y) p(y | x_i, m)
        return torch.einsum("bkm,mbky->bky", self.task_posterior(tokens), p_y)

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bayes' rule by enumeration over the M tasks, one sequence, position and task at a time."""
        return self._reference(tokens)[0]

    def task_posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._reference(tokens)[1]

    def _reference(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, prior, eps, n_x, n_y = self._family.tolist(), self.prior.tolist(), self.eps, self.n_x, self.n_y

        def p(y: int, x: int, m: int) -> float:
            return 1.0 - eps if y == f[m][x] else eps / (n_y - 1)

        pred = torch.zeros(tokens.shape[0], self.K, n_y, dtype=torch.float64)
        tasks = torch.zeros(tokens.shape[0], self.K, self.M, dtype=torch.float64)
        for b, seq in enumerate(tokens.tolist()):
            for i in range(self.K):
                examples = [(seq[2 * j], seq[2 * j + 1] - n_x) for j in range(i)]
                joint = [prior[m] * math.prod(p(y, x, m) for x, y in examples) for m in range(self.M)]
                for m in range(self.M):
                    tasks[b, i, m] = joint[m] / sum(joint)
                    for y in range(n_y):
                        pred[b, i, y] += tasks[b, i, m] * p(y, seq[2 * i], m)
        return pred.to(tokens.device), tasks.to(tokens.device)

    def count_sequences(self) -> int:
        """How many distinct sequences the sampler can produce (what :meth:`all_sequences` lists).

        With eps > 0 every output is possible: n_x^K * n_y^(K-1). With eps = 0 the shown outputs are
        f_m(x_1..x_{K-1}) for a task m of nonzero prior: count the distinct ones for each input tuple.
        """
        if self.eps > 0:
            return self.n_x**self.K * self.n_y ** (self.K - 1)
        return len(self.all_sequences())

    def all_sequences(self) -> torch.Tensor:
        K, n_x, n_y = self.K, self.n_x, self.n_y
        support = int((self.prior > 0).sum())
        most = n_x**K * (n_y ** (K - 1) if self.eps > 0 else min(support, n_y ** (K - 1)))
        if most > MAX_ENUMERATED:
            raise ValueError(
                f"taskid M={self.M}, n_x={n_x}, n_y={n_y}, K={K}, eps={self.eps} has up to {most:,} sequences; the "
                f"matrix view enumerates at most {MAX_ENUMERATED:,} (try M=4, n_x=4, n_y=3, K=3)"
            )
        if self.eps == 0:
            return self._enumerate_noiseless()
        xs = _all_tuples(n_x, K)  # (n_x^K, K)
        ys = _all_tuples(n_y, K - 1) + n_x  # (n_y^(K-1), K-1)
        i, j = torch.cartesian_prod(torch.arange(len(xs)), torch.arange(len(ys))).reshape(-1, 2).unbind(-1)
        return self._interleave(xs[i], ys[j])

    def _enumerate_noiseless(self) -> torch.Tensor:
        xs = _all_tuples(self.n_x, self.K)  # (n_x^K, K)
        table = self._family[self.prior > 0]  # (M', n_x): tasks that can be drawn
        ys = table[:, xs[:, :-1]] + self.n_x  # (M', n_x^K, K-1)
        tokens = self._interleave(xs.expand(len(table), -1, -1).reshape(-1, self.K), ys.reshape(-1, self.K - 1))
        return torch.unique(tokens, dim=0)

    def _interleave(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """x tokens (N, K) and y tokens (N, K-1) -> x1 y1 ... xK (N, 2K-1)."""
        out = torch.empty(xs.shape[0], self.seq_len, dtype=torch.long)
        out[:, 0::2], out[:, 1::2] = xs, ys
        return out


def _all_tuples(n: int, length: int) -> torch.Tensor:
    """(n^length, length) long: every tuple over [n], in lexicographic order."""
    index = torch.arange(n**length)[:, None]
    return index // n ** torch.arange(length - 1, -1, -1) % n
