"""HMM filtering with the rows of T and E drawn from a configurable prior (the prior_shift stream).

The wind tunnel of ``framework.tasks.hmm`` draws every row of T and E from Dirichlet(1, ..., 1).
Here each experience names a prior instead; rows are drawn from a Dirichlet whose concentration
vector encodes a structure, then clipped, renormalised and rounded exactly as in the base task
(``discretise_rows``: integer hundredths, floor 0.05), written into the same token layout:

* ``uniform``: T and E rows ~ Dirichlet(1): the paper's task;
* ``sticky``: T row s ~ Dirichlet(1 + kappa e_s): states persist;
* ``cyclic``: T row s ~ Dirichlet(1 + kappa e_{s+1 mod S}): states advance around a cycle;
* ``sparse_emissions``: E rows ~ Dirichlet(alpha_sparse): each state emits few symbols;
* ``sparse_transitions``: T rows ~ Dirichlet(alpha_sparse): few successors per state;
* ``diagonal_emissions``: E row s ~ Dirichlet(1 + kappa e_{s mod O}): nearly observed states.

What changes and what does not. The parameters are in the context, so the exact filtered
posterior alpha_t = P(z_t | o_1..o_t, T, E) is the same function of the tokens under every prior
(``HMMTask.posterior``, unchanged); the prior changes the distribution of the parameters, of the
observations and hence of the posteriors the model must produce (sticky chains give confident,
slowly moving posteriors; sparse emissions nearly reveal the state). A model that had learned the
filter itself would not forget under this shift; forgetting here measures how far it learned the
prior's shortcuts instead.

Dirichlet draws use numpy's Generator seeded from the torch generator, so a batch is still a
function of the generator alone (torch has no seeded gamma sampler).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from framework.errors import require
from framework.tasks.base import Batch
from framework.tasks.hmm import EMIT, FLOOR, OBS, SEP, SYMBOL0, TRANS, HMMConfig, HMMTask, discretise_rows

PRIORS = ("uniform", "sticky", "cyclic", "sparse_emissions", "sparse_transitions", "diagonal_emissions")


@dataclass
class HMMPriorConfig:
    prior: str = "uniform"  # one of PRIORS
    kappa: float = 10.0  # extra Dirichlet mass on the structured entry (sticky, cyclic, diagonal_emissions)
    alpha_sparse: float = 0.1  # Dirichlet concentration of the sparse priors (< 1 favours few large entries)

    def __post_init__(self) -> None:
        require(self.prior in PRIORS, "prior", f"must be one of {', '.join(PRIORS)}; got {self.prior!r}")
        require(self.kappa > 0 and np.isfinite(self.kappa), "kappa", f"must be a finite number > 0, got {self.kappa}")
        require(self.alpha_sparse > 0 and np.isfinite(self.alpha_sparse), "alpha_sparse",
                f"must be a finite number > 0, got {self.alpha_sparse}")


def concentrations(prior: HMMPriorConfig, S: int, O: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, S) and (S, O) Dirichlet concentrations of the rows of T and E."""
    trans, emit = np.ones((S, S)), np.ones((S, O))
    rows = np.arange(S)
    if prior.prior == "sticky":
        trans[rows, rows] += prior.kappa
    elif prior.prior == "cyclic":
        trans[rows, (rows + 1) % S] += prior.kappa
    elif prior.prior == "sparse_emissions":
        emit[:] = prior.alpha_sparse
    elif prior.prior == "sparse_transitions":
        trans[:] = prior.alpha_sparse
    elif prior.prior == "diagonal_emissions":
        emit[rows, rows % O] += prior.kappa
    return trans, emit


class PriorHMMTask(HMMTask):
    """HMMTask whose parameter rows come from ``prior``; the oracle (forward filter) is inherited."""

    def __init__(self, config: HMMConfig, prior: HMMPriorConfig):
        super().__init__(config)
        self.prior = prior
        self.name = f"hmm[{prior.prior}]"
        self._alpha_trans, self._alpha_emit = concentrations(prior, self.S, self.O)

    def draw_parameters(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """T (B, S, S) and E (B, S, O) as integer hundredths (>= 5, rows summing to 100)."""
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
        rng = np.random.default_rng(seed)

        def rows(alpha: np.ndarray) -> torch.Tensor:
            g = rng.standard_gamma(np.broadcast_to(alpha, (batch_size, *alpha.shape)))
            g = np.maximum(g, 1e-300)  # tiny concentrations can underflow to an all-zero row
            p = torch.from_numpy(g / g.sum(-1, keepdims=True)).clamp(min=FLOOR / 100)
            return discretise_rows(p / p.sum(-1, keepdim=True))

        return rows(self._alpha_trans).to(generator.device), rows(self._alpha_emit).to(generator.device)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, S, O, K, device = batch_size, self.S, self.O, self.K, generator.device
        trans, emit = self.draw_parameters(B, generator)
        # The chain, as in HMMTask.sample: inverse CDF on integer hundredths, one gather per step.
        z = torch.randint(0, S, (B, 1), generator=generator, device=device)
        u = torch.randint(0, 100, (B, 2 * K - 1), generator=generator, device=device)
        u_emit, u_trans = u[:, :K], u[:, K:]
        after = (u_trans[:, :, None, None] >= trans.cumsum(-1)[:, None]).sum(-1)  # (B, K-1, S)
        states = [z]
        for t in range(K - 1):
            states.append(after[:, t].gather(1, states[-1]))
        labels = torch.cat(states, 1)  # (B, K)
        emit_rows = emit.cumsum(-1).gather(1, labels[:, :, None].expand(B, K, O))  # (B, K, O)
        observations = (u_emit[:, :, None] >= emit_rows).sum(-1)  # (B, K)

        def const(token: int, n: int = 1) -> torch.Tensor:
            return torch.full((B, n), token, dtype=torch.long, device=device)

        steps = torch.stack([const(OBS, K), observations + SYMBOL0], -1).reshape(B, 2 * K)
        tokens = torch.cat(
            [const(TRANS), trans.reshape(B, S * S) - FLOOR, const(EMIT), emit.reshape(B, S * O) - FLOOR, const(SEP), steps],
            dim=1,
        )
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)
