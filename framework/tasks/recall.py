"""Associative recall: the binding wind tunnel of Aggarwal, Dalal & Misra (arXiv 2512.22471, SPEC §3).

Each sequence carries its own hidden injective map from keys to values (a fresh one per sequence,
so nothing can be memorised across sequences). N of its pairs are stored, then come filler tokens,
then Q queries::

    STORE k1 SEP v1 ... STORE kN SEP vN  f1 .. fF  QUERY q1 QUERY q2 .. QUERY qQ

Vocabulary: keys 0..n_keys-1, values n_keys..n_keys+n_values-1, then STORE, SEP, QUERY, then
``filler_vocab`` filler tokens (drawn uniformly and independently; they carry no information). The
model predicts the value at every queried key token (positions 4N+F+1, 4N+F+3, ...); class j is the
value token n_keys + j. Keys are distinct within a sequence, and so are values (the map is
injective). The queried keys are distinct too: ``Q - unstored`` of the stored keys and ``unstored``
keys that were never stored, in a uniformly random order.

Exact posterior at a query, from the tokens alone:

* a stored key: a point mass on its stored value (the paper's task; ``unstored = 0`` by default);
* a key that was not stored: its value is hidden, and because the map is injective it is uniform
  over the n_values - N values not used by the stored pairs (log2(n_values - N) bits).

Labels are the values of the hidden map, so for an unstored key the label is a draw from exactly that
posterior (and two unstored queries never share a label). The fast oracle matches the query against
the stored keys in one batched comparison; the reference enumerates every injective assignment of
values to the keys in the sequence that agrees with the stored pairs.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from framework.errors import require
from framework.tasks.base import MAX_ENUMERATED, Batch, Task, TaskConfig


@dataclass
class RecallConfig(TaskConfig):
    name: str = "recall"
    N: int = 8  # stored pairs; paper code: 64
    n_keys: int = 32  # key vocabulary; paper code: 256
    n_values: int = 32  # value vocabulary = classes; paper code: 256
    filler: int = 4  # filler tokens between the store and the queries (the recall distance grows with it)
    filler_vocab: int = 4  # distinct filler tokens, drawn uniformly; 1 gives a constant gap
    Q: int = 8  # queries per sequence, all distinct keys
    unstored: int = 0  # how many of the Q queries ask for a key that was not stored (uniform posterior)

    def __post_init__(self) -> None:
        require(self.N >= 1, "N", f"must be >= 1, got {self.N}")
        require(self.N <= self.n_keys, "N", f"must be <= n_keys={self.n_keys} (stored keys are distinct), got {self.N}")
        require(self.n_values >= 2, "n_values", f"must be >= 2, got {self.n_values}")
        require(self.n_values >= self.N, "N", f"must be <= n_values={self.n_values} (values are distinct), got {self.N}")
        require(self.filler >= 0, "filler", f"must be >= 0, got {self.filler}")
        require(self.filler_vocab >= 1, "filler_vocab", f"must be >= 1, got {self.filler_vocab}")
        require(self.Q >= 1, "Q", f"must be >= 1, got {self.Q}")
        require(0 <= self.unstored <= self.Q, "unstored", f"must be in [0, Q={self.Q}], got {self.unstored}")
        require(
            self.Q - self.unstored <= self.N,
            "Q",
            f"queries of stored keys are distinct, so Q - unstored must be <= N={self.N}, got {self.Q - self.unstored}",
        )
        require(
            self.unstored <= self.n_keys - self.N,
            "unstored",
            f"must be <= n_keys - N = {self.n_keys - self.N} (keys never stored), got {self.unstored}",
        )
        require(
            self.N + self.unstored <= self.n_values,
            "unstored",
            f"the hidden map is injective, so N + unstored must be <= n_values={self.n_values}, "
            f"got {self.N + self.unstored}",
        )


class RecallTask(Task):
    def __init__(self, config: RecallConfig):
        self.config = config
        self.name = config.name
        self.N, self.Q, self.U = config.N, config.Q, config.unstored
        self.n_keys, self.n_values = config.n_keys, config.n_values
        self.STORE = config.n_keys + config.n_values
        self.SEP = self.STORE + 1
        self.QUERY = self.STORE + 2
        self.FILLER0 = self.STORE + 3  # filler token f is FILLER0 + f
        self.vocab_size = self.FILLER0 + config.filler_vocab
        self.n_classes = config.n_values  # class j is the value token n_keys + j
        self.query_start = 4 * config.N + config.filler  # the first QUERY marker
        self.seq_len = self.query_start + 2 * config.Q

    def positions(self) -> torch.Tensor:
        return self.query_start + 1 + 2 * torch.arange(self.Q)  # (Q,) the queried key tokens

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, N, Q, U, device = batch_size, self.N, self.Q, self.U, generator.device
        cfg = self.config
        keys = torch.rand(B, cfg.n_keys, generator=generator, device=device).argsort(-1)  # (B, n_keys)
        values = torch.rand(B, cfg.n_values, generator=generator, device=device).argsort(-1)  # (B, n_values)
        # The hidden injective map sends keys[:, i] to values[:, i]; the first N pairs are stored.
        pick = torch.rand(B, N, generator=generator, device=device).argsort(-1)[:, : Q - U]  # (B, Q-U)
        q_keys = torch.cat([keys.gather(1, pick), keys[:, N : N + U]], 1)  # (B, Q)
        q_values = torch.cat([values.gather(1, pick), values[:, N : N + U]], 1)  # (B, Q)
        order = torch.rand(B, Q, generator=generator, device=device).argsort(-1)  # unstored queries anywhere
        q_keys, labels = q_keys.gather(1, order), q_values.gather(1, order)
        fill = torch.randint(0, cfg.filler_vocab, (B, cfg.filler), generator=generator, device=device)
        tokens = self._assemble(keys[:, :N], values[:, :N], fill, q_keys)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), labels)

    def _assemble(self, keys: torch.Tensor, values: torch.Tensor, fill: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Stored keys (B, N), stored values (B, N) as classes, filler (B, F) and query keys (B, Q) -> tokens."""
        B, N, Q = keys.shape[0], self.N, self.Q

        def const(token: int, n: int) -> torch.Tensor:
            return torch.full((B, n), token, dtype=torch.long, device=keys.device)

        store = torch.stack([const(self.STORE, N), keys, const(self.SEP, N), values + self.n_keys], -1)  # (B, N, 4)
        query = torch.stack([const(self.QUERY, Q), queries], -1)  # (B, Q, 2)
        return torch.cat([store.reshape(B, 4 * N), fill + self.FILLER0, query.reshape(B, 2 * Q)], 1)  # (B, T)

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        N, C = self.N, self.n_classes
        stored_keys = tokens[:, 1 : 4 * N : 4]  # (B, N)
        stored = torch.nn.functional.one_hot(tokens[:, 3 : 4 * N : 4] - self.n_keys, C).to(torch.float64)  # (B, N, C)
        queries = tokens[:, self.positions().to(tokens.device)]  # (B, Q)
        match = (queries[:, :, None] == stored_keys[:, None, :]).to(torch.float64)  # (B, Q, N)
        point = match @ stored  # (B, Q, C): the stored value's one-hot, or zeros for an unstored key
        free = 1.0 - stored.sum(1, keepdim=True)  # (B, 1, C): values no stored pair uses
        uniform = free / free.sum(-1, keepdim=True)
        return torch.where(match.sum(-1, keepdim=True) > 0, point, uniform)

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Enumerate every injective value assignment to the keys of the sequence; keep those that
        agree with the stored pairs; read off each query's value (P(n_values, #keys) maps: tiny configs)."""
        N, C = self.N, self.n_classes
        out = torch.zeros(tokens.shape[0], self.Q, C, dtype=torch.float64)
        for b, seq in enumerate(tokens.tolist()):
            pairs = {seq[4 * i + 1]: seq[4 * i + 3] - self.n_keys for i in range(N)}
            queries = [seq[p] for p in self.positions().tolist()]
            keys = sorted(set(pairs) | set(queries))
            if math.perm(C, len(keys)) > 10**5:
                raise ValueError(f"posterior_reference enumerates P({C}, {len(keys)}) maps; use a smaller config")
            maps = [dict(zip(keys, vs)) for vs in itertools.permutations(range(C), len(keys))]
            consistent = [m for m in maps if all(m[k] == v for k, v in pairs.items())]
            for j, q in enumerate(queries):
                for m in consistent:
                    out[b, j, m[q]] += 1.0 / len(consistent)
        return out.to(tokens.device)

    def count_sequences(self) -> int:
        """How many distinct sequences the sampler can produce (what :meth:`all_sequences` lists)."""
        cfg, N, Q, U = self.config, self.N, self.Q, self.U
        return (
            math.perm(cfg.n_keys, N)  # ordered distinct stored keys
            * math.perm(cfg.n_values, N)  # their distinct values
            * cfg.filler_vocab**cfg.filler
            * math.comb(Q, U)  # which queries ask for unstored keys
            * math.perm(N, Q - U)  # the stored keys queried, in order
            * math.perm(cfg.n_keys - N, U)  # the unstored keys queried, in order
        )

    def all_sequences(self) -> torch.Tensor:
        cfg, N, Q, U = self.config, self.N, self.Q, self.U
        count = self.count_sequences()
        if count > MAX_ENUMERATED:
            raise ValueError(
                f"recall N={N}, n_keys={cfg.n_keys}, n_values={cfg.n_values}, filler={cfg.filler}, "
                f"filler_vocab={cfg.filler_vocab}, Q={Q} has {count:,} sequences; the matrix view enumerates at most "
                f"{MAX_ENUMERATED:,} (try N=2, n_keys=n_values=3, Q=2, filler=0)"
            )
        store_and_queries = []  # (stored keys, query keys) for every allowed combination
        for keys in itertools.permutations(range(cfg.n_keys), N):
            never = [k for k in range(cfg.n_keys) if k not in keys]
            for slots in itertools.combinations(range(Q), U):
                rest = [j for j in range(Q) if j not in slots]
                for asked in itertools.permutations(keys, Q - U):
                    for missing in itertools.permutations(never, U):
                        queries = [0] * Q
                        for j, k in zip(rest, asked):
                            queries[j] = k
                        for j, k in zip(slots, missing):
                            queries[j] = k
                        store_and_queries.append(list(keys) + queries)
        kq = _table(store_and_queries, N + Q)  # (A, N+Q)
        vals = _table(itertools.permutations(range(cfg.n_values), N), N)  # (V, N)
        fill = _table(itertools.product(range(cfg.filler_vocab), repeat=cfg.filler), cfg.filler)  # (F, filler)
        a, v, f = torch.cartesian_prod(
            torch.arange(len(kq)), torch.arange(len(vals)), torch.arange(len(fill))
        ).reshape(-1, 3).unbind(-1)  # every combination of the three independent parts
        return self._assemble(kq[a, :N], vals[v], fill[f], kq[a, N:])


def _table(rows, width: int) -> torch.Tensor:
    """Rows of ints -> (n, width) long, also when width is 0."""
    rows = list(rows)
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), width)
