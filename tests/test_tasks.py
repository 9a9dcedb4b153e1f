"""Wind-tunnel tasks: fast oracles against enumeration, exact entropies, parameter tokens, and the
calibration of each oracle against its own sampler (labels drawn by the sampler must be distributed
as the oracle says)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import ConfigError
from framework.tasks import TASKS, Batch, BijectionConfig, HMMConfig, build_task
from framework.tasks.hmm import EMIT, OBS, SEP, SYMBOL0, TRANS, HMMTask, discretise_rows, draw_hundredths, sample_rows
from task_checks import SEEDS, assert_calibrated, check_distributions, check_interface, entropy_bits, gen


@st.composite
def bijection_configs(draw) -> BijectionConfig:
    V = draw(st.integers(2, 6))
    replacement = draw(st.booleans())
    L = draw(st.integers(1, 2 * V if replacement else V))
    return BijectionConfig(V=V, L=L, replacement=replacement)


@settings(max_examples=200, deadline=None)
@given(cfg=bijection_configs(), seed=SEEDS, B=st.integers(1, 4))
def test_bijection_oracle_matches_permutation_enumeration(cfg, seed, B):
    task = build_task(cfg)
    batch = task.sample(B, gen(seed))
    check_interface(task, batch, B)
    check_distributions(batch)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(S=st.integers(2, 4), O=st.integers(2, 4), K=st.integers(1, 5), seed=SEEDS, B=st.integers(1, 3))
def test_hmm_oracle_matches_forward_reference_and_path_enumeration(S, O, K, seed, B):
    task = build_task(HMMConfig(S=S, O=O, K=K))
    batch = task.sample(B, gen(seed))
    check_interface(task, batch, B)
    check_distributions(batch)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    torch.testing.assert_close(batch.posterior, task.posterior_enumeration(batch.tokens), rtol=0, atol=1e-9)


def test_hmm_forward_reference_matches_enumeration_on_long_sequences():
    # The enumeration is exponential in K; the numpy forward reference is not, so at K=8 it is the
    # bridge between the brute force and the fast oracle at training lengths.
    task = build_task(HMMConfig(S=3, O=3, K=8))
    tokens = task.sample(2, gen(5)).tokens
    torch.testing.assert_close(task.posterior_reference(tokens), task.posterior_enumeration(tokens), rtol=0, atol=1e-12)


def test_hmm_oracle_matches_reference_at_paper_size_and_length_50():
    for K in (20, 50):
        task = HMMTask(replace(HMMConfig(), K=K))
        batch = task.sample(16, gen(K))
        check_distributions(batch)
        torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)


# ---------------------------------------------------------------- bijection facts


@pytest.mark.parametrize("V,L", [(20, 19), (20, 20), (7, 3), (2, 2)])
def test_bijection_without_replacement_entropy_is_log2_of_remaining_values(V, L):
    task = build_task(BijectionConfig(V=V, L=L))
    batch = task.sample(64, gen(1))
    check_interface(task, batch, 64)
    check_distributions(batch)
    keys = batch.tokens[:, 0::2]
    assert all(len(set(row)) == L for row in keys.tolist()), "keys repeat without replacement"
    expected = torch.tensor([math.log2(V - i) for i in range(L)], dtype=torch.float64)
    torch.testing.assert_close(entropy_bits(batch.posterior), expected.expand(64, L), rtol=0, atol=1e-12)
    # The shown values are the bijection applied to the keys, and each value appears once.
    assert torch.equal(batch.tokens[:, 1::2], batch.labels[:, : L - 1] + V)


def test_bijection_with_replacement_repeated_keys_are_certain():
    V, L = 6, 16
    task = build_task(BijectionConfig(V=V, L=L, replacement=True))
    batch = task.sample(256, gen(2))
    check_distributions(batch)
    H = entropy_bits(batch.posterior)
    keys, n_repeats = batch.tokens[:, 0::2].tolist(), 0
    for b, row in enumerate(keys):
        for i, k in enumerate(row):
            seen = set(row[:i])
            if k in seen:
                n_repeats += 1
                assert H[b, i].item() == 0.0
                assert batch.posterior[b, i, batch.labels[b, i]].item() == 1.0
            else:
                assert H[b, i].item() == pytest.approx(math.log2(V - len(seen)), abs=1e-12)
    assert n_repeats > 1000  # the with-replacement mode actually repeats keys (about 60% here)
    # The same key always shows the same value inside a sequence: a bijection, not fresh draws.
    for row_k, row_v in zip(keys, batch.labels.tolist()):
        assert len({k: v for k, v in zip(row_k, row_v)}) == len(set(zip(row_k, row_v)))


def chi_square(counts: torch.Tensor) -> float:
    expected = counts.sum() / counts.numel()
    return float(((counts - expected) ** 2 / expected).sum())


def test_bijection_and_key_order_are_uniform_permutations():
    # With V = L = 4 a sequence shows its whole bijection (the last value is the one left over) and
    # its whole key order: both must be uniform over the 24 permutations, independently. The
    # calibration test cannot see a biased bijection, because random keys average the bias out.
    V, n = 4, 48_000
    batch = build_task(BijectionConfig(V=V, L=V)).sample(n, gen(14))
    keys, values = batch.tokens[:, 0::2], batch.labels
    pi = torch.empty(n, V, dtype=torch.long).scatter_(1, keys, values)  # pi[k] = value of key k
    assert torch.equal(pi.sort(-1).values, torch.arange(V).expand(n, V))

    def perm_id(perm: torch.Tensor) -> torch.Tensor:  # (n, V) permutations -> (n,) ids in 0..23
        ids, inverse = torch.unique((perm * V ** torch.arange(V)).sum(-1), return_inverse=True)
        assert len(ids) == 24
        return inverse

    joint = torch.bincount(perm_id(pi) * 24 + perm_id(keys), minlength=576).reshape(24, 24).double()
    # Bounds are the chi-square quantiles at p = 1e-6 (23 and 575 degrees of freedom).
    assert chi_square(joint.sum(1)) < 70.5, "the bijection is not uniform"
    assert chi_square(joint.sum(0)) < 70.5, "the key order is not uniform"
    assert chi_square(joint) < 751, "bijection and key order are not uniform and independent"


def test_categorical_draw_is_exact_in_hundredths():
    q = torch.tensor([[5, 20, 75], [95, 0, 5]])  # hundredths; the zero entry must never be drawn
    n = 200_000
    rows = q.repeat_interleave(n, 0)
    draws = draw_hundredths(rows.cumsum(-1), gen(15)).reshape(2, n)
    for row, d in zip(q, draws):
        counts = torch.bincount(d, minlength=3).double()
        assert counts[row == 0].sum() == 0
        expected = row.double() / 100 * n
        used = row > 0
        bound = {2: 27.6, 1: 23.9}[int(used.sum()) - 1]  # chi-square quantile at p = 1e-6
        assert float(((counts[used] - expected[used]) ** 2 / expected[used]).sum()) < bound


def test_bijection_posterior_ignores_later_tokens():
    task = build_task(BijectionConfig(V=8, L=8))
    a, b = task.sample(32, gen(3)).tokens, task.sample(32, gen(4)).tokens
    mixed = torch.cat([a[:, :7], b[:, 7:]], 1)  # same first 4 keys (positions 0, 2, 4, 6)
    torch.testing.assert_close(task.posterior(mixed)[:, :4], task.posterior(a)[:, :4], rtol=0, atol=0)


# ---------------------------------------------------------------- HMM parameters and layout


@pytest.mark.parametrize("S,O,K", [(5, 5, 20), (3, 4, 2), (20, 20, 2), (2, 20, 1)])
def test_hmm_parameter_tokens_and_layout(S, O, K):
    task = build_task(HMMConfig(S=S, O=O, K=K))
    B = 512
    batch = task.sample(B, gen(6))
    check_interface(task, batch, B)
    check_distributions(batch)
    tok = batch.tokens
    assert task.vocab_size == 100 + O and task.seq_len == 3 + S * S + S * O + 2 * K
    assert bool((tok[:, 0] == TRANS).all()) and bool((tok[:, 1 + S * S] == EMIT).all())
    assert bool((tok[:, 2 + S * S + S * O] == SEP).all())
    obs_marks = 3 + S * S + S * O + 2 * torch.arange(K)
    assert bool((tok[:, obs_marks] == OBS).all())
    assert torch.equal(task.positions(), obs_marks + 1)
    symbols = tok[:, task.positions()]
    assert bool(((symbols >= SYMBOL0) & (symbols < SYMBOL0 + O)).all())
    params = torch.cat([tok[:, 1 : 1 + S * S], tok[:, 2 + S * S : 2 + S * S + S * O]], 1)
    assert bool(((params >= 0) & (params <= 95)).all()), "parameter tokens outside the 96 probability tokens"
    hundredths_t = tok[:, 1 : 1 + S * S].reshape(B, S, S) + 5
    hundredths_e = tok[:, 2 + S * S : 2 + S * S + S * O].reshape(B, S, O) + 5
    assert bool((hundredths_t.sum(-1) == 100).all()) and bool((hundredths_e.sum(-1) == 100).all())
    T, E = task.decode_parameters(tok)
    assert T.shape == (B, S, S) and E.shape == (B, S, O) and T.dtype == torch.float64
    for M in (T, E):
        assert float(M.min()) >= 0.05 - 1e-15
        torch.testing.assert_close(M.sum(-1), torch.ones(M.shape[:2], dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(T * 100, hundredths_t.double(), rtol=0, atol=1e-9)


def test_hmm_header_does_not_depend_on_length():
    short, long_ = build_task(HMMConfig(K=20)), build_task(HMMConfig(K=50))
    assert short.header_len == long_.header_len and torch.equal(long_.positions()[:20], short.positions())
    assert short.vocab_size == long_.vocab_size == 105 and long_.seq_len == 53 + 100


def test_hmm_rows_are_roughly_dirichlet_one():
    # Dirichlet(1, 1) on two entries: the first is uniform on [0, 1]; after the 0.05 clip and
    # rounding, hundredths 6..94 are equally likely (1/100 each) and the two ends get ~6/100.
    q = sample_rows((200_000,), 2, gen(7))[:, 0]
    freq = torch.bincount(q, minlength=101).double() / len(q)
    assert float(freq[:5].sum()) == 0.0 and float(freq[96:].sum()) == 0.0
    torch.testing.assert_close(freq[6:95], torch.full((89,), 0.01, dtype=torch.float64), rtol=0, atol=0.0012)
    assert abs(float(freq[5]) - 0.055) < 0.0025 and abs(float(freq[95]) - 0.055) < 0.0025


@settings(max_examples=200, deadline=None)
@given(n=st.integers(2, 20), data=st.data())
def test_discretised_rows_keep_floor_and_sum_to_exactly_100(n, data):
    weights = data.draw(st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda w: sum(w) > 0))
    p = torch.tensor(weights, dtype=torch.float64)
    p = (p / p.sum()).clamp(min=0.05)
    p = p / p.sum()
    q = discretise_rows(p)
    assert int(q.sum()) == 100 and int(q.min()) >= 5
    # Apart from the residual, q is the floored rounding, and the fix-up moves entries one way only.
    rounded = torch.round(100 * p).long().clamp(min=5)
    assert int((q - rounded).abs().sum()) == abs(100 - int(rounded.sum()))


def test_discretised_rows_negative_residual_never_breaks_the_floor():
    # Rounds to [6, 6, 5 x 18] = 102: taking the whole residual from the largest entry would give 4.
    p = torch.tensor([0.057, 0.057] + [0.886 / 18] * 18, dtype=torch.float64)
    assert int(torch.round(100 * p).clamp(min=5).sum()) == 102
    q = discretise_rows(p)
    assert int(q.sum()) == 100 and int(q.min()) >= 5
    # The usual case: the residual goes to the largest entry.
    q = discretise_rows(torch.tensor([0.333, 0.333, 0.334], dtype=torch.float64))
    assert q.tolist() == [33, 33, 34]
    q = discretise_rows(torch.tensor([0.02, 0.49, 0.49], dtype=torch.float64))  # [5, 49, 49]: 103
    assert q.tolist() == [5, 46, 49]


def test_hmm_posterior_ignores_later_observations():
    task = build_task(HMMConfig(S=4, O=3, K=10))
    a = task.sample(16, gen(8)).tokens
    b = a.clone()
    cut = int(task.positions()[4])
    b[:, cut + 1 :] = task.sample(16, gen(9)).tokens[:, cut + 1 :]  # same parameters, new future
    assert not torch.equal(a, b)
    torch.testing.assert_close(task.posterior(b)[:, :5], task.posterior(a)[:, :5], rtol=0, atol=0)


# ---------------------------------------------------------------- the sampler agrees with the oracle


@pytest.mark.parametrize(
    "cfg",
    [HMMConfig(), HMMConfig(S=3, O=2, K=6), BijectionConfig(V=6, L=14, replacement=True), BijectionConfig()],
    ids=["hmm-default", "hmm-small", "bijection-replacement", "bijection-default"],
)
def test_sampler_labels_are_calibrated_against_the_oracle(cfg):
    task = build_task(cfg)
    batch = task.sample(4000, gen(10))
    check_distributions(batch)
    assert_calibrated(batch)


def test_calibration_check_detects_a_wrong_oracle():
    # The same check must fail when the posterior is the filter of a different HMM (T transposed):
    # otherwise passing it proves nothing.
    task = build_task(HMMConfig())
    batch = task.sample(4000, gen(11))
    S = task.S
    tok = batch.tokens.clone()
    T = tok[:, 1 : 1 + S * S].reshape(-1, S, S)
    tok[:, 1 : 1 + S * S] = T.transpose(1, 2).reshape(-1, S * S)
    wrong = Batch(batch.tokens, batch.positions, task.posterior(tok), batch.labels)
    with pytest.raises(AssertionError, match="disagree"):
        assert_calibrated(wrong)


# ---------------------------------------------------------------- determinism and configs


@pytest.mark.parametrize("cfg", [BijectionConfig(), BijectionConfig(replacement=True), HMMConfig()])
def test_same_seed_same_batch_different_seed_different_batch(cfg):
    task = build_task(cfg)
    a, b, c = task.sample(8, gen(12)), task.sample(8, gen(12)), task.sample(8, gen(13))
    for x, y in zip((a.tokens, a.labels, a.posterior), (b.tokens, b.labels, b.posterior)):
        assert torch.equal(x, y)
    assert not torch.equal(a.tokens, c.tokens) and not torch.equal(a.labels, c.labels)


def test_bad_configs_name_the_field():
    cases = [
        (lambda: BijectionConfig(V=10, L=12), "L", "must be <= V=10 when sampling keys without replacement, got 12"),
        (lambda: BijectionConfig(V=1, L=1), "V", "got 1"),
        (lambda: BijectionConfig(L=0), "L", "got 0"),
        (lambda: HMMConfig(S=1), "S", "got 1"),
        (lambda: HMMConfig(O=21), "O", "0.05 floor"),
        (lambda: HMMConfig(S=21), "S", "0.05 floor"),
        (lambda: HMMConfig(K=0), "K", "got 0"),
        (lambda: build_task({"name": "x"}), "name", "unknown task 'x'; choose one of: bijection, hmm"),
        (lambda: build_task({"name": "hmm", "S": 1}), "S", "got 1"),
        (lambda: build_task({"name": "bijection", "N": 3}), "N", "not a field"),
    ]
    for make, field, message in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == field and message in info.value.message
    assert str(info.value.under("task")).startswith("task.N: ")
    # Legal corners build: many keys with replacement, the largest HMM the floor allows.
    assert build_task(BijectionConfig(V=10, L=12, replacement=True)).seq_len == 23
    assert build_task(HMMConfig(S=20, O=20, K=1)).n_classes == 20


def test_registry_builds_from_configs_and_mappings():
    assert set(TASKS) == {"bijection", "hmm", "recall", "taskid", "program", "causal_mechanisms", "causal_samples",
                          "regression_context"}
    for name, (config_cls, task_cls) in TASKS.items():
        assert isinstance(build_task(config_cls()), task_cls)
        assert isinstance(build_task({"name": name}), task_cls)
    task = build_task({"name": "bijection", "V": 5, "L": 3, "replacement": True})
    assert (task.vocab_size, task.n_classes, task.seq_len) == (10, 5, 5)
    assert torch.equal(task.positions(), torch.tensor([0, 2, 4]))
    hmm = build_task(HMMConfig())
    assert (hmm.vocab_size, hmm.n_classes, hmm.seq_len) == (105, 5, 93)


def test_registry_accepts_hydra_configs():
    omegaconf = pytest.importorskip("omegaconf")
    task = build_task(omegaconf.OmegaConf.structured(HMMConfig(K=7)))
    assert isinstance(task, HMMTask) and task.seq_len == 53 + 14
    with pytest.raises(ConfigError) as info:
        build_task(omegaconf.OmegaConf.create({"name": "bijection", "V": 5, "L": 6}))
    assert info.value.field == "L"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cfg", [BijectionConfig(V=5, L=5), BijectionConfig(V=4, L=9, replacement=True), HMMConfig(S=3, O=3, K=5)])
def test_sampling_on_the_generator_device(cfg):
    task = build_task(cfg)
    batch = task.sample(8, torch.Generator("cuda").manual_seed(16))
    for t in (batch.tokens, batch.positions, batch.posterior, batch.labels):
        assert t.device.type == "cuda"
    check_distributions(batch.to("cpu"))
    torch.testing.assert_close(batch.posterior.cpu(), task.posterior_reference(batch.tokens.cpu()), rtol=0, atol=1e-9)
