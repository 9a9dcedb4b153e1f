"""Program identification: the construction-boundary wind tunnel (SPEC §3, from the official code).

A mixture of two hypotheses. With prior ``pi`` a sequence is a *program*: x_{t+1} = a x_t + b mod p,
with a, b and x_0 uniform on Z_p (a = 0 allowed, so p^2 programs); otherwise it is *noise*, x_t
i.i.d. uniform on Z_p. The model sees x_0 .. x_{L-1} and predicts the next residue at every one of
the L positions: after x_t the target is P(x_{t+1} | x_0..x_t) under the mixture. The label of the
last position is x_L, drawn but never shown (as bijection's last key). Position 0 (predicting x_1
from x_0) is scored too, as "every position" says; its target is always uniform, since x_1 = a x_0 + b
is uniform for uniform (a, b), so a model pays for it only by not being uniform there.

Exact posterior, from the tokens alone. With k = t + 1 tokens seen and ``count`` the number of pairs
(a, b) that generate x_1..x_t from x_0, P(x_0..x_t | program) = count / p^3 and
P(x_0..x_t | noise) = p^-k, so the Bayes factor is count * p^(k-3). ``count`` is p^2 for k = 1 and p
for k = 2; from k = 3 it is 1 if x_0 != x_1 and the prefix follows the (a, b) that x_0, x_1, x_2 pin
down, p if the prefix is constant (x_0 = x_1 forces x_{t+1} = x_t for every consistent program), and
otherwise 0. Hence the posterior of the program hypothesis (:meth:`ProgramTask.program_posterior`),
with e = log_p(count) + t - 2:

* generic prefix (x_0 != x_1, following one program): pi while one to three tokens are seen
  (t = 0, 1, 2), then pi p^(t-2) / (pi p^(t-2) + 1 - pi): at the 4th token p/(p+1) (17/18 for
  p = 17, pi = 1/2), then p^2/(p^2+1), ...;
* constant prefix: pi for t = 0, 1, then pi p^(t-1) / (pi p^(t-1) + 1 - pi): it jumps a token early,
  at the 3rd (a = 0 with b = x_0, or a = 1 with b = 0, ...: p programs keep it constant);
* a prefix no program explains (x_0 = x_1 != x_2 at the 3rd token, or a later break): 0 from then on.

The program predictive is uniform at t = 0, uniform at t = 1 unless x_0 = x_1 (then a point mass on
x_0), and from t = 2 on a point mass on a x_t + b (x_0 for a constant prefix). The target mixes it
with the uniform noise predictive: w * program + (1 - w) / p, w the program posterior.

Encodings (``encoding``):

* ``integer``: residue r is token r; class r is residue r. Vocabulary p, L tokens.
* ``opaque``: a fresh uniformly random relabelling sigma of Z_p per sequence, given in a header
  ``ORD l_0 .. l_{p-1} SEP`` with l_r = sigma(r) the label of residue r. Tokens: ORD = 0, SEP = 1, and
  label j is token 2 + j, in the header and in the data alike (data token x_t is 2 + sigma(x_t)).
  Class j is label j: the model predicts the label of the next token, so to do arithmetic it must
  read each label's residue off the header, compute a x + b, and map the result back through the
  header. Vocabulary p + 2, p + 2 + L tokens, scored at the L data positions.

Boundary experiments (SPEC §3: held-out prefixes and a loss horizon):

* ``buckets``/``heldout_bucket``/``split``: the first three residues hash to a bucket,
  bucket = floor(((x_0 p^2 + x_1 p + x_2) * 2654435761 mod 2^32) * buckets / 2^32) (Knuth's
  multiplicative hash, top bits; :func:`prefix_bucket`). ``split=train`` samples only sequences whose
  bucket is not ``heldout_bucket``, ``split=heldout`` only those whose bucket is; each is the mixture
  conditioned on that event, sampled exactly (the first three residues from their restricted
  marginal, the hypothesis from its posterior given them, then the rest). The target stays the exact
  predictive of the *unrestricted* mixture, the rule that governs every bucket, so a trained-bucket
  score and a held-out score measure the same thing. From t = 2 on (the three hashed tokens visible)
  that is also the restricted mixture's predictive; at t = 0 and 1 the restricted mixture would
  additionally know that some continuations are excluded, and the target ignores that.
* ``loss_horizon=K`` scores only positions t = 0..K-1 (the task's ``positions()``; the tokens are the
  same L). Train with K and score every position with an ``evaluate_at`` variant
  ``{full: {loss_horizon: null}}``: vocabulary and classes are unchanged, so the framework scores the
  trained model on it. The boundary shows up in the variant's per-position KL.

The fast oracle is closed form, batched: the pair (a, b) pinned down by x_0, x_1, x_2 (a modular
inverse), a running check that the prefix follows it, and the Bayes factor as a power of p. The
reference loops in plain Python over every sequence, position and all p^2 programs, plus the noise
hypothesis, summing joint probabilities.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Optional

import torch

from framework.errors import require
from framework.tasks.base import MAX_ENUMERATED, Batch, Task, TaskConfig

ENCODINGS = ("integer", "opaque")
SPLITS = ("all", "train", "heldout")
ORD, SEP, LABEL0 = 0, 1, 2  # opaque encoding: label j is token LABEL0 + j
HASH_MULTIPLIER = 2654435761  # Knuth's multiplicative constant: odd, about 2^32 / golden ratio
MAX_P = 1021  # the hash's (x_0 p^2 + x_1 p + x_2) * HASH_MULTIPLIER must fit in int64
MAX_SPLIT_P = 127  # a held-out split tabulates all p^3 first-three-token prefixes (about 2M for 127)


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, math.isqrt(n) + 1))


def prefix_bucket(x0, x1, x2, p: int, buckets: int):
    """The hash bucket (0..buckets-1) of the first three residues; ints or long tensors alike."""
    h = ((x0 * p + x1) * p + x2) * HASH_MULTIPLIER % 2**32
    return h * buckets // 2**32


def _bucket_sizes(p: int, buckets: int) -> torch.Tensor:
    """(buckets,) long: how many of the p^3 first-three-token prefixes fall in each bucket."""
    return torch.bincount(prefix_bucket(torch.arange(p**3), 0, 0, 1, buckets), minlength=buckets)


@dataclass
class ProgramConfig(TaskConfig):
    name: str = "program"
    p: int = 17  # the modulus, a prime; paper: 17
    length: int = 16  # data tokens shown (L); every one is a scored position. Paper: 16
    pi: float = 0.5  # prior probability of the program hypothesis; paper: 0.5
    encoding: str = "integer"  # integer: residue r is token r; opaque: a per-sequence relabelling in a header
    buckets: int = 8  # hash buckets of the first three residues (for the held-out split)
    heldout_bucket: Optional[int] = None  # the bucket left out of split=train and kept by split=heldout
    split: str = "all"  # all | train (bucket != heldout_bucket) | heldout (bucket == heldout_bucket)
    loss_horizon: Optional[int] = None  # score only positions 0..loss_horizon-1; None: all `length`

    def __post_init__(self) -> None:
        require(isinstance(self.p, int) and is_prime(self.p) and self.p <= MAX_P, "p",
                f"must be a prime <= {MAX_P}, got {self.p}")
        require(self.length >= 3, "length",
                f"must be >= 3 (three tokens pin a program down; the held-out split hashes them), got {self.length}")
        require(0.0 < self.pi < 1.0, "pi", f"must be in (0, 1), got {self.pi}")
        require(self.encoding in ENCODINGS, "encoding", f"must be one of {', '.join(ENCODINGS)}; got '{self.encoding}'")
        require(2 <= self.buckets <= self.p**3, "buckets",
                f"must be in [2, p^3={self.p ** 3}] (the number of first-three-token prefixes), got {self.buckets}")
        if self.heldout_bucket is not None:
            require(0 <= self.heldout_bucket < self.buckets, "heldout_bucket",
                    f"must be in [0, buckets-1={self.buckets - 1}], got {self.heldout_bucket}")
        require(self.split in SPLITS, "split", f"must be one of {', '.join(SPLITS)}; got '{self.split}'")
        if self.split != "all":
            require(self.heldout_bucket is not None, "split",
                    f"split={self.split} needs heldout_bucket (the bucket to leave out or keep)")
            require(self.p <= MAX_SPLIT_P, "split",
                    f"split={self.split} tabulates all p^3 prefixes, so p must be <= {MAX_SPLIT_P}; got p={self.p}")
            size = int(_bucket_sizes(self.p, self.buckets)[self.heldout_bucket])
            kept = size if self.split == "heldout" else self.p**3 - size
            require(kept > 0, "heldout_bucket",
                    f"split={self.split} with heldout_bucket={self.heldout_bucket} keeps no prefix "
                    f"(the bucket holds {size} of {self.p ** 3}); choose fewer buckets")
        if self.loss_horizon is not None:
            require(1 <= self.loss_horizon <= self.length, "loss_horizon",
                    f"must be in [1, length={self.length}] (the scored positions) or null, got {self.loss_horizon}")


class ProgramTask(Task):
    def __init__(self, config: ProgramConfig):
        self.config = config
        self.name = config.name
        self.p, self.L, self.pi = config.p, config.length, config.pi
        self.opaque = config.encoding == "opaque"
        self.header = self.p + 2 if self.opaque else 0  # ORD l_0 .. l_{p-1} SEP
        self.vocab_size = self.p + 2 if self.opaque else self.p
        self.n_classes = self.p  # integer: class r is residue r; opaque: class j is label j (token 2 + j)
        self.seq_len = self.header + self.L
        self.scored = config.loss_horizon or self.L  # positions t = 0..scored-1 are scored
        p = self.p
        self._inverse = torch.tensor([pow(r, -1, p) if r else 0 for r in range(p)])  # (p,) r^-1 mod p
        self._prefix_weights = None
        if config.split != "all":
            idx = torch.arange(p**3)
            x0, x1, x2 = idx // p**2, idx // p % p, idx % p
            # P(x_0, x_1, x_2) = (pi * count + 1 - pi) / p^3; the common 1/p^3 is left out
            weights = self.pi * _count3(x0, x1, x2, p).double() + (1 - self.pi)
            inside = prefix_bucket(x0, x1, x2, p, config.buckets) == config.heldout_bucket
            self._prefix_weights = torch.where(inside == (config.split == "heldout"), weights, 0.0)  # (p^3,)

    def positions(self) -> torch.Tensor:
        return self.header + torch.arange(self.scored)  # (P,) the first `scored` data positions

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, p, L, device = batch_size, self.p, self.L, generator.device
        x = self._residues(B, generator)  # (B, L+1): x_0 .. x_L; x_L is only a label
        if self.opaque:
            sigma = torch.rand(B, p, generator=generator, device=device).argsort(-1)  # (B, p) label of residue r
            classes = sigma.gather(1, x)  # (B, L+1) the label of each residue
            ends = torch.tensor([ORD, SEP], device=device).expand(B, 2)
            tokens = torch.cat([ends[:, :1], LABEL0 + sigma, ends[:, 1:], LABEL0 + classes[:, :L]], 1)  # (B, p+2+L)
        else:
            classes = x
            tokens = x[:, :L]  # (B, L)
        labels = classes[:, 1 : 1 + self.scored]  # (B, P) the next residue (or its label) after each position
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def _residues(self, B: int, generator: torch.Generator) -> torch.Tensor:
        """(B, L+1) long: x_0 .. x_L from the mixture (conditioned on the split's buckets)."""
        p, L, device = self.p, self.L, generator.device
        inverse = self._inverse.to(device)
        if self._prefix_weights is None:
            program = torch.rand(B, generator=generator, device=device) < self.pi  # (B,)
            a, b, x0 = torch.randint(0, p, (3, B), generator=generator, device=device)
        else:
            # The mixture conditioned on the prefix's bucket: the first three residues from their
            # restricted marginal, then the hypothesis from its posterior given them (Bayes factor
            # count3), then the (a, b) they pin down; a constant prefix continues constant (a=1, b=0).
            idx = torch.multinomial(self._prefix_weights.to(device), B, replacement=True, generator=generator)
            x0, x1, x2 = idx // p**2, idx // p % p, idx % p
            count = _count3(x0, x1, x2, p).double()
            w = self.pi * count / (self.pi * count + 1 - self.pi)  # (B,) P(program | x_0, x_1, x_2)
            program = torch.rand(B, generator=generator, device=device) < w
            a = torch.where(x1 != x0, (x2 - x1) % p * inverse[(x1 - x0) % p] % p, 1)
            b = (x1 - a * x0) % p
        run = [x0]
        for _ in range(L):
            run.append((a * run[-1] + b) % p)
        noise = torch.randint(0, p, (B, L + 1), generator=generator, device=device)
        x = torch.where(program[:, None], torch.stack(run, 1), noise)  # (B, L+1)
        if self._prefix_weights is not None:
            x[:, :3] = torch.stack([x0, x1, x2], 1)  # noise keeps the drawn prefix too
        return x

    # ------------------------------------------------------------------ the exact oracle

    def residues(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) long: the residues x_0 .. x_{L-1} the tokens show (opaque: read through the header)."""
        if not self.opaque:
            return tokens
        sigma = tokens[:, 1 : 1 + self.p] - LABEL0  # (B, p) label of residue r
        residue_of = sigma.argsort(-1)  # (B, p) the inverse permutation: residue of label j
        return residue_of.gather(1, tokens[:, self.header :] - LABEL0)

    def _oracle(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, P) program posterior w and (B, P, p) predictive over residues, at the scored positions."""
        p, P, device = self.p, self.scored, tokens.device
        x = self.residues(tokens)  # (B, L)
        B = x.shape[0]
        t = torch.arange(self.L, device=device)  # (L,)
        degenerate = x[:, 1] == x[:, 0]  # (B,) x_0 = x_1: only constant prefixes fit a program
        a = (x[:, 2] - x[:, 1]) % p * self._inverse.to(device)[(x[:, 1] - x[:, 0]) % p] % p  # pinned by x_0..x_2
        b = (x[:, 1] - a * x[:, 0]) % p
        follows = (a[:, None] * x + b[:, None]) % p  # (B, L) what (a, b) puts after x_t
        step_ok = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=device), x[:, 1:] == follows[:, :-1]], 1)
        fits = step_ok.long().cummin(1).values.bool()  # (B, L) x_1 .. x_t all follow (a, b)
        constant = (x == x[:, :1]).long().cummin(1).values.bool()  # (B, L) x_0 .. x_t all equal
        # count = p^c_exp consistent programs (p^2 at t=0, p at t=1, then 1 or p), or none
        c_exp = torch.where(t == 0, 2, torch.where((t == 1) | degenerate[:, None], 1, 0))  # (B, L)
        consistent = torch.where(degenerate[:, None], constant, fits)  # fits at t <= 2 by construction
        # Bayes factor p^e with e = c_exp + t - 2 >= 0; w = 1 / (1 + (1-pi)/pi * p^-e) cannot overflow
        e = (c_exp + t - 2).double()
        w = torch.where(consistent, 1.0 / (1.0 + (1 - self.pi) / self.pi * float(p) ** -e), 0.0)[:, :P]  # (B, P)
        point = ((t >= 2) | ((t == 1) & degenerate[:, None]))[:, :P]  # (B, P): the program's next is known
        nxt = torch.where(degenerate[:, None], x[:, :1], follows)[:, :P]  # (B, P)
        pw = (w * point).double()  # mass on the point
        pred = ((1.0 - pw) / p)[..., None].expand(B, P, p).clone()  # (B, P, p)
        pred.scatter_add_(2, nxt[..., None], pw[..., None])
        return w, pred

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        pred = self._oracle(tokens)[1]  # (B, P, p) over residues
        if not self.opaque:
            return pred
        sigma = (tokens[:, 1 : 1 + self.p] - LABEL0)[:, None, :].expand_as(pred)  # (B, P, p)
        return torch.zeros_like(pred).scatter_(2, sigma, pred)  # class sigma(r) gets residue r's mass

    def program_posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, P) float64: P(program | x_0..x_t) at each scored position t (pi until evidence arrives)."""
        return self._oracle(tokens)[0]

    # ------------------------------------------------------------------ the slow reference

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Bayes' rule by enumeration: every sequence, position and each of the p^2 programs, in plain floats."""
        return self._reference(tokens)[0]

    def program_posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._reference(tokens)[1]

    def _reference(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, pi, P = self.p, self.pi, self.scored
        pred = torch.zeros(tokens.shape[0], P, p, dtype=torch.float64)
        prog = torch.zeros(tokens.shape[0], P, dtype=torch.float64)
        for row, seq in enumerate(tokens.tolist()):
            if self.opaque:
                label_of = [seq[1 + r] - LABEL0 for r in range(p)]
                residue_of = {label: r for r, label in enumerate(label_of)}
                xs = [residue_of[token - LABEL0] for token in seq[self.header :]]
            else:
                label_of, xs = list(range(p)), seq
            for t in range(P):
                # joint probabilities of x_0..x_t (and of x_{t+1} = y) under each hypothesis
                noise = (1 - pi) * p ** -(t + 1)
                program, next_mass = 0.0, [0.0] * p
                for a in range(p):
                    for b in range(p):
                        if all(xs[j + 1] == (a * xs[j] + b) % p for j in range(t)):
                            joint = pi * (1 / p**2) * (1 / p)  # P(program) P(a, b) P(x_0)
                            program += joint
                            next_mass[(a * xs[t] + b) % p] += joint
                evidence = program + noise
                prog[row, t] = program / evidence
                for y in range(p):
                    pred[row, t, label_of[y]] = (next_mass[y] + noise / p) / evidence
        return pred.to(tokens.device), prog.to(tokens.device)

    # ------------------------------------------------------------------ enumeration

    def _prefixes(self) -> torch.Tensor:
        """(N, 3) long: the first-three-token prefixes the split keeps (noise gives every one mass)."""
        p, cfg = self.p, self.config
        idx = torch.arange(p**3)
        prefixes = torch.stack([idx // p**2, idx // p % p, idx % p], 1)
        if cfg.split == "all":
            return prefixes
        inside = prefix_bucket(prefixes[:, 0], prefixes[:, 1], prefixes[:, 2], p, cfg.buckets) == cfg.heldout_bucket
        return prefixes[inside == (cfg.split == "heldout")]

    def count_sequences(self) -> int:
        """Every residue sequence with a kept prefix (the noise hypothesis reaches all), times p! headers."""
        return len(self._prefixes()) * self.p ** (self.L - 3) * (math.factorial(self.p) if self.opaque else 1)

    def all_sequences(self) -> torch.Tensor:
        p, L = self.p, self.L
        count = self.count_sequences()
        if count > MAX_ENUMERATED:
            raise ValueError(f"program p={p}, length={L}, encoding={self.config.encoding} has {count:,} sequences; "
                             f"the matrix view enumerates at most {MAX_ENUMERATED:,} (try p=3 or 5, length 3 to 5)")
        prefixes = self._prefixes()  # (N, 3)
        rest = torch.arange(p ** (L - 3))[:, None] // p ** torch.arange(L - 4, -1, -1) % p  # (p^(L-3), L-3)
        i, j = torch.cartesian_prod(torch.arange(len(prefixes)), torch.arange(len(rest))).reshape(-1, 2).unbind(-1)
        x = torch.cat([prefixes[i], rest[j]], 1)  # (N p^(L-3), L)
        if not self.opaque:
            return x
        sigma = torch.tensor(list(itertools.permutations(range(p))))  # (p!, p)
        s, k = torch.cartesian_prod(torch.arange(len(sigma)), torch.arange(len(x))).reshape(-1, 2).unbind(-1)
        ends = torch.tensor([ORD, SEP]).expand(len(s), 2)
        return torch.cat([ends[:, :1], LABEL0 + sigma[s], ends[:, 1:], LABEL0 + sigma[s].gather(1, x[k])], 1)


def _count3(x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, p: int) -> torch.Tensor:
    """How many programs (a, b) generate x_1, x_2 from x_0: 1 if x_0 != x_1, p if all equal, else 0."""
    return torch.where(x0 != x1, 1, torch.where(x1 == x2, p, 0))
