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

Hidden parameters (``HiddenPriorHMMTask``, the stream's ``hidden: true``): each experience draws ONE
HMM from its prior (seeded by the stream seed and the experience index), keeps it for the whole
experience (train and test), and shows only the observations, ``[SEP] ([OBS] o_t) x K``. The exact
posterior is the forward filter under that experience's fixed (T, E), so experiences are genuinely
different tasks and a model must learn each one's dynamics: what it learned can be forgotten.

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
        B, S, O, device = batch_size, self.S, self.O, generator.device
        trans, emit = self.draw_parameters(B, generator)
        labels, observations = self._chain(trans, emit, generator)
        const = self._const(B, device)
        tokens = torch.cat(
            [const(TRANS), trans.reshape(B, S * S) - FLOOR, const(EMIT), emit.reshape(B, S * O) - FLOOR, const(SEP),
             self._steps(observations)],
            dim=1,
        )
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def _chain(self, trans: torch.Tensor, emit: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden states and observations (B, K) each, as in HMMTask.sample: inverse CDF on integer
        hundredths, one gather per step."""
        B, S, O, K, device = trans.shape[0], self.S, self.O, self.K, generator.device
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
        return labels, observations

    @staticmethod
    def _const(B: int, device: torch.device):
        def const(token: int, n: int = 1) -> torch.Tensor:
            return torch.full((B, n), token, dtype=torch.long, device=device)
        return const

    def _steps(self, observations: torch.Tensor) -> torch.Tensor:
        """([OBS] o_t) for t = 1..K: (B, 2K) tokens."""
        B, K = observations.shape
        return torch.stack([self._const(B, observations.device)(OBS, K), observations + SYMBOL0], -1).reshape(B, 2 * K)


class HiddenPriorHMMTask(PriorHMMTask):
    """ONE HMM drawn from ``prior`` with ``seed`` and kept for every sequence; its parameters are not
    in the context (the prior_shift stream with ``hidden: true``).

    Layout ``[SEP] ([OBS] o_1) .. ([OBS] o_K)`` in the same vocabulary as the in-context task (the
    probability, [TRANS] and [EMIT] tokens are simply unused), so vocab_size and n_classes do not
    change between experiences. T and E are drawn exactly as :class:`PriorHMMTask` draws one
    sequence's parameters (Dirichlet from the prior, clipped at 0.05, ``discretise_rows`` to integer
    hundredths), from a generator seeded with ``seed``. The exact posterior at o_t is the forward
    filter under that fixed (T, E) (``HMMTask.posterior``, float64, fed the fixed parameters), so a
    model has to learn each experience's dynamics from data: different experiences are different
    tasks, and forgetting is measurable.
    """

    def __init__(self, config: HMMConfig, prior: HMMPriorConfig, seed: int):
        super().__init__(config, prior)
        self.name = f"hmm[{prior.prior},hidden]"
        self.hmm_seed = int(seed)
        trans, emit = PriorHMMTask.draw_parameters(self, 1, torch.Generator("cpu").manual_seed(self.hmm_seed))
        self.trans_hundredths, self.emit_hundredths = trans[0], emit[0]  # (S, S), (S, O) long
        self.trans_pos = self.emit_pos = -1  # no parameters in the context
        self.sep_pos = 0
        self.header_len = 1  # [SEP]; the first [OBS] sits at 1, o_t at 2 + 2(t-1)
        self.seq_len = self.header_len + 2 * self.K

    def draw_parameters(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed T and E as integer hundredths, repeated over the batch (draws nothing)."""
        device = generator.device
        return (self.trans_hundredths.to(device).expand(batch_size, -1, -1).contiguous(),
                self.emit_hundredths.to(device).expand(batch_size, -1, -1).contiguous())

    def decode_parameters(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed T (B, S, S) and E (B, S, O) as float64 probabilities (not read from the tokens)."""
        B = tokens.shape[0]
        trans = (self.trans_hundredths.to(tokens.device, torch.float64) / 100).expand(B, -1, -1).contiguous()
        emit = (self.emit_hundredths.to(tokens.device, torch.float64) / 100).expand(B, -1, -1).contiguous()
        return trans, emit

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, device = batch_size, generator.device
        trans, emit = self.draw_parameters(B, generator)
        labels, observations = self._chain(trans, emit, generator)
        tokens = torch.cat([self._const(B, device)(SEP), self._steps(observations)], dim=1)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def _parse(self, seq: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """The fixed parameters and the observations read by walking the layout (for the references)."""
        assert seq[0] == SEP and seq[1::2] == [OBS] * self.K
        trans = np.array(self.trans_hundredths.tolist(), dtype=np.float64) / 100
        emit = np.array(self.emit_hundredths.tolist(), dtype=np.float64) / 100
        return trans, emit, [x - SYMBOL0 for x in seq[2::2]]
