"""HMM filtering: the second wind tunnel of Aggarwal, Dalal & Misra (arXiv 2512.22471).

Per sequence a fresh hidden Markov model with S states and O symbols: each row of the transition
matrix T (S x S) and of the emission matrix E (S x O) is drawn from Dirichlet(1, ..., 1), clipped to
at least 0.05, renormalised and rounded to 0.01 keeping the 0.05 floor; the initial distribution is
uniform. The parameters are written into the sequence as probability tokens, then K observations:

    [TRANS] T00 .. T(S-1)(S-1) [EMIT] E00 .. E(S-1)(O-1) [SEP] ([OBS] o_1) .. ([OBS] o_K)

Vocabulary: ids 0..95 are the probabilities 0.05..1.00 (id = hundredths - 5); [TRANS]=96,
[EMIT]=97, [SEP]=98, [OBS]=99; symbol o is 100 + o (105 tokens for O=5). At every observation the
model predicts the filtered posterior alpha_t = P(z_t | o_1..o_t) over the S hidden states.

Rounding (our choice, documented): the paper rounds each entry to 0.01. We round in integer
hundredths, q = max(round(100 p), 5), then add the residual 100 - sum(q) to the row's largest entry,
so every row sums to exactly 100/100. Sampling uses these integer hundredths and the oracle decodes
the same numbers from the tokens, so the tokens, the sampler and the posterior all describe one and
the same HMM. (If a negative residual would push the largest entry below the floor, which needs
S or O near 20, the rest of the residual goes to the next largest entries in turn.)

Because sampling and the oracle share the exact parameters, the posterior is exact: the fast oracle
is the scaled forward filter (Rabiner 1989), batched, in float64 probability space and normalised at
every step. Log space (SPEC §3) guards against underflow, which cannot happen here: every emission
probability is at least 0.05, so a step's unnormalised mass is at least 0.05, and the scaled filter
agrees with the log-space one to 1e-15 in a fraction of the time (benchmarks/README.md). The references are
a plain probability-space forward algorithm per sequence and, for short sequences, brute-force
enumeration of all S^K hidden paths.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from framework.errors import require
from framework.tasks.base import Batch, Task, TaskConfig

FLOOR = 5  # the minimum probability, in hundredths
N_PROB = 96  # probability tokens: 0.05, 0.06, ..., 1.00
TRANS, EMIT, SEP, OBS = 96, 97, 98, 99
SYMBOL0 = 100  # observation symbol o is token SYMBOL0 + o
RESCALE = 16  # the forward filter renormalises every RESCALE steps (see HMMTask.posterior)


@dataclass
class HMMConfig(TaskConfig):
    name: str = "hmm"
    S: int = 5  # hidden states (classes); paper: 5
    O: int = 5  # observation symbols; paper: 5
    K: int = 20  # observations per sequence; paper trains at 20, evaluates at 20, 30, 50

    def __post_init__(self) -> None:
        for field, value in (("S", self.S), ("O", self.O)):
            require(value >= 2, field, f"must be >= 2, got {value}")
            require(
                value * FLOOR <= 100,
                field,
                f"must be <= {100 // FLOOR} so that a row of {value} entries can keep the 0.05 floor, got {value}",
            )
        require(self.K >= 1, "K", f"must be >= 1, got {self.K}")


def discretise_rows(p: torch.Tensor, passes: int | None = None) -> torch.Tensor:
    """Probability rows (..., n) -> integer hundredths (..., n), each >= 5 and summing to exactly 100.

    ``passes=None`` repeats the settling step until every row is settled, which reads a flag on the
    host; a number runs exactly that many steps with no host read (what a GPU wants: no sync per
    batch). ``n`` passes always suffice, and a step on a settled row changes nothing.
    """
    q = torch.round(100 * p).long().clamp(min=FLOOR)
    residual = 100 - q.sum(-1, keepdim=True)
    # One step settles every row unless a negative residual would take the largest entry below the
    # floor; then the next largest entry absorbs the rest, and so on. Terminates: while the residual is
    # negative, sum(q) > 100 >= 5 n, so some entry is above the floor, and the largest entry is one
    # (a floored entry scores at most 5.5, one above the floor at least 6), so each unsettled step
    # floors a new entry: at most n steps.
    step = 0
    while step < passes if passes is not None else bool((residual != 0).any()):
        j = (q + 0.5 * p).argmax(-1, keepdim=True)  # the largest entry; ties go to the larger probability
        delta = torch.maximum(residual, FLOOR - q.gather(-1, j))
        q.scatter_add_(-1, j, delta)
        residual = residual - delta
        step += 1
    return q


def sample_rows(shape: tuple[int, ...], n: int, generator: torch.Generator) -> torch.Tensor:
    """Rows of Dirichlet(1, ..., 1) of width n, clipped at 0.05, renormalised, as integer hundredths."""
    u = torch.rand(*shape, n, generator=generator, device=generator.device, dtype=torch.float64)
    g = -torch.log1p(-u)  # Exp(1) from [0, 1) without log(0); normalised exponentials are Dirichlet(1)
    p = g / g.sum(-1, keepdim=True)
    p = p.clamp(min=FLOOR / 100)
    passes = None if u.device.type == "cpu" else n  # a host check is cheap on the CPU, a sync elsewhere
    return discretise_rows(p / p.sum(-1, keepdim=True), passes)


def decode_parameters(tokens: torch.Tensor, S: int, O: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) tokens -> T (B, S, S) and E (B, S, O), float64 probabilities read from the header."""
    B = tokens.shape[0]
    trans = tokens[:, 1 : 1 + S * S].reshape(B, S, S)
    emit = tokens[:, 2 + S * S : 2 + S * S + S * O].reshape(B, S, O)
    return (trans + FLOOR).to(torch.float64) / 100, (emit + FLOOR).to(torch.float64) / 100


def draw_hundredths(cum: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Inverse CDF on integer hundredths: rows (B, n) of cumulative sums ending at 100 -> (B,) indices.

    P(index = j) is exactly q_j / 100, with no floating-point CDF involved.
    """
    u = torch.randint(0, 100, (cum.shape[0], 1), generator=generator, device=cum.device)  # (B, 1)
    return (u >= cum).sum(-1)


class HMMTask(Task):
    def __init__(self, config: HMMConfig):
        self.config = config
        self.name = config.name
        self.S, self.O, self.K = config.S, config.O, config.K
        S, O = self.S, self.O
        self.trans_pos = 0
        self.emit_pos = 1 + S * S
        self.sep_pos = 2 + S * S + S * O
        self.header_len = 3 + S * S + S * O  # the first [OBS] sits here
        self.vocab_size = SYMBOL0 + O
        self.n_classes = S
        self.seq_len = self.header_len + 2 * config.K

    def positions(self) -> torch.Tensor:
        return self.header_len + 1 + 2 * torch.arange(self.K)  # (K,) the o_t positions

    def decode_parameters(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return decode_parameters(tokens, self.S, self.O)

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, S, O, K, device = batch_size, self.S, self.O, self.K, generator.device
        if S == O:  # one draw for both matrices: fewer, larger operations
            trans, emit = sample_rows((B, 2 * S), S, generator).split(S, dim=1)  # (B, S, S) hundredths each
        else:
            trans, emit = sample_rows((B, S), S, generator), sample_rows((B, S), O, generator)
        # All the chain's randomness at once: z_1 ~ uniform, then one uniform hundredth per transition
        # and per emission, turned into draws by the inverse CDF (draw_hundredths) on the rows chosen.
        z = torch.randint(0, S, (B, 1), generator=generator, device=device)  # (B, 1)
        u = torch.randint(0, 100, (B, 2 * K - 1), generator=generator, device=device)
        u_emit, u_trans = u[:, :K], u[:, K:]  # (B, K), (B, K-1)
        # after[b, t, s]: the state that follows s at step t; the walk itself is then one gather per step.
        after = (u_trans[:, :, None, None] >= trans.cumsum(-1)[:, None]).sum(-1)  # (B, K-1, S)
        states = [z]
        for t in range(K - 1):
            states.append(after[:, t].gather(1, states[-1]))
        labels = torch.cat(states, 1)  # (B, K) z_1..z_K
        emit_rows = emit.cumsum(-1).gather(1, labels[:, :, None].expand(B, K, O))  # (B, K, O) CDF of E[z_t]
        observations = (u_emit[:, :, None] >= emit_rows).sum(-1)  # (B, K) o_t ~ E[z_t]

        def const(token: int, n: int = 1) -> torch.Tensor:
            return torch.full((B, n), token, dtype=torch.long, device=device)

        steps = torch.stack([const(OBS, K), observations + SYMBOL0], -1).reshape(B, 2 * K)  # (B, 2K)
        tokens = torch.cat(
            [const(TRANS), trans.reshape(B, S * S) - FLOOR, const(EMIT), emit.reshape(B, S * O) - FLOOR, const(SEP), steps],
            dim=1,
        )  # (B, seq_len)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        trans, emit = self.decode_parameters(tokens)  # (B, S, S), (B, S, O)
        obs = tokens[:, self.positions().to(tokens.device)] - SYMBOL0  # (B, K)
        B, S, K = tokens.shape[0], self.S, self.K
        emit_obs = emit.gather(2, obs[:, None, :].expand(B, S, K)).permute(2, 0, 1)[:, :, None]  # (K, B, 1, S)
        # alpha_t = (alpha_{t-1} T) * e_t: two operations per step, written in place. Normalising only every
        # RESCALE steps (and all at once at the end) is enough: a step keeps at least 0.05 of the mass
        # (every emission probability is >= 0.05), so 0.05^16 > 1e-21 is far from underflow.
        alpha = torch.empty(K, B, 1, S, dtype=torch.float64, device=tokens.device)
        alpha[0] = emit_obs[0]  # the uniform initial distribution cancels in the normalisation
        moved = torch.empty(B, 1, S, dtype=torch.float64, device=tokens.device)
        for t in range(1, K):
            torch.bmm(alpha[t - 1], trans, out=moved)  # (B, 1, S) alpha_{t-1} T
            torch.mul(moved, emit_obs[t], out=alpha[t])
            if t % RESCALE == 0:
                alpha[t] /= alpha[t].sum(-1, keepdim=True)
        alpha = alpha[:, :, 0].transpose(0, 1)  # (B, K, S)
        return alpha / alpha.sum(-1, keepdim=True)

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Plain forward algorithm in probability space, one sequence at a time."""
        out = np.zeros((tokens.shape[0], self.K, self.S))
        for b, seq in enumerate(tokens.tolist()):
            trans, emit, obs = self._parse(seq)
            alpha = np.full(self.S, 1.0 / self.S) * emit[:, obs[0]]
            out[b, 0] = alpha / alpha.sum()
            for t in range(1, self.K):
                alpha = (out[b, t - 1] @ trans) * emit[:, obs[t]]
                out[b, t] = alpha / alpha.sum()
        return torch.from_numpy(out).to(tokens.device)

    def posterior_enumeration(self, tokens: torch.Tensor) -> torch.Tensor:
        """Brute force: P(z_t, o_1..o_t) summed over all S^t hidden paths, for each t (S^K <= 10^5)."""
        S, K = self.S, self.K
        if S**K > 10**5:
            raise ValueError(f"posterior_enumeration sums S^K = {S}^{K} paths; keep it <= 1e5")
        out = np.zeros((tokens.shape[0], K, S))
        for b, seq in enumerate(tokens.tolist()):
            trans, emit, obs = self._parse(seq)
            for t in range(K):
                joint = np.zeros(S)
                for path in itertools.product(range(S), repeat=t + 1):
                    p = 1.0 / S
                    for u, z in enumerate(path):
                        if u > 0:
                            p *= trans[path[u - 1], z]
                        p *= emit[z, obs[u]]
                    joint[path[-1]] += p
                out[b, t] = joint / joint.sum()
        return torch.from_numpy(out).to(tokens.device)

    def _parse(self, seq: list[int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """Read one sequence by walking its layout, independently of the batched decoder."""
        S, O = self.S, self.O
        assert seq[0] == TRANS and seq[1 + S * S] == EMIT and seq[2 + S * S + S * O] == SEP
        trans = np.array([(x + FLOOR) / 100 for x in seq[1 : 1 + S * S]]).reshape(S, S)
        emit = np.array([(x + FLOOR) / 100 for x in seq[2 + S * S : 2 + S * S + S * O]]).reshape(S, O)
        rest = seq[3 + S * S + S * O :]
        assert rest[0::2] == [OBS] * self.K
        return trans, emit, [x - SYMBOL0 for x in rest[1::2]]
