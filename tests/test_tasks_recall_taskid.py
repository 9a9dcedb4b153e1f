"""Associative recall and in-context task identification: fast oracles against enumeration, the token
layouts, the exact task posterior, the near-duplicate split, complete enumeration of every sequence,
and the sampler's labels distributed as each oracle says."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import ConfigError
from framework.metrics.bits import kl_bits
from framework.models import TransformerConfig, build_model
from framework.tasks import Batch, RecallConfig, RecallTask, TaskIDConfig, TaskIDTask, build_task
from framework.tasks.base import MAX_ENUMERATED
from task_checks import SEEDS, assert_calibrated, check_batch, entropy_bits, gen

# ================================================================ associative recall


@st.composite
def recall_configs(draw) -> RecallConfig:
    N = draw(st.integers(1, 3))
    n_keys = draw(st.integers(N, 5))
    n_values = draw(st.integers(max(2, N), 5))
    unstored = draw(st.integers(0, min(n_keys - N, n_values - N, 2)))
    Q = draw(st.integers(max(1, unstored), unstored + N))
    return RecallConfig(N=N, n_keys=n_keys, n_values=n_values, filler=draw(st.integers(0, 2)),
                        filler_vocab=draw(st.integers(1, 3)), Q=Q, unstored=unstored)


def parse_recall(task: RecallTask, seq: list[int]) -> tuple[dict[int, int], list[int]]:
    """Walk one sequence's layout: the stored pairs (key -> value class) and the query keys."""
    cfg, N = task.config, task.N
    pairs = {}
    for i in range(N):
        store, key, sep, value = seq[4 * i : 4 * i + 4]
        assert (store, sep) == (task.STORE, task.SEP) and 0 <= key < cfg.n_keys
        assert cfg.n_keys <= value < cfg.n_keys + cfg.n_values and key not in pairs
        pairs[key] = value - cfg.n_keys
    fill = seq[4 * N : 4 * N + cfg.filler]
    assert all(task.FILLER0 <= f < task.FILLER0 + cfg.filler_vocab for f in fill)
    rest = seq[4 * N + cfg.filler :]
    assert rest[0::2] == [task.QUERY] * task.Q
    return pairs, rest[1::2]


@settings(max_examples=150, deadline=None)
@given(cfg=recall_configs(), seed=SEEDS, B=st.integers(1, 4))
def test_recall_oracle_matches_map_enumeration_and_labels_match_tokens(cfg, seed, B):
    task = build_task(cfg)
    batch = task.sample(B, gen(seed))
    check_batch(task, batch, B)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    for seq, labels in zip(batch.tokens.tolist(), batch.labels.tolist()):
        pairs, queries = parse_recall(task, seq)
        assert len(set(pairs.values())) == cfg.N, "values repeat"
        assert len(set(queries)) == cfg.Q, "queries repeat"
        assert sum(q not in pairs for q in queries) == cfg.unstored
        hidden = [label for q, label in zip(queries, labels) if q not in pairs]
        for q, label in zip(queries, labels):
            assert label == pairs[q] if q in pairs else label not in pairs.values()
        assert len(set(hidden)) == len(hidden), "the hidden map is injective"


def test_recall_layout_and_entropies_at_default_size():
    cfg = RecallConfig(unstored=3)
    task = build_task(cfg)
    B = 256
    batch = task.sample(B, gen(1))
    check_batch(task, batch, B)
    assert (task.vocab_size, task.n_classes, task.seq_len) == (32 + 32 + 3 + 4, 32, 4 * 8 + 4 + 2 * 8)
    assert torch.equal(task.positions(), 4 * 8 + 4 + 1 + 2 * torch.arange(8))
    for seq in batch.tokens[:32].tolist():
        parse_recall(task, seq)
    # Stored keys: 0 bits; unstored: log2(n_values - N) bits; exactly `unstored` of each kind per sequence.
    H = entropy_bits(batch.posterior)
    point = H < 1e-12
    assert bool((point.sum(1) == 5).all())
    torch.testing.assert_close(H[~point], torch.full_like(H[~point], math.log2(32 - 8)), rtol=0, atol=1e-12)
    # The unstored queries are not always in the same slots.
    assert len({tuple(row) for row in point.tolist()}) > 10


def test_recall_default_is_the_paper_task_all_point_masses():
    task = build_task(RecallConfig())
    batch = task.sample(64, gen(2))
    check_batch(task, batch, 64)
    assert bool((batch.posterior.max(-1).values == 1.0).all())
    assert torch.equal(batch.posterior.argmax(-1), batch.labels)  # accuracy is well defined on every query


def test_recall_posterior_ignores_filler_and_follows_the_stored_value():
    task = build_task(RecallConfig(N=4, n_keys=8, n_values=8, filler=3, filler_vocab=5, Q=4))
    tokens = task.sample(16, gen(3)).tokens
    refilled = tokens.clone()
    refilled[:, 16:19] = task.FILLER0 + (refilled[:, 16:19] - task.FILLER0 + 1) % 5
    assert not torch.equal(tokens, refilled)
    torch.testing.assert_close(task.posterior(refilled), task.posterior(tokens), rtol=0, atol=0)
    # Swapping the first two stored values swaps the answers for their keys.
    swapped = tokens.clone()
    swapped[:, [3, 7]] = tokens[:, [7, 3]]
    post, post_swapped = task.posterior(tokens), task.posterior(swapped)
    queries = tokens[:, task.positions()]
    first, second = queries == tokens[:, 1:2], queries == tokens[:, 5:6]
    v1, v2 = tokens[:, 3] - 8, tokens[:, 7] - 8
    assert torch.equal(post_swapped.argmax(-1)[first], v2[:, None].expand_as(first)[first])
    assert torch.equal(post_swapped.argmax(-1)[second], v1[:, None].expand_as(second)[second])
    assert torch.equal(post_swapped[~(first | second)], post[~(first | second)])


@pytest.mark.parametrize(
    "cfg,count",
    [
        (RecallConfig(N=2, n_keys=3, n_values=3, filler=0, Q=2), 6 * 6 * 2),
        (RecallConfig(N=1, n_keys=2, n_values=2, filler=2, filler_vocab=2, Q=1), 2 * 2 * 4),
        # C(2,1) slots for the unstored query, 2 stored keys to ask, 2 keys never stored
        (RecallConfig(N=2, n_keys=4, n_values=4, filler=1, filler_vocab=2, Q=2, unstored=1), 12 * 12 * 2 * 2 * 2 * 2),
    ],
)
def test_recall_enumeration_is_complete_and_distinct(cfg, count):
    task = build_task(cfg)
    every = task.all_sequences()
    listed = set(map(tuple, every.tolist()))
    assert every.shape == (count, task.seq_len) and len(listed) == count == task.count_sequences()
    # Sampling many times reaches every listed sequence and nothing else, so the list is exactly the support.
    sampled = set(map(tuple, task.sample(40 * count, gen(4)).tokens.tolist()))
    assert sampled == listed
    check_batch(task, Batch(every, task.positions(), task.posterior(every), task.posterior(every).argmax(-1)), count)


def test_recall_enumeration_refuses_large_configs():
    with pytest.raises(ValueError, match=r"recall N=8.*enumerates at most 200,000"):
        build_task(RecallConfig()).all_sequences()
    assert build_task(RecallConfig()).count_sequences() > MAX_ENUMERATED


def stored_value_groups(task: RecallTask, batch: Batch) -> torch.Tensor:
    """(B, P, C): 1 where the class is a value stored in the sequence, else 0 (read from the tokens)."""
    stored = batch.tokens[:, 3 : 4 * task.N : 4] - task.n_keys  # (B, N)
    is_stored = torch.zeros(len(batch), task.n_classes, dtype=torch.long).scatter_(1, stored, 1)  # (B, C)
    return is_stored[:, None, :].expand_as(batch.posterior)


def test_recall_unstored_labels_are_calibrated():
    task = build_task(RecallConfig(N=3, n_keys=6, n_values=5, filler=0, Q=4, unstored=2))
    batch = task.sample(6000, gen(5))
    check_batch(task, batch, 6000)
    assert_calibrated(batch, stored_value_groups(task, batch))


def test_calibration_check_detects_a_wrong_recall_oracle():
    # Uniform over all values instead of the unused ones: the check must notice.
    task = build_task(RecallConfig(N=3, n_keys=6, n_values=5, filler=0, Q=4, unstored=2))
    batch = task.sample(6000, gen(6))
    post = batch.posterior.clone()
    unstored = post.max(-1).values < 1
    post[unstored] = 1.0 / 5
    with pytest.raises(AssertionError, match="disagree"):
        assert_calibrated(Batch(batch.tokens, batch.positions, post, batch.labels), stored_value_groups(task, batch))


# ================================================================ task identification


@st.composite
def taskid_configs(draw) -> TaskIDConfig:
    n_x = draw(st.integers(1, 4))
    n_y = draw(st.integers(2, 4))
    M = draw(st.integers(2, min(5, n_y**n_x)))
    eps = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3]) | st.floats(0.0, 0.95))
    prior = draw(st.none() | st.lists(st.sampled_from([0.0, 0.5, 1.0, 3.0]), min_size=M, max_size=M).filter(any))
    return TaskIDConfig(M=M, n_x=n_x, n_y=n_y, K=draw(st.integers(1, 6)), eps=eps, prior=prior,
                        family_seed=draw(st.integers(0, 10**6)), near_duplicate=draw(st.booleans()),
                        differ_on=draw(st.integers(1, n_x)))


@settings(max_examples=200, deadline=None)
@given(cfg=taskid_configs(), seed=SEEDS, B=st.integers(1, 4))
def test_taskid_oracle_matches_enumeration_over_tasks(cfg, seed, B):
    task = build_task(cfg)
    batch = task.sample(B, gen(seed))
    check_batch(task, batch, B)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    tasks = task.task_posterior(batch.tokens)
    assert tasks.shape == (B, cfg.K, cfg.M) and tasks.dtype == torch.float64
    torch.testing.assert_close(tasks, task.task_posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    torch.testing.assert_close(tasks.sum(-1), torch.ones(B, cfg.K, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(tasks[:, 0], task.prior.expand(B, -1), rtol=0, atol=1e-15)  # no evidence yet
    # Layout: x tokens at even positions, y tokens (the labels) at odd ones.
    assert bool((batch.tokens[:, 0::2] < cfg.n_x).all())
    assert torch.equal(batch.tokens[:, 1::2] - cfg.n_x, batch.labels[:, : cfg.K - 1])
    family = task.family()
    assert family.shape == (cfg.M, cfg.n_x) and int(family.min()) >= 0 and int(family.max()) < cfg.n_y
    assert len({tuple(f) for f in family.tolist()}) == cfg.M, "tasks repeat"
    if cfg.near_duplicate:
        assert int((family[0] != family[1]).sum()) == cfg.differ_on


def test_taskid_layout_and_family_are_fixed_by_family_seed():
    cfg = TaskIDConfig()
    task = build_task(cfg)
    assert (task.vocab_size, task.n_classes, task.seq_len) == (12, 4, 19)
    assert torch.equal(task.positions(), torch.arange(0, 19, 2))
    assert torch.equal(task.family(), build_task(TaskIDConfig()).family())
    assert not torch.equal(task.family(), build_task(TaskIDConfig(family_seed=1)).family())
    # The family does not depend on anything drawn by sample(), nor on the generator's device.
    task.sample(8, gen(0))
    assert torch.equal(task.family(), build_task(TaskIDConfig()).family())


def test_taskid_noiseless_posterior_on_the_true_task_only_grows_and_concentrates():
    task = build_task(TaskIDConfig(K=30))
    batch = task.sample(512, gen(7))
    check_batch(task, batch, 512)
    # Which task made each sequence is not in the batch, so find it: with eps=0 the true task is one
    # that fits every shown example; sequences where several still fit are split between them.
    tasks = task.task_posterior(batch.tokens)  # (B, K, M)
    fits = (task.family()[:, batch.tokens[:, 0:-1:2]] == batch.tokens[:, 1::2] - 8).all(-1).T  # (B, M)
    torch.testing.assert_close(tasks[:, -1], fits.double() / fits.sum(-1, keepdim=True), rtol=0, atol=1e-12)
    alive = tasks > 0
    assert bool((alive[:, 1:] <= alive[:, :-1]).all()), "a task came back after being ruled out"
    # The tasks that fit every example are never ruled out, so their mass only grows, to 1.
    on_fitting = (tasks * fits[:, None, :]).sum(-1)  # (B, K)
    assert bool((on_fitting[:, 1:] >= on_fitting[:, :-1] - 1e-12).all())
    torch.testing.assert_close(on_fitting[:, -1], torch.ones(512, dtype=torch.float64), rtol=0, atol=1e-12)
    top = tasks.max(-1).values
    assert bool((top[:, 1:] >= top[:, :-1] - 1e-12).all())
    assert float(top[:, 0].mean()) == pytest.approx(1 / 8) and float(top[:, -1].mean()) > 0.99
    # The predictive sharpens with the task posterior: mean entropy falls from H(prior predictive).
    H = entropy_bits(batch.posterior).mean(0)
    assert float(H[0]) > 1.0 and float(H[-1]) < 0.05


def test_taskid_noisy_posterior_concentrates_on_average():
    task = build_task(TaskIDConfig(K=40, eps=0.1, prior=[4, 1, 1, 1, 1, 1, 1, 1]))
    batch = task.sample(2000, gen(8))
    tasks = task.task_posterior(batch.tokens)
    torch.testing.assert_close(tasks[:, 0], torch.tensor([4, 1, 1, 1, 1, 1, 1, 1], dtype=torch.float64).expand(2000, -1) / 11,
                               rtol=0, atol=1e-15)
    top = tasks.max(-1).values.mean(0)  # (K,)
    assert bool((top[5:] >= top[:-5] - 1e-3).all()) and float(top[10]) > float(top[0]) + 0.5 and float(top[-1]) > 0.99
    assert bool((batch.posterior > 0).all()), "with noise every output stays possible"


def test_near_duplicate_stays_split_until_a_differing_input_is_shown():
    for eps in (0.0, 0.2):
        cfg = TaskIDConfig(M=6, n_x=6, n_y=3, K=12, eps=eps, near_duplicate=True, differ_on=2, prior=[2, 1, 1, 1, 1, 1])
        task = build_task(cfg)
        f = task.family()
        differ = (f[0] != f[1]).nonzero().flatten().tolist()
        agree = [x for x in range(6) if x not in differ]
        assert len(differ) == 2
        g = gen(9)
        xs = torch.tensor(agree)[torch.randint(0, 4, (64, 12), generator=g)]  # only agreeing inputs ...
        xs[:, 8] = differ[0]  # ... until position 8
        ys = f[0][xs]  # examples of task 0
        tokens = torch.stack([xs, ys + 6], -1).reshape(64, 24)[:, :23]
        tasks = task.task_posterior(tokens)  # (64, K, M)
        # Tasks 0 and 1 keep the prior's 2:1 ratio through position 8 (x_8 itself is not evidence) ...
        torch.testing.assert_close(tasks[:, :9, 0], 2 * tasks[:, :9, 1], rtol=1e-9, atol=0)
        assert bool((tasks[:, :9, 1] > 0).all())
        # ... and task 1 drops sharply once it has been contradicted.
        if eps == 0:
            assert bool((tasks[:, 9:, 1] == 0).all())
        else:
            ratio = (eps / 2) / (1 - eps)
            torch.testing.assert_close(tasks[:, 9, 1] / tasks[:, 9, 0], torch.full((64,), ratio / 2, dtype=torch.float64),
                                       rtol=1e-9, atol=0)
        assert float(tasks[:, -1, 0].mean()) > 0.9


def test_near_duplicate_keeps_sampled_sequences_split_for_a_while():
    # With one differing input of 8, ~(7/8)^i of the task-0/1 sequences are still split after i examples.
    # Half the sequences come from task 0 or 1 (prior 3:3:1:...:1), so about 0.5 * (7/8)^6 = 0.22 at i=6.
    cfg = TaskIDConfig(K=12, near_duplicate=True, differ_on=1, prior=[3, 3, 1, 1, 1, 1, 1, 1])
    task = build_task(cfg)
    tasks = task.task_posterior(task.sample(4000, gen(10)).tokens)
    split = ((tasks[..., 0] > 0.01) & (tasks[..., 1] > 0.01)).double().mean(0)  # (K,)
    assert 0.17 < float(split[6]) < 0.28 and float(split[-1]) > 0.07
    plain = build_task(TaskIDConfig(K=12)).task_posterior(build_task(TaskIDConfig(K=12)).sample(4000, gen(10)).tokens)
    assert float((plain.max(-1).values[:, 6] < 0.99).double().mean()) < float(split[6]) / 2


def noiseless_count(task: TaskIDTask) -> int:
    """Plain Python: for each input tuple, the distinct output tuples of the tasks with prior > 0."""
    f = task.family().tolist()
    live = [m for m in range(task.M) if float(task.prior[m]) > 0]
    return sum(len({tuple(f[m][x] for x in xs[:-1]) for m in live})
               for xs in itertools.product(range(task.n_x), repeat=task.K))


@pytest.mark.parametrize(
    "cfg",
    [
        TaskIDConfig(M=4, n_x=4, n_y=3, K=3),
        TaskIDConfig(M=4, n_x=4, n_y=3, K=3, eps=0.5),  # noise large enough that sampling reaches every sequence
        TaskIDConfig(M=3, n_x=3, n_y=2, K=4, prior=[1, 0, 2]),
        TaskIDConfig(M=2, n_x=2, n_y=3, K=1, eps=0.5),
        TaskIDConfig(M=5, n_x=3, n_y=2, K=3, near_duplicate=True),
    ],
)
def test_taskid_enumeration_is_complete_and_distinct(cfg):
    task = build_task(cfg)
    every = task.all_sequences()
    listed = set(map(tuple, every.tolist()))
    count = cfg.n_x**cfg.K * cfg.n_y ** (cfg.K - 1) if cfg.eps > 0 else noiseless_count(task)
    assert every.shape == (count, task.seq_len) and len(listed) == count == task.count_sequences()
    sampled = set(map(tuple, task.sample(60 * count, gen(11)).tokens.tolist()))
    assert sampled == listed  # the list is exactly the support
    post = task.posterior(every)
    torch.testing.assert_close(post.sum(-1), torch.ones(count, cfg.K, dtype=torch.float64), rtol=0, atol=1e-12)


def test_taskid_enumeration_refuses_large_configs_and_impossible_tokens_are_refused():
    with pytest.raises(ValueError, match=r"taskid M=8.*enumerates at most 200,000"):
        build_task(TaskIDConfig()).all_sequences()
    task = build_task(TaskIDConfig(M=2, n_x=1, n_y=3, K=2))  # one input: the two tasks give two of three outputs
    (never,) = set(range(3)) - set(task.family()[:, 0].tolist())
    with pytest.raises(ValueError, match="probability 0"):
        task.posterior(torch.tensor([[0, 1 + never, 0]]))


def test_taskid_noisy_labels_are_calibrated():
    task = build_task(TaskIDConfig(M=4, n_x=4, n_y=3, K=6, eps=0.2, near_duplicate=True, prior=[3, 1, 1, 1]))
    batch = task.sample(6000, gen(12))
    check_batch(task, batch, 6000)
    assert_calibrated(batch)


def test_calibration_check_detects_a_wrong_taskid_oracle():
    # The oracle of a different family: the check must fail, otherwise passing it proves nothing.
    cfg = TaskIDConfig(M=4, n_x=4, n_y=3, K=6, eps=0.2)
    batch = build_task(cfg).sample(6000, gen(13))
    wrong = build_task(TaskIDConfig(M=4, n_x=4, n_y=3, K=6, eps=0.2, family_seed=1)).posterior(batch.tokens)
    with pytest.raises(AssertionError, match="disagree"):
        assert_calibrated(Batch(batch.tokens, batch.positions, wrong, batch.labels))


# ================================================================ both: configs, determinism, devices


def test_bad_configs_name_the_field():
    cases = [
        (lambda: RecallConfig(N=9, n_keys=8), "N", "must be <= n_keys=8"),
        (lambda: RecallConfig(N=9, n_keys=10, n_values=8), "N", "must be <= n_values=8"),
        (lambda: RecallConfig(N=0), "N", "got 0"),
        (lambda: RecallConfig(n_values=1, N=1), "n_values", "got 1"),
        (lambda: RecallConfig(Q=9), "Q", "Q - unstored must be <= N=8, got 9"),
        (lambda: RecallConfig(Q=0), "Q", "got 0"),
        (lambda: RecallConfig(unstored=9), "unstored", "must be in [0, Q=8], got 9"),
        (lambda: RecallConfig(N=4, n_keys=6, Q=4, unstored=3), "unstored", "n_keys - N = 2"),
        (lambda: RecallConfig(N=4, n_keys=10, n_values=6, Q=4, unstored=3), "unstored", "N + unstored must be <= n_values=6"),
        (lambda: RecallConfig(filler=-1), "filler", "got -1"),
        (lambda: RecallConfig(filler_vocab=0), "filler_vocab", "got 0"),
        (lambda: TaskIDConfig(M=1), "M", "got 1"),
        (lambda: TaskIDConfig(M=9, n_x=3, n_y=2), "M", "only n_y^n_x = 8"),
        (lambda: TaskIDConfig(n_y=1, M=1), "M", "got 1"),
        (lambda: TaskIDConfig(n_y=1), "n_y", "got 1"),
        (lambda: TaskIDConfig(n_x=0), "n_x", "got 0"),
        (lambda: TaskIDConfig(K=0), "K", "got 0"),
        (lambda: TaskIDConfig(eps=1.0), "eps", "must be in [0, 1), got 1.0"),
        (lambda: TaskIDConfig(eps=-0.1), "eps", "got -0.1"),
        (lambda: TaskIDConfig(prior=[1.0, 2.0]), "prior", "one weight per task (M=8), got 2"),
        (lambda: TaskIDConfig(M=2, prior=[1.0, -1.0]), "prior", ">= 0"),
        (lambda: TaskIDConfig(M=2, prior=[0.0, 0.0]), "prior", "not all be 0"),
        (lambda: TaskIDConfig(differ_on=0), "differ_on", "got 0"),
        (lambda: TaskIDConfig(differ_on=9), "differ_on", "[1, n_x=8], got 9"),
        (lambda: TaskIDConfig(family_seed=-1), "family_seed", "got -1"),
        (lambda: build_task({"name": "taskid", "M": 2, "prior": [1, 2, 3]}), "prior", "M=2"),
        (lambda: build_task({"name": "recall", "V": 3}), "V", "not a field"),
    ]
    for make, field, message in cases:
        with pytest.raises(ConfigError) as info:
            make()
        assert info.value.field == field and message in info.value.message, (field, info.value)
    # Legal corners build.
    assert build_task(RecallConfig(N=1, n_keys=1, n_values=2, Q=1, filler=0)).seq_len == 6
    assert build_task(TaskIDConfig(M=8, n_x=3, n_y=2, K=1)).family().shape == (8, 3)


def test_registry_builds_both_tasks_from_mappings_and_hydra_configs():
    omegaconf = pytest.importorskip("omegaconf")
    assert isinstance(build_task({"name": "recall"}), RecallTask)
    task = build_task(omegaconf.OmegaConf.structured(TaskIDConfig(M=3, prior=[1.0, 1.0, 2.0])))
    assert isinstance(task, TaskIDTask) and task.prior.tolist() == [0.25, 0.25, 0.5]
    with pytest.raises(ConfigError) as info:
        build_task(omegaconf.OmegaConf.create({"name": "recall", "N": 40}))
    assert info.value.field == "N"


@pytest.mark.parametrize(
    "cfg",
    [RecallConfig(), RecallConfig(unstored=2), TaskIDConfig(), TaskIDConfig(eps=0.1, near_duplicate=True)],
    ids=["recall", "recall-unstored", "taskid", "taskid-noisy-near-duplicate"],
)
def test_same_seed_same_batch_different_seed_different_batch(cfg):
    task = build_task(cfg)
    a, b, c = task.sample(8, gen(14)), task.sample(8, gen(14)), task.sample(8, gen(15))
    for x, y in zip((a.tokens, a.labels, a.posterior), (b.tokens, b.labels, b.posterior)):
        assert torch.equal(x, y)
    assert not torch.equal(a.tokens, c.tokens) and not torch.equal(a.labels, c.labels)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "cfg", [RecallConfig(N=3, n_keys=5, n_values=5, Q=3, unstored=1), TaskIDConfig(M=4, n_x=3, n_y=3, K=4, eps=0.1)]
)
def test_sampling_on_the_generator_device(cfg, device):
    task = build_task(cfg)
    batch = task.sample(8, torch.Generator(device).manual_seed(16))
    for t in (batch.tokens, batch.positions, batch.posterior, batch.labels):
        assert t.device.type == device
    check_batch(task, batch.to("cpu"), 8)
    torch.testing.assert_close(batch.posterior.cpu(), task.posterior_reference(batch.tokens.cpu()), rtol=0, atol=1e-9)
    if isinstance(task, TaskIDTask):
        assert task.task_posterior(batch.tokens).device.type == device


@pytest.mark.slow  # ~2 s on an idle CPU, much longer on a shared one
def test_a_one_layer_transformer_learns_task_identification():
    # Sanity, not a benchmark: 150 steps of soft cross-entropy on the exact posterior should cut the
    # KL to Bayes well below that of the untrained model and of the prior predictive.
    torch.manual_seed(0)
    task = build_task(TaskIDConfig(M=4, n_x=4, n_y=3, K=6))
    model = build_model(TransformerConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64), task.vocab_size,
                        task.n_classes, task.seq_len)
    val = task.sample(512, gen(17))

    def val_kl() -> float:
        with torch.no_grad():
            return float(kl_bits(val.posterior, model(val.tokens)[:, val.positions]).mean())

    before = val_kl()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    g = gen(18)
    for _ in range(150):
        batch = task.sample(64, g)
        logits = model(batch.tokens)[:, batch.positions].double()
        loss = -(batch.posterior * torch.log_softmax(logits, -1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = val_kl()
    # The prior predictive (ignore the examples, use x_i) as a baseline the model must beat.
    prior_only = torch.einsum("m,mbky->bky", task.prior, task.likelihood[:, val.tokens[:, val.positions]])
    baseline = float(kl_bits(val.posterior, prior_only.log()).mean())
    assert after < 0.5 * before and after < 0.5 * baseline, (before, after, baseline)
