"""Causal wind tunnel, mode A (mechanisms in context): read a binary SCM, answer rung-2 and rung-3 queries.

Per sequence a fresh binary SCM over one fixed graph (a CLadder family without latent nodes, see
``framework.tasks.causal_common``): every CPD entry P(v = 1 | parents = c) is drawn uniformly from the
hundredths 0.01 .. 0.99 and written into the sequence as a probability token, together with the
coupling of the exogenous noise (SPEC §5: rung 3 needs the SCM, not just the CPDs). Then Q queries
about the outcome Y, each of one grammar, "given what was seen, what would Y be under do(X = x')":

    [SCM] coupling p_1 .. p_R [SEP] ([SEE] e_X e_Y [DO] x' [ASK]) x Q

* rung 2: e_X = e_Y = [NONE] (nothing seen): the target is P(Y | do(X = x'));
* rung 3: e_X = x, e_Y = y observed on one unit: the target is P(Y_{x'} | X = x, Y = y), which depends on
  the declared coupling: ``independent`` (each parent configuration's response is its own independent
  draw, U_v = (U_{v,c})_c) or ``monotone`` (one uniform U_v shared by all configurations; v = 1 iff
  U_v >= 1 - p_c). These are ``framework.causal.noise``'s two couplings.

Rows are listed node by node in node order, each node's rows in C-order of its parents' values
(the first parent slowest). The model predicts a 2-class distribution over Y at every [ASK].

Vocabulary: ids 0..98 are the probabilities 0.01..0.99 (id = hundredths - 1); then [SCM], [IND],
[MON], [SEP], [SEE], [DO], [ASK], [NONE], and the values 0 and 1.

Labels are exact draws: one fresh unit per query, its exogenous noise drawn in integer hundredths
(every breakpoint 1 - p_c is a multiple of 0.01, so a uniform hundredth is as good as a uniform real),
the factual world gives e_X, e_Y and the intervened world gives the label Y_{x'}.

The fast oracle is the twin network, vectorised: for every joint state of the factual world and of
the intervened world it multiplies one factor per node, P(f_v(c, U_v) = a, f_v(c', U_v) = b), in
closed form for each coupling (one factor because both copies share U_v). The reference enumerates
the exogenous points themselves (every response function, or every interval of U_v) per sequence, in
plain Python, and runs abduction, action and prediction on each.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from framework.errors import require
from framework.tasks.base import Batch, Task, TaskConfig
from framework.tasks.causal_common import GRAPHS, SmallGraph, small_graph

N_PROB = 99  # probability tokens 0.01 .. 0.99
SCM, IND, MON, SEP, SEE, DO, ASK, NONE, V0 = range(N_PROB, N_PROB + 9)  # V0 + v is the value v
COUPLINGS = ("independent", "monotone")
QUERY_LEN = 6  # [SEE] e_X e_Y [DO] x' [ASK]


@dataclass
class CausalMechanismsConfig(TaskConfig):
    name: str = "causal_mechanisms"
    graph: str = "confounding"  # chain | fork | collider | confounding | mediation | diamond | diamondcut
    coupling: str = "independent"  # independent | monotone | mixed (drawn per sequence; the token says which)
    query: str = "mixed"  # do (rung 2) | counterfactual (rung 3) | mixed (each query a fair coin)
    Q: int = 4  # queries per sequence

    def __post_init__(self) -> None:
        require(self.graph in GRAPHS, "graph", f"unknown graph {self.graph!r}; choose one of: {', '.join(GRAPHS)}")
        require(self.coupling in (*COUPLINGS, "mixed"), "coupling",
                f"must be independent, monotone or mixed, got {self.coupling!r}")
        require(self.query in ("do", "counterfactual", "mixed"), "query",
                f"must be do, counterfactual or mixed, got {self.query!r}")
        require(self.Q >= 1, "Q", f"must be >= 1, got {self.Q}")


class CausalMechanismsTask(Task):
    def __init__(self, config: CausalMechanismsConfig):
        self.config = config
        self.name = config.name
        self.graph: SmallGraph = small_graph(config.graph)
        self.R = self.graph.n_rows()
        self.offsets = self.graph.offsets()
        self.header_len = self.R + 3  # [SCM] coupling p_1..p_R [SEP]
        self.vocab_size = V0 + 2
        self.n_classes = 2
        self.seq_len = self.header_len + QUERY_LEN * config.Q
        self._twin = self._twin_tables()

    def positions(self) -> torch.Tensor:
        return self.header_len + QUERY_LEN * torch.arange(self.config.Q) + QUERY_LEN - 1  # (Q,) the [ASK]s

    # ------------------------------------------------------------------ sampling

    def sample(self, batch_size: int, generator: torch.Generator) -> Batch:
        B, Q, g, n, device = batch_size, self.config.Q, self.graph, self.graph.n, generator.device
        hundredths = torch.randint(1, 100, (B, self.R), generator=generator, device=device)  # P(v=1 | c) * 100
        if self.config.coupling == "mixed":
            monotone = torch.rand(B, generator=generator, device=device) < 0.5
        else:
            monotone = torch.full((B,), self.config.coupling == "monotone", device=device)
        if self.config.query == "mixed":
            counterfactual = torch.rand(B, Q, generator=generator, device=device) < 0.5
        else:
            counterfactual = torch.full((B, Q), self.config.query == "counterfactual", device=device)
        x_do = torch.randint(0, 2, (B, Q), generator=generator, device=device)
        # One unit per query: a uniform hundredth per CPD row (independent) or per node (monotone).
        u_rows = torch.randint(0, 100, (B, Q, self.R), generator=generator, device=device)
        u_nodes = torch.randint(0, 100, (B, Q, n), generator=generator, device=device)
        h = hundredths[:, None, :].expand(B, Q, self.R)

        def world(do: torch.Tensor | None) -> torch.Tensor:
            values = torch.zeros(B, Q, n, dtype=torch.long, device=device)
            for v in range(n):
                if do is not None and v == g.x:
                    values[..., v] = do
                    continue
                row = self.offsets[v] + g.config(values, v)  # (B, Q)
                p = h.gather(-1, row[..., None])[..., 0]
                independent = u_rows.gather(-1, row[..., None])[..., 0] < p
                shared = u_nodes[..., v] >= 100 - p
                values[..., v] = torch.where(monotone[:, None], shared, independent).long()
            return values

        factual, intervened = world(None), world(x_do)
        none = torch.full((B, Q), NONE, device=device)
        e_x = torch.where(counterfactual, V0 + factual[..., g.x], none)
        e_y = torch.where(counterfactual, V0 + factual[..., g.y], none)
        const = lambda t: torch.full((B, Q), t, device=device)  # noqa: E731
        queries = torch.stack([const(SEE), e_x, e_y, const(DO), V0 + x_do, const(ASK)], -1).reshape(B, Q * QUERY_LEN)
        head = torch.where(monotone, MON, IND)[:, None]
        tokens = torch.cat([torch.full((B, 1), SCM, device=device), head, hundredths - 1,
                            torch.full((B, 1), SEP, device=device), queries], 1)  # (B, seq_len)
        return Batch(tokens, self.positions().to(device), self.posterior(tokens), intervened[..., g.y])

    # ------------------------------------------------------------------ decoding

    def decode(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The SCM and the queries of each sequence: ``p`` (B, R) float64 P(v=1 | c), ``monotone`` (B,)
        bool, and per query ``x_do`` (B, Q), ``seen_x`` / ``seen_y`` (B, Q) (-1 where nothing was seen)."""
        Q = self.config.Q
        p = (tokens[:, 2 : 2 + self.R] + 1).to(torch.float64) / 100
        q = tokens[:, self.header_len :].reshape(-1, Q, QUERY_LEN)
        seen = lambda t: torch.where(t == NONE, -1, t - V0)  # noqa: E731
        return {"p": p, "monotone": tokens[:, 1] == MON, "x_do": q[..., 4] - V0, "seen_x": seen(q[..., 1]),
                "seen_y": seen(q[..., 2])}

    # ------------------------------------------------------------------ fast oracle: the twin network

    def _twin_tables(self) -> dict[str, torch.Tensor]:
        """Every joint state of the twin network, as constant index tables (K combos).

        A combo is (x', a, b): x' the intervention, a the factual world (n values), b the intervened
        world (n values, b_X = x'). ``cell`` maps it to the table entry (x', a_X, a_Y, b_Y).
        """
        g, n = self.graph, self.graph.n
        combos = []
        for x_do in range(2):
            for a in itertools.product(range(2), repeat=n):
                for rest in itertools.product(range(2), repeat=n - 1):
                    b = list(rest)
                    b.insert(g.x, x_do)
                    combos.append((x_do, a, tuple(b)))
        a = torch.tensor([c[1] for c in combos])  # (K, n)
        b = torch.tensor([c[2] for c in combos])
        rows0 = torch.stack([self.offsets[v] + g.config(a, v) for v in range(n)], 1)  # (K, n)
        rows1 = torch.stack([self.offsets[v] + g.config(b, v) for v in range(n)], 1)
        cell = torch.tensor([c[0] * 8 + c[1][g.x] * 4 + c[1][g.y] * 2 + c[2][g.y] for c in combos])
        return {"a": a, "b": b, "rows0": rows0, "rows1": rows1, "cell": torch.nn.functional.one_hot(cell, 16).double()}

    def twin_table(self, p: torch.Tensor, monotone: torch.Tensor) -> torch.Tensor:
        """(B, 2, 2, 2, 2) float64: P(X = x, Y = y, Y_{x'} = y') indexed [x', x, y, y'] (each x' sums to 1)."""
        t = {k: v.to(p.device) for k, v in self._twin.items()}
        a, b = t["a"], t["b"]  # (K, n)
        q0, q1 = p[:, t["rows0"]], p[:, t["rows1"]]  # (B, K, n) P(v=1 | the row each world uses)
        pa = torch.where(a == 1, q0, 1 - q0)
        pb = torch.where(b == 1, q1, 1 - q1)
        # independent: one draw per row, so the same row in both worlds must give the same value
        same = t["rows0"] == t["rows1"]
        independent = torch.where(same, (a == b) * pa, pa * pb)
        # monotone: v = s on the interval [lo, hi) of the shared U_v; both copies: the overlap
        lo0, hi0 = torch.where(a == 1, 1 - q0, 0.0), torch.where(a == 1, 1.0, 1 - q0)
        lo1, hi1 = torch.where(b == 1, 1 - q1, 0.0), torch.where(b == 1, 1.0, 1 - q1)
        shared = (torch.minimum(hi0, hi1) - torch.maximum(lo0, lo1)).clamp_min(0.0)
        factor = torch.where(monotone[:, None, None], shared, independent)  # (B, K, n)
        factor[..., self.graph.x] = pa[..., self.graph.x]  # X's intervened copy is a constant
        return (factor.prod(-1) @ t["cell"]).reshape(-1, 2, 2, 2, 2)

    def posterior(self, tokens: torch.Tensor) -> torch.Tensor:
        d = self.decode(tokens)
        table = self.twin_table(d["p"], d["monotone"])  # (B, x', x, y, y')
        B, Q = d["x_do"].shape
        picked = table[torch.arange(B, device=tokens.device)[:, None], d["x_do"]]  # (B, Q, x, y, y')

        def allowed(seen: torch.Tensor) -> torch.Tensor:  # (B, Q, 2): the states evidence allows
            return torch.where(seen[..., None] < 0, 1.0, torch.nn.functional.one_hot(seen.clamp_min(0), 2).double())

        joint = torch.einsum("bqxyz,bqx,bqy->bqz", picked, allowed(d["seen_x"]), allowed(d["seen_y"]))
        return joint / joint.sum(-1, keepdim=True)

    # ------------------------------------------------------------------ reference: enumerate the noise

    def exogenous_points(self, p: list[float], monotone: bool) -> list[tuple[float, list]]:
        """(weight, responses) for every point of the exogenous joint; responses[v][c] = f_v(c, u)."""
        g, per_node = self.graph, []
        for v in range(g.n):
            rows = p[self.offsets[v] : self.offsets[v] + g.rows(v)]
            if monotone:  # U_v in [0, 1): the cells between consecutive breakpoints 1 - p_c
                cuts = sorted({0.0, 1.0, *(1 - r for r in rows)})
                cells = [(hi - lo, [int((lo + hi) / 2 >= 1 - r) for r in rows]) for lo, hi in zip(cuts, cuts[1:]) if hi > lo]
            else:  # one independent response per configuration
                cells = []
                for f in itertools.product(range(2), repeat=len(rows)):
                    w = 1.0
                    for r, s in zip(rows, f):
                        w *= r if s else 1 - r
                    cells.append((w, list(f)))
            per_node.append(cells)
        points = []
        for combo in itertools.product(*per_node):
            w = 1.0
            for cw, _ in combo:
                w *= cw
            points.append((w, [f for _, f in combo]))
        return points

    def _run(self, responses: list, x_do: int | None) -> list[int]:
        g, values = self.graph, [0] * self.graph.n
        for v in range(g.n):
            if v == g.x and x_do is not None:
                values[v] = x_do
                continue
            c = 0
            for par in g.parents[v]:
                c = c * 2 + values[par]
            values[v] = responses[v][c]
        return values

    def posterior_reference(self, tokens: torch.Tensor) -> torch.Tensor:
        """Abduction, action, prediction over the explicit exogenous points, one sequence and query at a time."""
        g, Q = self.graph, self.config.Q
        out = torch.zeros(tokens.shape[0], Q, 2, dtype=torch.float64)
        for s, seq in enumerate(tokens.tolist()):
            assert seq[0] == SCM and seq[1] in (IND, MON) and seq[self.header_len - 1] == SEP
            p = [(t + 1) / 100 for t in seq[2 : 2 + self.R]]
            points = self.exogenous_points(p, seq[1] == MON)
            for q in range(Q):
                see, e_x, e_y, do, x_do, ask = seq[self.header_len + QUERY_LEN * q : self.header_len + QUERY_LEN * (q + 1)]
                assert (see, do, ask) == (SEE, DO, ASK)
                joint = [0.0, 0.0]
                for w, responses in points:
                    factual = self._run(responses, None)
                    if e_x != NONE and factual[g.x] != e_x - V0 or e_y != NONE and factual[g.y] != e_y - V0:
                        continue
                    joint[self._run(responses, x_do - V0)[g.y]] += w
                out[s, q, 0], out[s, q, 1] = joint[0] / sum(joint), joint[1] / sum(joint)
        return out.to(tokens.device)
