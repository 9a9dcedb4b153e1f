"""Bijection elimination: the first wind tunnel of Aggarwal, Dalal & Misra (arXiv 2512.22471).

Each sequence carries its own uniformly random bijection pi on [V] (V! of them, ~2.4e18 for V=20,
so no sequence is ever seen twice and memorisation is impossible). Keys 0..V-1 and values V..2V-1
have separate vocabularies; a sequence is ``k1 v1 k2 v2 ... kL`` (2L-1 tokens) and the model
predicts the value at every key position.

Exact posterior at the i-th key (0-based), from the tokens alone:

* the key appeared earlier (only possible with ``replacement=True``): a point mass on its value;
* otherwise: uniform over the values not yet bound to the distinct keys seen so far. Without
  replacement that is V-i values, so H_Bayes = log2(V-i) bits, the paper's log2(V-k+1) with 1-based
  k (4.32 bits down to 1 bit for V=20, L=19).

The fast oracle is loop-free: without replacement, the pair at which each value is first shown; with
replacement, running counts of the values shown so far and a comparison of each key with the
earlier ones for repeats. The reference enumerates every permutation of [V] consistent
with the pairs seen so far.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from framework.errors import require
from framework.tasks.base import MAX_ENUMERATED, Batch, Task, TaskConfig


@dataclass
class BijectionConfig(TaskConfig):
    name: str = "bijection"
    V: int = 20  # keys, values and classes; paper: 20
    L: int = 19  # key positions per sequence; paper: 19 (37 tokens). The last key's value is never shown.
    replacement: bool = False  # draw keys with replacement: repeated keys give point-mass posteriors

    def __post_init__(self) -> None:
        require(self.V >= 2, "V", f"must be >= 2, got {self.V}")
        require(self.L >= 1, "L", f"must be >= 1, got {self.L}")
        require(
            self.replacement or self.L <= self.V,
            "L",
            f"must be <= V={self.V} when sampling keys without replacement, got {self.L}",
        )


class BijectionTask(Task):
    def __init__(self, config: BijectionConfig):
        self.config = config
        self.name = config.name
        self.V = config.V
        self.L = config.L
        self.vocab_size = 2 * config.V
        self.n_classes = config.V  # class j is the value token V + j
        self.seq_len = 2 * config.L - 1

    def positions(self) -> torch.Tensor:
        return torch.arange(0, self.seq_len, 2)  # (L,) the key positions

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, V, L, device = batch_size, self.V, self.L, generator.device
        pi = torch.rand(B, V, generator=generator, device=device).argsort(-1)  # (B, V) uniform bijection
        if self.config.replacement:
            keys = torch.randint(0, V, (B, L), generator=generator, device=device)  # (B, L)
        else:
            keys = torch.rand(B, V, generator=generator, device=device).argsort(-1)[:, :L]  # (B, L) distinct
        labels = pi.gather(1, keys)  # (B, L) pi(k_i)
        tokens = torch.stack([keys, labels + V], dim=-1).reshape(B, 2 * L)[:, : self.seq_len]  # (B, 2L-1)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        # No loop over positions: which values are bound before key i is a running count over the
        # pairs shown so far, and a repeated key is found by comparing it with every earlier key.
        B, V, L = tokens.shape[0], self.V, self.L
        keys = tokens[:, 0::2]  # (B, L)
        values = tokens[:, 1::2] - V  # (B, L-1): the value shown after key j
        if not self.config.replacement:
            # Value v is still free at key i iff the first pair that shows it is i or later (never: L).
            first = torch.full((B, V), L, dtype=torch.long, device=tokens.device)
            first.scatter_reduce_(1, values, torch.arange(L - 1, device=tokens.device).expand(B, L - 1), "amin")
            free = (first[:, None, :] >= torch.arange(L, device=tokens.device)[None, :, None]).to(torch.float64)
            return free / free.sum(-1, keepdim=True)  # (B, L, V)
        shown = F.one_hot(values, V).cumsum(1)  # (B, L-1, V): times each value was shown in pairs 0..j
        used = torch.cat([torch.zeros(B, 1, V, dtype=shown.dtype, device=tokens.device), shown], 1) > 0  # (B, L, V)
        free = (~used).to(torch.float64)
        out = free / free.sum(-1, keepdim=True)  # (B, L, V) uniform over the values still free
        if self.config.replacement and L > 1:
            before = torch.ones(L, L - 1, dtype=torch.bool, device=tokens.device).tril(-1)  # (L, L-1): pair j < key i
            repeat = (keys[:, :, None] == keys[:, None, : L - 1]) & before  # (B, L, L-1)
            known = repeat.any(-1)  # (B, L) the key was shown before
            earlier = repeat.to(torch.uint8).argmax(-1)  # (B, L) one earlier pair with that key (all agree)
            point = F.one_hot(values.gather(1, earlier), V).to(torch.float64)  # (B, L, V)
            out = torch.where(known[..., None], point, out)
        return out

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Count the permutations of [V] consistent with the pairs seen so far (V! of them: V <= 8)."""
        V, L = self.V, self.L
        if math.factorial(V) > 40320:
            raise ValueError(f"posterior_reference enumerates V! permutations; V={V} is too large (V <= 8)")
        perms = _permutations(V)
        out = torch.zeros(tokens.shape[0], L, V, dtype=torch.float64)
        for b, seq in enumerate(tokens.tolist()):
            for i in range(L):
                seen = [(seq[2 * j], seq[2 * j + 1] - V) for j in range(i)]
                consistent = [p for p in perms if all(p[k] == v for k, v in seen)]
                key = seq[2 * i]
                for value in range(V):
                    out[b, i, value] = sum(p[key] == value for p in consistent) / len(consistent)
        return out.to(tokens.device)

    def count_sequences(self) -> int:
        return count_sequences(self.V, self.L, self.config.replacement)

    def all_sequences(self) -> torch.Tensor:
        """Every ``k1 v1 ... kL`` consistent with some bijection: keys in any allowed order, and each
        first-seen key bound to a value not yet used (a repeated key repeats its value)."""
        V, L = self.V, self.L
        count = self.count_sequences()
        if count > MAX_ENUMERATED:
            raise ValueError(f"bijection V={V}, L={L} has {count:,} sequences; the matrix view enumerates at most "
                             f"{MAX_ENUMERATED:,} (try V <= 5)")
        out: list[list[int]] = []

        def extend(seq: list[int], bound: dict[int, int]) -> None:
            i = len(seq) // 2
            for key in range(V):
                if key in bound and not self.config.replacement:
                    continue
                if i == L - 1:
                    out.append(seq + [key])
                    continue
                values = [bound[key]] if key in bound else [v for v in range(V) if v not in bound.values()]
                for value in values:
                    extend(seq + [key, value + V], {**bound, key: value})

        extend([], {})
        return torch.tensor(out, dtype=torch.long)


def count_sequences(V: int, L: int, replacement: bool) -> int:
    """How many sequences all_sequences() lists, counted without listing them."""
    if not replacement:
        return math.perm(V, L) * math.perm(V, L - 1)
    # with replacement: track how many distinct keys have been seen (d); a new key brings a new value
    ways = {0: 1}
    for i in range(L):
        last = i == L - 1
        nxt: dict[int, int] = {}
        for d, n in ways.items():
            nxt[d] = nxt.get(d, 0) + n * d  # a seen key: its value is fixed
            if d < V:  # a new key, and (unless it is the last token) a new value for it
                nxt[d + 1] = nxt.get(d + 1, 0) + n * (V - d) * (1 if last else V - d)
        ways = nxt
    return sum(ways.values())


@lru_cache(maxsize=None)
def _permutations(V: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(V)))
