"""The causal wind tunnels (modes A and B): fast oracles against the task's own reference and against
framework.causal's exact engine (the independent reference), the token layouts, the Batch contract,
calibrated labels, the SPEC §5 posterior-predictive identity by Monte Carlo, and bad configs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.causal import DiscreteSCM, counterfactual, family, interventional, marginal
from framework.errors import ConfigError
from framework.tasks import Batch, CausalMechanismsConfig, CausalSamplesConfig, build_task
from framework.tasks.causal_common import GRAPHS
from framework.tasks.causal_mechanisms import ASK, DO, IND, MON, NONE, SCM, SEE, SEP, V0
from task_checks import SEEDS, assert_calibrated, check_batch, gen

GRAPH_NAMES = sorted(GRAPHS)

# ================================================================ mode A: mechanisms in context


def engine_answers_mode_a(task, tokens: torch.Tensor) -> torch.Tensor:
    """Every query answered by framework.causal: the SCM rebuilt from the tokens, then the named queries."""
    dag = family(task.config.graph)
    out = torch.zeros(tokens.shape[0], task.config.Q, 2, dtype=torch.float64)
    for b, seq in enumerate(tokens.tolist()):
        p = [(t + 1) / 100 for t in seq[2 : 2 + task.R]]
        cpds, at = {}, 0
        for v in dag.nodes:  # rows node by node, C-order of the parents, as the task lists them
            k = 2 ** len(dag.parents(v))
            cpds[v] = np.array([[1 - q, q] for q in p[at : at + k]])
            at += k
        scm = DiscreteSCM(dag, cpds, coupling="monotone" if seq[1] == MON else "independent")
        for q in range(task.config.Q):
            _, e_x, e_y, _, x_do, _ = seq[task.header_len + 6 * q : task.header_len + 6 * (q + 1)]
            if e_x == NONE:
                out[b, q] = torch.from_numpy(interventional(scm, "Y", {"X": x_do - V0}))
            else:
                out[b, q] = torch.from_numpy(counterfactual(scm, "Y", {"X": x_do - V0}, {"X": e_x - V0, "Y": e_y - V0}))
    return out


@st.composite
def mechanisms_configs(draw) -> CausalMechanismsConfig:
    return CausalMechanismsConfig(graph=draw(st.sampled_from(GRAPH_NAMES)),
                                  coupling=draw(st.sampled_from(["independent", "monotone", "mixed"])),
                                  query=draw(st.sampled_from(["do", "counterfactual", "mixed"])), Q=draw(st.integers(1, 3)))


@settings(max_examples=40, deadline=None)
@given(cfg=mechanisms_configs(), seed=SEEDS, B=st.integers(1, 3))
def test_mode_a_oracle_matches_the_engine_and_the_noise_enumeration(cfg, seed, B):
    task = build_task(cfg)
    batch = task.sample(B, gen(seed))
    check_batch(task, batch, B)
    torch.testing.assert_close(batch.posterior, engine_answers_mode_a(task, batch.tokens), rtol=0, atol=1e-9)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)


def test_mode_a_layout_and_vocabulary():
    cfg = CausalMechanismsConfig(graph="confounding", coupling="mixed", Q=5)
    task = build_task(cfg)
    # confounding: V1 (1 row), X (2 rows), Y (4 rows) = 7 probability tokens
    assert (task.R, task.header_len, task.seq_len, task.vocab_size, task.n_classes) == (7, 10, 40, 109, 2)
    assert torch.equal(task.positions(), 10 + 6 * torch.arange(5) + 5)
    batch = task.sample(512, gen(1))
    t = batch.tokens
    assert bool((t[:, 0] == SCM).all()) and bool(((t[:, 1] == IND) | (t[:, 1] == MON)).all())
    assert bool((t[:, 2:9] < 99).all()) and bool((t[:, 9] == SEP).all())
    q = t[:, 10:].reshape(512, 5, 6)
    assert bool((q[..., 0] == SEE).all()) and bool((q[..., 3] == DO).all()) and bool((q[..., 5] == ASK).all())
    none_x, none_y = q[..., 1] == NONE, q[..., 2] == NONE
    assert torch.equal(none_x, none_y), "rung 2 sees nothing, rung 3 sees both X and Y"
    assert 0.4 < float(none_x.double().mean()) < 0.6 and 0.4 < float((t[:, 1] == MON).double().mean()) < 0.6
    assert bool(((q[..., 4] == V0) | (q[..., 4] == V0 + 1)).all())


def test_mode_a_consistency_and_coupling_dependence():
    # Consistency: seen X = x, asked Y_x, the answer is the Y that was seen, under either coupling.
    task = build_task(CausalMechanismsConfig(graph="mediation", coupling="mixed", query="counterfactual", Q=6))
    batch = task.sample(400, gen(2))
    d = task.decode(batch.tokens)
    same = d["x_do"] == d["seen_x"]
    assert bool(same.any())
    seen_y = torch.nn.functional.one_hot(d["seen_y"][same], 2).double()
    torch.testing.assert_close(batch.posterior[same], seen_y, rtol=0, atol=1e-12)
    # Rung 2 ignores the coupling; rung 3 does not.
    flipped = batch.tokens.clone()
    flipped[:, 1] = torch.where(flipped[:, 1] == MON, IND, MON)
    do_only = build_task(CausalMechanismsConfig(graph="mediation", coupling="independent", query="do", Q=3))
    rung2 = do_only.sample(64, gen(3)).tokens
    rung2_flipped = rung2.clone()
    rung2_flipped[:, 1] = MON
    torch.testing.assert_close(do_only.posterior(rung2), do_only.posterior(rung2_flipped), rtol=0, atol=1e-12)
    differ = (task.posterior(flipped) - batch.posterior).abs()[~same]
    assert float(differ.max()) > 0.05


def test_mode_a_labels_are_calibrated_and_a_wrong_coupling_is_caught():
    task = build_task(CausalMechanismsConfig(graph="mediation", coupling="monotone", query="counterfactual", Q=4))
    batch = task.sample(6000, gen(4))
    check_batch(task, batch, 6000)
    assert_calibrated(batch)
    flipped = batch.tokens.clone()
    flipped[:, 1] = IND
    wrong = task.posterior(flipped)
    # group by what was seen: (seen Y, class), which is where the two couplings differ most
    seen_y = task.decode(batch.tokens)["seen_y"]
    groups = (2 * seen_y[..., None] + torch.arange(2)).expand(-1, -1, 2)
    with pytest.raises(AssertionError, match="disagree"):
        assert_calibrated(Batch(batch.tokens, batch.positions, wrong, batch.labels), groups)
    assert_calibrated(batch, groups)


# ================================================================ mode B: samples in context


def posterior_mean_scm(task, samples: np.ndarray) -> DiscreteSCM:
    """Dirichlet(alpha + counts) posterior means of every row, counted here with numpy, as an SCM."""
    dag, card, alpha = family(task.config.graph), task.config.card, task.config.alpha
    cpds = {}
    for v in dag.nodes:
        pa = [dag.nodes.index(p) for p in dag.parents(v)]
        counts = np.zeros((card,) * len(pa) + (card,))
        for s in samples:
            counts[tuple(s[pa]) + (s[dag.nodes.index(v)],)] += 1
        cpds[v] = (counts + alpha) / (counts.sum(-1, keepdims=True) + card * alpha)
    return DiscreteSCM(dag, cpds)


def engine_answers_mode_b(task, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    data, x_do = task.decode(tokens)
    P, card = len(task.samples_seen()), task.config.card
    do, seen = torch.zeros(tokens.shape[0], P, card, dtype=torch.float64), torch.zeros(tokens.shape[0], P, card, dtype=torch.float64)
    for b in range(tokens.shape[0]):
        for q, k in enumerate(task.samples_seen().tolist()):
            scm = posterior_mean_scm(task, data[b, :k].numpy())
            x = int(x_do[b, q])
            do[b, q] = torch.from_numpy(interventional(scm, "Y", {"X": x}))
            seen[b, q] = torch.from_numpy(marginal(scm, "Y", {"X": x}))
    return do, seen


@st.composite
def samples_configs(draw) -> CausalSamplesConfig:
    n = draw(st.integers(1, 10))
    return CausalSamplesConfig(graph=draw(st.sampled_from(GRAPH_NAMES)), card=draw(st.integers(2, 3)), n=n,
                               every=draw(st.integers(1, n)), alpha=draw(st.integers(1, 3)))


@settings(max_examples=30, deadline=None)
@given(cfg=samples_configs(), seed=SEEDS, B=st.integers(1, 3))
def test_mode_b_oracles_match_the_engine_at_posterior_mean_cpds(cfg, seed, B):
    task = build_task(cfg)
    batch = task.sample(B, gen(seed))
    check_batch(task, batch, B)
    do, seen = engine_answers_mode_b(task, batch.tokens)
    torch.testing.assert_close(batch.posterior, do, rtol=0, atol=1e-9)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    obs = task.observational_predictive(batch.tokens)
    torch.testing.assert_close(obs, seen, rtol=0, atol=1e-9)
    torch.testing.assert_close(obs, task.observational_reference(batch.tokens), rtol=0, atol=1e-9)


def test_mode_b_layout():
    task = build_task(CausalSamplesConfig(graph="confounding", n=8, every=3))
    assert (task.seq_len, task.vocab_size, task.n_classes) == (1 + 3 + 24, 9, 2)
    assert task.samples_seen().tolist() == [0, 3, 6]
    assert task.positions().tolist() == [1, 11, 21]
    t = task.sample(64, gen(5)).tokens
    assert bool((t[:, 0] == task.BOS).all())
    assert bool((t[:, task.positions()] >= task.DO0).all())
    body = [i for i in range(1, task.seq_len) if i not in task.positions().tolist()]
    var = torch.tensor(body[: 24]).reshape(8, 3)
    for v in range(3):  # each sample lists V1, X, Y in node order, value tokens 2v, 2v + 1
        assert bool(((t[:, var[:, v]] // 2) == v).all())


def test_mode_b_posterior_predictive_is_the_posterior_average_of_the_do_distribution():
    # SPEC §5 by Monte Carlo: average P(y | do(x), theta) over theta ~ the Dirichlet posterior.
    task = build_task(CausalSamplesConfig(graph="confounding", n=12, every=12, alpha=2))
    batch = task.sample(3, gen(6))
    data, x_do = task.decode(batch.tokens)
    rng = np.random.default_rng(0)
    for b in range(3):
        s, x = data[b].numpy(), int(x_do[b, 1])  # after all 12 samples
        v1 = rng.dirichlet(2 + np.bincount(s[:, 0], minlength=2), size=200_000)  # (M, 2) P(V1)
        in_cell = (s[:, 0] == 0) & (s[:, 1] == x), (s[:, 0] == 1) & (s[:, 1] == x)
        y_rows = [rng.dirichlet(2 + np.bincount(s[c, 2], minlength=2), size=200_000) for c in in_cell]
        draws = v1[:, :1] * y_rows[0][:, 1:] + v1[:, 1:] * y_rows[1][:, 1:]  # P(Y=1 | do(x), theta)
        est, sem = draws.mean(), draws.std() / np.sqrt(len(draws))
        assert abs(est - float(batch.posterior[b, 1, 1])) < 5 * sem + 1e-12


def test_mode_b_confounding_separates_do_from_see_and_mediation_does_not():
    conf = build_task(CausalSamplesConfig(graph="confounding", n=32))
    b = conf.sample(256, gen(7))
    gap = (conf.observational_predictive(b.tokens) - b.posterior).abs()
    assert float(gap[:, 0].max()) < 1e-12  # no data: both are the prior predictive
    assert float(gap[:, -1].mean()) > 0.01
    med = build_task(CausalSamplesConfig(graph="mediation", n=32))  # X has no parents: see = do
    b = med.sample(256, gen(7))
    torch.testing.assert_close(med.observational_predictive(b.tokens), b.posterior, rtol=0, atol=1e-12)


def test_mode_b_labels_are_calibrated():
    task = build_task(CausalSamplesConfig(graph="diamondcut", card=3, n=12, every=4))
    batch = task.sample(6000, gen(8))
    check_batch(task, batch, 6000)
    assert_calibrated(batch)


# ================================================================ both


def test_bad_configs_name_the_field():
    cases = [
        (lambda: CausalMechanismsConfig(graph="iv"), "graph", "unknown graph 'iv'"),
        (lambda: CausalMechanismsConfig(coupling="shared"), "coupling", "got 'shared'"),
        (lambda: CausalMechanismsConfig(query="see"), "query", "got 'see'"),
        (lambda: CausalMechanismsConfig(Q=0), "Q", "got 0"),
        (lambda: CausalSamplesConfig(graph="frontdoor"), "graph", "unknown graph 'frontdoor'"),
        (lambda: CausalSamplesConfig(card=1), "card", "got 1"),
        (lambda: CausalSamplesConfig(n=0), "n", "got 0"),
        (lambda: CausalSamplesConfig(n=4, every=5), "every", "[1, n=4], got 5"),
        (lambda: CausalSamplesConfig(alpha=0), "alpha", "got 0"),
        (lambda: CausalSamplesConfig(alpha=0.5), "alpha", "integer"),
        (lambda: build_task({"name": "causal_samples", "samples": 3}), "samples", "not a field"),
    ]
    for make, field, message in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == field and message in info.value.message, (field, info.value)


@pytest.mark.parametrize("cfg", [CausalMechanismsConfig(coupling="mixed"), CausalSamplesConfig(card=3)],
                         ids=["mechanisms", "samples"])
def test_same_seed_same_batch_and_generator_device(cfg):
    task = build_task(cfg)
    a, b, c = task.sample(8, gen(9)), task.sample(8, gen(9)), task.sample(8, gen(10))
    for x, y in zip((a.tokens, a.labels, a.posterior), (b.tokens, b.labels, b.posterior)):
        assert torch.equal(x, y)
    assert not torch.equal(a.tokens, c.tokens)
    if torch.cuda.is_available():
        batch = task.sample(8, torch.Generator("cuda").manual_seed(9))
        assert batch.tokens.device.type == "cuda"
        torch.testing.assert_close(batch.posterior.cpu(), task.posterior_reference(batch.tokens.cpu()), rtol=0, atol=1e-9)
