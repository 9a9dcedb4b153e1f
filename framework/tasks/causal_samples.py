"""Causal wind tunnel, mode B (samples in context): learn an SCM's CPDs from data, answer do-queries.

Per sequence a fresh SCM over one fixed, known graph (a CLadder family without latent nodes, see
``framework.tasks.causal_common``), every CPD row drawn from Dirichlet(alpha, ..., alpha) over the
``card`` states. The context is n complete observational samples (one token per variable value,
variables in node order); after every ``every`` samples (and before the first) comes a query token
``DO_x``, and at it the model predicts the distribution of Y under do(X = x):

    [BOS] DO_x ( s_1 .. s_k ) DO_x ( s_{k+1} .. s_{2k} ) DO_x ...

Exact target (SPEC §5): after the samples seen so far the posterior is again independent Dirichlet per
row, Dirichlet(alpha + counts); the interventional distribution is the truncated factorisation, a sum
of products in which every CPD row appears at most once, so by independence of the rows its posterior
expectation is the truncated factorisation evaluated at the posterior-mean CPDs
(alpha + n_{v,c,s}) / (card alpha + n_{v,c}). :meth:`observational_predictive` gives, at the same
positions, the Bayes answer to "the next unit with X = x": the posterior predictive of the next sample
(the posterior-mean joint, exact for the same reason), conditioned on X = x. The gap between the two is
the association gap a model that only correlates would not see.

Vocabulary: the value s of node v is token v * card + s; then [BOS]; then DO_x = [BOS] + 1 + x.
Labels are exact draws: Y of a fresh unit of the sequence's own SCM under do(X = x).

The fast oracle counts with a cumulative sum over samples and enumerates the card^n joint states once
per batch; the reference counts in plain Python, one sequence and query at a time.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from framework.errors import require
from framework.tasks.base import Batch, Task, TaskConfig
from framework.tasks.causal_common import GRAPHS, SmallGraph, small_graph

MAX_ALPHA = 50  # Gamma(alpha) is drawn as a sum of alpha exponentials, on the caller's generator


@dataclass
class CausalSamplesConfig(TaskConfig):
    name: str = "causal_samples"
    graph: str = "confounding"  # chain | fork | collider | confounding | mediation | diamond | diamondcut
    card: int = 2  # states per variable
    n: int = 32  # observational samples per sequence
    every: int = 4  # a do-query after every `every` samples (and one before the first)
    alpha: int = 1  # Dirichlet concentration of every CPD row (an integer: see MAX_ALPHA)

    def __post_init__(self) -> None:
        require(self.graph in GRAPHS, "graph", f"unknown graph {self.graph!r}; choose one of: {', '.join(GRAPHS)}")
        require(2 <= self.card <= 6, "card", f"must be in [2, 6], got {self.card}")
        require(self.n >= 1, "n", f"must be >= 1, got {self.n}")
        require(1 <= self.every <= self.n, "every", f"must be in [1, n={self.n}], got {self.every}")
        require(isinstance(self.alpha, int) and 1 <= self.alpha <= MAX_ALPHA, "alpha",
                f"must be an integer in [1, {MAX_ALPHA}], got {self.alpha!r}")


class CausalSamplesTask(Task):
    def __init__(self, config: CausalSamplesConfig):
        self.config = config
        self.name = config.name
        self.graph: SmallGraph = small_graph(config.graph, config.card)
        g, card, n = self.graph, config.card, config.n
        self.BOS = g.n * card
        self.DO0 = self.BOS + 1
        self.vocab_size = self.DO0 + card
        self.n_classes = card
        self.seen = torch.arange(0, n + 1, config.every)  # (P,) samples seen at each query
        self.seq_len = 1 + len(self.seen) + n * g.n
        self._positions = 1 + self.seen * g.n + torch.arange(len(self.seen))  # the DO tokens
        sample_at = [1 + j * g.n + int((j // config.every) + 1) for j in range(n)]  # where sample j starts
        self._sample_index = (torch.tensor(sample_at)[:, None] + torch.arange(g.n)).reshape(-1)  # (n * n_vars,)

    def positions(self) -> torch.Tensor:
        return self._positions.clone()

    def samples_seen(self) -> torch.Tensor:
        """(P,) long: how many samples precede each scored position (the x-axis of a learning curve)."""
        return self.seen.clone()

    # ------------------------------------------------------------------ sampling

    def draw_cpds(self, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Per node (B, rows, card) float64 Dirichlet(alpha) rows, Gamma(alpha) as sums of exponentials."""
        out = []
        for v in range(self.graph.n):
            u = torch.rand(batch_size, self.graph.rows(v), self.config.card, self.config.alpha, generator=generator,
                           device=generator.device, dtype=torch.float64)
            gam = -torch.log1p(-u).sum(-1)  # Gamma(alpha, 1): no log(0) since u < 1
            out.append(gam / gam.sum(-1, keepdim=True))
        return out

    def draw_units(self, cpds: list[torch.Tensor], shape: tuple[int, ...], generator: torch.Generator,
                   do: torch.Tensor | None = None) -> torch.Tensor:
        """(B, *shape, n_vars) long: ancestral draws from each sequence's SCM, X set to ``do`` (B, *shape) if given."""
        g, B = self.graph, cpds[0].shape[0]
        values = torch.zeros(B, *shape, g.n, dtype=torch.long, device=generator.device)
        flat = values.reshape(B, -1, g.n)
        u = torch.rand(B, flat.shape[1], g.n, generator=generator, device=generator.device, dtype=torch.float64)
        for v in range(g.n):
            if do is not None and v == g.x:
                flat[..., v] = do.reshape(B, -1)
                continue
            rows = cpds[v].gather(1, g.config(flat, v)[..., None].expand(-1, -1, self.config.card))  # (B, N, card)
            cdf = rows.cumsum(-1)
            flat[..., v] = (u[..., v, None] >= cdf[..., :-1]).sum(-1)  # inverse CDF; the last state takes the rest
        return flat.reshape(values.shape)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, g, device, P = batch_size, self.graph, generator.device, len(self.seen)
        cpds = self.draw_cpds(B, generator)
        data = self.draw_units(cpds, (self.config.n,), generator)  # (B, n, n_vars)
        x_do = torch.randint(0, self.config.card, (B, P), generator=generator, device=device)
        labels = self.draw_units(cpds, (P,), generator, do=x_do)[..., g.y]  # (B, P)
        tokens = torch.empty(B, self.seq_len, dtype=torch.long, device=device)
        tokens[:, 0] = self.BOS
        tokens[:, self._positions.to(device)] = self.DO0 + x_do
        tokens[:, self._sample_index.to(device)] = (data + torch.arange(g.n, device=device) * self.config.card).reshape(B, -1)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    # ------------------------------------------------------------------ fast oracles

    def decode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples (B, n, n_vars) and the query interventions x (B, P), read from the tokens."""
        g, card = self.graph, self.config.card
        data = tokens[:, self._sample_index.to(tokens.device)].reshape(-1, self.config.n, g.n)
        data = data - torch.arange(g.n, device=tokens.device) * card
        return data, tokens[:, self._positions.to(tokens.device)] - self.DO0

    def posterior_mean_cpds(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Per node (B, P, rows, card) float64: the posterior-mean CPD after the samples seen at each query."""
        g, card, alpha = self.graph, self.config.card, self.config.alpha
        data, _ = self.decode(tokens)
        B, seen = data.shape[0], self.seen.to(tokens.device)
        out = []
        for v in range(g.n):
            cell = g.config(data, v) * card + data[..., v]  # (B, n): which (row, state) each sample counts in
            counts = torch.nn.functional.one_hot(cell, g.rows(v) * card).double().cumsum(1)  # (B, n, rows*card)
            counts = torch.cat([counts.new_zeros(B, 1, counts.shape[-1]), counts], 1)[:, seen]  # (B, P, rows*card)
            counts = counts.reshape(B, len(seen), g.rows(v), card)
            out.append((counts + alpha) / (counts.sum(-1, keepdim=True) + card * alpha))
        return out

    def _joint(self, tokens: torch.Tensor, intervene: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, P, card^n) products of posterior-mean rows over every joint state; X's factor dropped if ``intervene``."""
        g = self.graph
        cpds = self.posterior_mean_cpds(tokens)
        states = g.assignments(tokens.device)  # (S, n)
        B, P = cpds[0].shape[:2]
        prod = torch.ones(B, P, states.shape[0], dtype=torch.float64, device=tokens.device)
        for v in range(g.n):
            if intervene and v == g.x:
                continue
            prod = prod * cpds[v][:, :, g.config(states, v), states[:, v]]  # (B, P, S)
        _, x_do = self.decode(tokens)
        return prod, states, x_do

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, card) P(Y | do(X = x), samples so far): the truncated factorisation at the posterior mean."""
        prod, states, x_do = self._joint(tokens, intervene=True)
        keep = states[:, self.graph.x] == x_do[..., None]  # (B, P, S)
        y = torch.nn.functional.one_hot(states[:, self.graph.y], self.config.card).double()  # (S, card)
        return (prod * keep) @ y  # sums to 1: the dropped factor of X was the only one missing

    def observational_predictive(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P, card) P(Y | X = x, samples so far) for the next unit: the posterior-mean joint, conditioned."""
        prod, states, x_do = self._joint(tokens, intervene=False)
        keep = states[:, self.graph.x] == x_do[..., None]
        y = torch.nn.functional.one_hot(states[:, self.graph.y], self.config.card).double()
        joint = (prod * keep) @ y
        return joint / joint.sum(-1, keepdim=True)

    # ------------------------------------------------------------------ reference

    def _reference(self, tokens: torch.Tensor, intervene: bool) -> torch.Tensor:
        g, card, alpha, every = self.graph, self.config.card, self.config.alpha, self.config.every
        out = torch.zeros(tokens.shape[0], len(self.seen), card, dtype=torch.float64)
        for b, seq in enumerate(tokens.tolist()):
            assert seq[0] == self.BOS
            at, samples, q = 1, [], 0
            for j in range(self.config.n + 1):
                if j % every == 0:  # a query: answer from the samples so far
                    x = seq[at] - self.DO0
                    assert 0 <= x < card
                    counts = {}
                    for s in samples:
                        for v in range(g.n):
                            key = (v, tuple(s[p] for p in g.parents[v]))
                            counts.setdefault(key, [0] * card)[s[v]] += 1
                    mean = lambda v, pa, s: (alpha + counts.get((v, pa), [0] * card)[s]) / (  # noqa: E731
                        card * alpha + sum(counts.get((v, pa), [0] * card)))
                    joint = [0.0] * card
                    for state in itertools.product(range(card), repeat=g.n):
                        if state[g.x] != x:
                            continue
                        w = 1.0
                        for v in range(g.n):
                            if not (intervene and v == g.x):
                                w *= mean(v, tuple(state[p] for p in g.parents[v]), state[v])
                        joint[state[g.y]] += w
                    for y in range(card):
                        out[b, q, y] = joint[y] / sum(joint)
                    at, q = at + 1, q + 1
                if j < self.config.n:
                    sample = [t - v * card for v, t in enumerate(seq[at : at + g.n])]
                    assert all(0 <= s < card for s in sample)
                    samples.append(sample)
                    at += g.n
        return out.to(tokens.device)

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Counts, posterior means and the truncated factorisation in plain Python loops."""
        return self._reference(tokens, intervene=True)

    def observational_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._reference(tokens, intervene=False)
