"""Continual streams: Avalanche benchmarks of lazily generated, seed-determined wind-tunnel experiences."""
from __future__ import annotations

import gc

import pytest
import torch
from avalanche.benchmarks.scenarios.generic_scenario import CLScenario
from avalanche.benchmarks.utils.data import AvalancheDataset

from framework.continual import data as cl_data
from framework.continual.data import CHUNK, source_of
from framework.continual.hmm_prior import HMMPriorConfig, PriorHMMTask
from framework.continual.streams import MASKED_LOGIT, TINY_STREAMS, build_stream, stream_config
from framework.errors import ConfigError
from framework.models import TransformerConfig, build_model
from framework.tasks import HMMConfig

NAMES = list(TINY_STREAMS)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy CPU: thread hand-offs cost 20x the work, so run these on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def items(dataset) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = [dataset[i] for i in range(len(dataset))]
    return (torch.stack([r[0] for r in rows]), torch.stack([r[1] for r in rows]),
            torch.tensor([int(r[2]) for r in rows]))


@pytest.mark.parametrize("name", NAMES)
def test_stream_is_an_avalanche_benchmark_with_exact_targets(name):
    stream = build_stream(TINY_STREAMS[name])
    assert isinstance(stream.benchmark, CLScenario)
    assert len(stream.train_stream) == len(stream.test_stream) == len(stream) == 2
    for e, (train, test) in enumerate(zip(stream.train_stream, stream.test_stream)):
        assert isinstance(train.dataset, AvalancheDataset)
        tokens, target, labels = items(train.dataset)
        assert tokens.shape == (16, stream.seq_len) and tokens.dtype == torch.long
        assert target.shape == (16, stream.seq_len, stream.n_classes) and target.dtype == torch.float64
        assert (labels == e).all()  # the task label is the experience index, last element of each item
        assert 0 <= tokens.min() and tokens.max() < stream.vocab_size
        task = stream.tasks[e]
        positions = task.scored_positions
        rows = target.sum(-1)
        assert torch.allclose(rows[:, positions], torch.ones(16, len(positions), dtype=torch.float64))
        off = torch.ones(stream.seq_len, dtype=torch.bool)
        off[positions] = False
        assert (target[:, off] == 0).all()  # unscored positions carry an all-zero row
        # the target is the base task's exact posterior of the unmapped tokens
        inverse = torch.full((stream.vocab_size + 1,), -1, dtype=torch.long)
        inverse[task.token_map] = torch.arange(task.token_map.numel())
        base_tokens = inverse[tokens[:, : task.base.seq_len]]
        assert (base_tokens >= 0).all()
        expected = task.base.posterior(base_tokens)
        assert torch.equal(target[:, positions, : task.base.n_classes], expected)
        test_tokens, _, _ = items(test.dataset)
        assert len(test.dataset) == 8 and not torch.equal(test_tokens, tokens[:8])  # its own seed


@pytest.mark.parametrize("name", NAMES)
def test_streams_are_fixed_by_their_seed(name):
    a, b = build_stream(TINY_STREAMS[name]), build_stream(TINY_STREAMS[name])
    other = build_stream({**TINY_STREAMS[name], "seed": 1})
    cl_data.clear_cache()  # b is generated afresh, not read from a's cache
    for e in range(2):
        ta, ya, _ = items(a.train_stream[e].dataset)
        cl_data.clear_cache()
        tb, yb, _ = items(b.train_stream[e].dataset)
        assert torch.equal(ta, tb) and torch.equal(ya, yb)
        to, _, _ = items(other.train_stream[e].dataset)
        assert not torch.equal(ta, to)
        test, _, _ = items(a.test_stream[e].dataset)
        assert not torch.equal(test, ta[: len(test)])  # the held-out set has its own seed


def test_a_smaller_experience_is_a_prefix_of_a_larger_one():
    small = build_stream(TINY_STREAMS["permuted_tokens"])
    big = build_stream({**TINY_STREAMS["permuted_tokens"], "n_train": 3 * CHUNK})
    ts, _, _ = items(small.train_stream[1].dataset)
    tb = torch.stack([big.train_stream[1].dataset[i][0] for i in range(16)])
    assert torch.equal(ts, tb)


def test_long_streams_hold_seeds_not_sequences(monkeypatch):
    stream = build_stream({"name": "permuted_tokens", "n_experiences": 200, "n_train": 512, "n_test": 64,
                           "task_options": {"V": 6, "L": 4}})  # 12! permutations: 200 draws never collide
    assert len(stream) == 200
    source = source_of(stream.train_stream[199].dataset)
    assert not any(torch.is_tensor(v) for v in vars(source).values())  # n, seed and the task only
    cl_data.clear_cache()
    for e in range(0, 200, 5):
        stream.train_stream[e].dataset[0]
        stream.test_stream[e].dataset[0]
    assert 0 < cl_data.cached_bytes() <= cl_data.CACHE_BYTES  # bounded, however many experiences are touched
    assert cl_data.cached_bytes() == sum(cl_data._nbytes(c) for c in cl_data._cache.values())
    cl_data.clear_cache()
    monkeypatch.setattr(cl_data, "CACHE_BYTES", 64 * 2**10)  # two chunks of ~25 kB: older ones are dropped
    for e in range(0, 200, 5):
        stream.train_stream[e].dataset[0]
    assert cl_data.cached_bytes() <= 64 * 2**10 and len(cl_data._cache) == 2
    perms = {tuple(t.token_map.tolist()) for t in stream.tasks}
    assert len(perms) == 200  # a different permutation per experience
    assert stream.tasks[0].token_map.tolist() == list(range(12))  # experience 0: the task as published
    for t in stream.tasks[:10]:
        assert sorted(t.token_map.tolist()) == list(range(12))
    gc.collect()


def test_vocab_shift_uses_disjoint_token_ranges_and_new_task_families():
    stream = build_stream({"name": "vocab_shift", "n_experiences": 3, "n_train": 8, "n_test": 8, "task": "taskid",
                           "task_options": {"M": 3, "n_x": 3, "n_y": 3, "K": 3}})
    ranges = [set(items(exp.dataset)[0].unique().tolist()) for exp in stream.train_stream]
    assert all(not (ranges[i] & ranges[j]) for i in range(3) for j in range(i + 1, 3))
    families = [tuple(t.base.family().flatten().tolist()) for t in stream.tasks]
    assert len(set(families)) == 3


def test_prior_shift_changes_the_parameter_distribution_not_the_oracle():
    hmm = HMMConfig(S=3, O=3, K=6)
    g = torch.Generator().manual_seed(0)
    uniform = PriorHMMTask(hmm, HMMPriorConfig("uniform")).sample(256, g)
    sticky = PriorHMMTask(hmm, HMMPriorConfig("sticky", kappa=20.0)).sample(256, g)
    sparse = PriorHMMTask(hmm, HMMPriorConfig("sparse_emissions", alpha_sparse=0.05)).sample(256, g)
    task = PriorHMMTask(hmm, HMMPriorConfig("sticky"))

    def diagonal(batch):
        T, _ = task.decode_parameters(batch.tokens)
        return T.diagonal(dim1=1, dim2=2).mean().item()

    def max_emission(batch):
        _, E = task.decode_parameters(batch.tokens)
        return E.max(-1).values.mean().item()

    assert diagonal(sticky) > diagonal(uniform) + 0.3
    assert max_emission(sparse) > max_emission(uniform) + 0.1
    for batch in (uniform, sticky, sparse):
        T, E = task.decode_parameters(batch.tokens)
        assert torch.allclose(T.sum(-1), torch.ones_like(T.sum(-1))) and T.min() >= 0.05 - 1e-12
        assert torch.allclose(E.sum(-1), torch.ones_like(E.sum(-1))) and E.min() >= 0.05 - 1e-12
        assert torch.allclose(batch.posterior[:16], task.posterior_reference(batch.tokens[:16]), atol=1e-12)
    # the same generator state gives the same batch
    again = PriorHMMTask(hmm, HMMPriorConfig("uniform")).sample(256, torch.Generator().manual_seed(0))
    assert torch.equal(again.tokens, uniform.tokens)


def test_task_sequence_masks_each_task_to_its_own_classes():
    stream = build_stream({**TINY_STREAMS["task_sequence"], "n_experiences": 4})
    assert [t.base.name for t in stream.tasks] == ["bijection", "hmm", "recall", "taskid"]
    model = stream.prepare_model(build_model(TransformerConfig(d_model=8, n_layers=1, n_heads=2, d_ff=16),
                                             stream.vocab_size, stream.n_classes, stream.seq_len))
    for e, exp in enumerate(stream.train_stream):
        tokens, target, _ = items(exp.dataset)
        n = stream.tasks[e].base.n_classes
        logits = model(tokens)
        assert (logits[..., n:] == MASKED_LOGIT).all()
        assert (logits[..., :n] != MASKED_LOGIT).all()
        assert (torch.softmax(logits, -1)[..., n:] == 0).all()
        pad = stream.vocab_size - 1
        assert (tokens[:, stream.tasks[e].base.seq_len:] == pad).all()


@pytest.mark.parametrize("bad, field", [
    ({"name": "prior_shift", "n_experiences": 1}, "n_experiences"),
    ({"name": "prior_shift", "n_experiences": 0}, "n_experiences"),
    ({"name": "prior_shift", "n_train": 0}, "n_train"),
    ({"name": "prior_shift", "n_test": 0}, "n_test"),
    ({"name": "prior_shift", "seed": -1}, "seed"),
    ({"name": "prior_shift", "priors": ["stickyy"]}, "priors"),
    ({"name": "prior_shift", "kappa": 0.0}, "kappa"),
    ({"name": "prior_shift", "hmm": {"S": 1}}, "hmm.S"),
    ({"name": "vocab_shift", "task": "hmm"}, "task"),
    ({"name": "vocab_shift", "task_options": {"V": 1}}, "task_options.V"),
    ({"name": "vocab_shift", "task_options": {"VV": 3}}, "task_options.VV"),
    ({"name": "task_sequence", "tasks": ["bijection", "bijection"]}, "tasks"),
    ({"name": "task_sequence", "tasks": ["bijection", "causal"]}, "tasks"),
    ({"name": "task_sequence", "task_options": {"recall": {"N": 0}}}, "task_options.recall.N"),
    ({"name": "permuted_tokens", "task": "nope"}, "task_options.name"),
    ({"name": "nope"}, "name"),
    ({"name": "prior_shift", "experiences": 3}, "experiences"),
])
def test_bad_stream_settings_name_the_field(bad, field):
    with pytest.raises(ConfigError) as err:
        build_stream(bad)
    assert err.value.field == field


def test_stream_config_accepts_its_dataclass_and_mappings():
    config = stream_config(TINY_STREAMS["prior_shift"])
    assert stream_config(config) is config
    assert build_stream(config).config == config


HIDDEN = {**TINY_STREAMS["prior_shift"], "hidden": True, "n_experiences": 4,
          "priors": ["uniform", "sticky", "cyclic", "sparse_emissions"]}


def forward_reference(trans: list, emit: list, obs: list) -> list:
    """Plain-loop forward filter: alpha_1 = uniform * E[., o_1], alpha_t = (alpha_{t-1} T) * E[., o_t], normalised."""
    S = len(trans)
    out, alpha = [], [emit[s][obs[0]] / S for s in range(S)]
    for t in range(len(obs)):
        if t > 0:
            alpha = [sum(prev[r] * trans[r][s] for r in range(S)) * emit[s][obs[t]] for s in range(S)]
        total = sum(alpha)
        prev = [a / total for a in alpha]
        out.append(prev)
    return out


def test_hidden_prior_shift_posterior_is_the_forward_filter_of_the_fixed_hmm():
    from framework.tasks.hmm import OBS, SEP, SYMBOL0
    stream = build_stream(HIDDEN)
    first = stream.tasks[0].base
    assert stream.vocab_size == PriorHMMTask(HMMConfig(S=3, O=3, K=4), HMMPriorConfig()).vocab_size  # same vocabulary
    assert stream.n_classes == 3 and stream.seq_len == 1 + 2 * 4
    for e, (train, test) in enumerate(zip(stream.train_stream, stream.test_stream)):
        task = stream.tasks[e].base
        assert task.vocab_size == first.vocab_size and task.n_classes == first.n_classes and task.seq_len == first.seq_len
        T = (task.trans_hundredths.double() / 100).tolist()
        E = (task.emit_hundredths.double() / 100).tolist()
        for row in task.trans_hundredths.tolist() + task.emit_hundredths.tolist():
            assert sum(row) == 100 and min(row) >= 5
        positions = stream.tasks[e].scored_positions.tolist()
        for dataset in (train.dataset, test.dataset):
            tokens, target, _ = items(dataset)
            assert (tokens[:, 0] == SEP).all() and (tokens[:, 1::2] == OBS).all()
            assert (tokens[:, 2::2] >= SYMBOL0).all() and positions == list(range(2, stream.seq_len, 2))
            for b in range(tokens.shape[0]):
                obs = [x - SYMBOL0 for x in tokens[b, positions].tolist()]
                expected = torch.tensor(forward_reference(T, E, obs), dtype=torch.float64)
                assert torch.allclose(target[b, positions], expected, atol=1e-9, rtol=0)
            assert torch.allclose(task.posterior_reference(tokens), target[:, positions], atol=1e-12)


def test_hidden_prior_shift_experiences_differ_and_follow_their_prior():
    stream = build_stream(HIDDEN)
    params = [(t.base.trans_hundredths.tolist(), t.base.emit_hundredths.tolist()) for t in stream.tasks]
    assert len({repr(p) for p in params}) == 4  # one HMM per experience, all different
    sticky = stream.tasks[1].base.trans_hundredths
    assert sticky.diagonal().float().mean() > 50  # kappa = 10 on the diagonal: a persistent chain
    # the HMM is fixed within an experience: train and test sequences share it
    a = stream.tasks[0].base.draw_parameters(2, torch.Generator())
    assert torch.equal(a[0][0], a[0][1]) and torch.equal(a[1][0], a[1][1])


def test_hidden_prior_shift_is_fixed_by_its_seed():
    a, b = build_stream(HIDDEN), build_stream(HIDDEN)
    other = build_stream({**HIDDEN, "seed": 1})
    for e in range(4):
        assert torch.equal(a.tasks[e].base.trans_hundredths, b.tasks[e].base.trans_hundredths)
        assert torch.equal(a.tasks[e].base.emit_hundredths, b.tasks[e].base.emit_hundredths)
        cl_data.clear_cache()
        ta, ya, _ = items(a.train_stream[e].dataset)
        cl_data.clear_cache()
        tb, yb, _ = items(b.train_stream[e].dataset)
        assert torch.equal(ta, tb) and torch.equal(ya, yb)
        assert not (torch.equal(a.tasks[e].base.trans_hundredths, other.tasks[e].base.trans_hundredths)
                    and torch.equal(a.tasks[e].base.emit_hundredths, other.tasks[e].base.emit_hundredths))


def test_hidden_false_is_the_in_context_stream_unchanged():
    plain = build_stream(TINY_STREAMS["prior_shift"])
    explicit = build_stream({**TINY_STREAMS["prior_shift"], "hidden": False})
    assert stream_config(TINY_STREAMS["prior_shift"]).hidden is False
    assert [type(t.base) for t in plain.tasks] == [PriorHMMTask, PriorHMMTask]
    assert plain.tasks[0].key == explicit.tasks[0].key and "hidden" not in plain.tasks[0].key[0]
    for e in range(2):
        tp, yp, _ = items(plain.train_stream[e].dataset)
        te, ye, _ = items(explicit.train_stream[e].dataset)
        assert torch.equal(tp, te) and torch.equal(yp, ye)
        # the same sequences PriorHMMTask makes directly from the chunk seed (what the stream made before)
        task = plain.tasks[e]
        seed = source_of(plain.train_stream[e].dataset).seed
        direct = task.base.sample(CHUNK, torch.Generator().manual_seed(cl_data.derive_seed(seed, 0)))
        assert torch.equal(tp, direct.tokens[:16])
        assert direct.tokens.shape[1] == 3 + 9 + 9 + 8  # the in-context layout: header then ([OBS] o) x K


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_hidden_must_be_a_bool(bad):
    with pytest.raises(ConfigError) as err:
        build_stream({**TINY_STREAMS["prior_shift"], "hidden": bad})
    assert err.value.field == "hidden"
