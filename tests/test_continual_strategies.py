"""Continual strategies on exact-posterior targets: every strategy on every stream, and the fixed plugins."""
from __future__ import annotations

import math
import random

import pytest
import torch

from framework.continual.metrics import experience_bits
from framework.continual.strategies import (
    STRATEGIES,
    PosteriorGDumbPlugin,
    PosteriorLoss,
    PosteriorLwFPlugin,
    StrategyConfig,
    build_strategy,
    strategy_config,
)
from framework.continual.streams import TINY_STREAMS, build_stream
from framework.errors import ConfigError
from framework.metrics.bits import entropy_bits, kl_bits
from framework.models import TransformerConfig, build_model

TINY_MODEL = TransformerConfig(d_model=8, n_layers=1, n_heads=2, d_ff=16)
TINY = dict(train_mb_size=8, eval_mb_size=8, mem_size=8, patterns_per_exp=8, agem_sample_size=8)

# Avalanche 0.6.0's own ReplayPlugin calls its buffer's deprecated update()
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy CPU: thread hand-offs cost 20x the work, so run these on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(stream, seed=0):
    torch.manual_seed(seed)
    return stream.prepare_model(build_model(TINY_MODEL, stream.vocab_size, stream.n_classes, stream.seq_len))


def run(stream, name, plugins=(), model=None, **options):
    random.seed(0)
    torch.manual_seed(0)
    model = model or tiny_model(stream)
    strategy = build_strategy(StrategyConfig(name=name, **{**TINY, **options}), model, plugins=list(plugins))
    if name == "joint":
        strategy.train(stream.train_stream)
    else:
        for experience in stream.train_stream:
            strategy.train(experience)
    return strategy


STREAMS = {name: build_stream(config) for name, config in TINY_STREAMS.items()}


@pytest.mark.parametrize("stream_name", list(TINY_STREAMS))
@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_runs_on_every_stream(name, stream_name):
    stream = STREAMS[stream_name]
    model = tiny_model(stream)
    before = [p.detach().clone() for p in model.parameters()]
    strategy = run(stream, name, model=model)
    after = list(strategy.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(after, before))  # it trained
    for test in stream.test_stream:
        bits = experience_bits(strategy.model, test.dataset)
        assert math.isfinite(bits["kl_bits"]) and bits["kl_bits"] >= 0


def test_posterior_loss_is_soft_cross_entropy_at_the_scored_positions():
    stream = STREAMS["task_sequence"]
    dataset = stream.train_stream[1].dataset
    tokens = torch.stack([dataset[i][0] for i in range(8)])
    target = torch.stack([dataset[i][1] for i in range(8)])
    logits = torch.randn(*target.shape, dtype=torch.float64)
    positions = stream.tasks[1].scored_positions
    p, q = target[:, positions], logits[:, positions]
    expected = -(p * torch.log_softmax(q, -1)).sum(-1).mean()
    assert torch.allclose(PosteriorLoss()(logits, target).double(), expected, atol=1e-5)
    # its excess over the posterior's entropy is the KL (in nats)
    excess = PosteriorLoss()(logits, target).double() - entropy_bits(p).mean() * math.log(2)
    assert torch.allclose(excess, kl_bits(p, q).mean() * math.log(2), atol=1e-5)
    logits[:, [i for i in range(stream.seq_len) if i not in positions.tolist()]] = 1e3  # unscored: ignored
    assert torch.allclose(PosteriorLoss()(logits, target).double(), expected, atol=1e-5)


def test_lwf_distils_the_previous_model_at_the_scored_positions():
    stream = STREAMS["prior_shift"]
    dataset = stream.train_stream[0].dataset
    tokens = torch.stack([dataset[i][0] for i in range(8)])
    target = torch.stack([dataset[i][1] for i in range(8)])
    plugin = PosteriorLwFPlugin(alpha=1.0, temperature=2.0)
    a, b = tiny_model(stream, 0), tiny_model(stream, 1)
    la, lb = a(tokens), b(tokens)
    assert plugin.distillation(la, la, target).abs() < 1e-6
    d = plugin.distillation(la, lb, target)
    mask = target.sum(-1) > 0
    old, new = torch.softmax(lb[mask] / 2, -1), torch.log_softmax(la[mask] / 2, -1)
    assert torch.allclose(d, (old * (old.log() - new)).sum(-1).mean(), atol=1e-6) and d > 0
    lb_unscored = lb.clone()
    lb_unscored[~mask] = 0
    assert torch.allclose(plugin.distillation(la, lb_unscored, target), d)
    # in a run: the teacher is taken after the first experience and the penalty is added on the second
    seen = []

    class Spy(PosteriorLwFPlugin):
        def before_backward(self, strategy, **kwargs):
            before = float(strategy.loss.detach())
            super().before_backward(strategy, **kwargs)
            seen.append(float(strategy.loss.detach()) - before)

    run(stream, "naive", plugins=[Spy(alpha=1.0)])
    # experience 0: no teacher; experience 1: the teacher is the model itself until the first update
    assert len(seen) == 4 and seen[:2] == [0.0, 0.0] and abs(seen[2]) < 1e-6 and seen[3] > 0


def test_gem_and_agem_keep_per_experience_memories_and_project():
    stream = STREAMS["vocab_shift"]
    gem = run(stream, "gem").plugins[0]
    assert sorted(gem.memory_x) == [0, 1] and gem.memory_x[0].shape == (8, stream.seq_len)
    assert gem.memory_y[0].dtype == torch.float64 and gem.G.shape[0] == 1  # constraints from experience 0
    agem = run(stream, "agem").plugins[0]
    assert len(agem.buffers) == 2 and agem.reference_gradients.numel() > 0


def test_gdumb_buffer_is_balanced_over_experiences_without_class_targets():
    stream = build_stream({**TINY_STREAMS["prior_shift"], "n_experiences": 3})
    strategy = run(stream, "gdumb", mem_size=9)
    plugin = next(p for p in strategy.plugins if isinstance(p, PosteriorGDumbPlugin))
    groups = plugin.storage_policy.buffer_groups
    assert sorted(len(g.buffer) for g in groups.values()) == [3, 3, 3]
    assert all(g.materialised for g in groups.values())  # tensors in memory, not lazy chunks


def test_replay_buffers_hold_their_sequences_in_memory():
    stream = build_stream({**TINY_STREAMS["permuted_tokens"], "n_experiences": 3})
    replay = run(stream, "replay", mem_size=6).plugins[0]
    groups = replay.storage_policy.buffer_groups
    assert sorted(len(g.buffer) for g in groups.values()) == [2, 2, 2] and all(g.materialised for g in groups.values())
    item = groups[0].buffer[0]
    assert item[0].shape == (stream.seq_len,) and item[1].dtype == torch.float64 and int(item[2]) == 0
    agem = run(stream, "agem", patterns_per_exp=5).plugins[0]
    assert [len(b) for b in agem.buffers] == [5, 5, 5]


def test_cumulative_trains_on_everything_so_far_and_joint_once():
    stream = STREAMS["permuted_tokens"]
    steps = []

    from avalanche.training.plugins import SupervisedPlugin

    class Count(SupervisedPlugin):
        def after_training_exp(self, strategy, **kwargs):
            steps.append(strategy.clock.train_exp_iterations)

    run(stream, "cumulative", plugins=[Count()])
    assert steps == [2, 4]  # 16 then 32 sequences at 8 per step
    steps.clear()
    run(stream, "joint", plugins=[Count()])
    assert steps == [4]


@pytest.mark.parametrize("field, value", [
    ("name", "icarl"), ("lr", 0.0), ("lr", float("nan")), ("train_mb_size", 0), ("train_epochs", 0),
    ("mem_size", 0), ("ewc_lambda", -1.0), ("betas_2", 1.0), ("grad_clip", 0.0), ("mas_alpha", 2.0),
    ("train_mb_size", True),
])
def test_bad_strategy_settings_name_the_field(field, value):
    with pytest.raises(ConfigError) as err:
        StrategyConfig(**{field: value})
    assert err.value.field == field


def test_strategy_config_from_a_mapping_checks_its_keys():
    assert strategy_config({"name": "ewc", "ewc_lambda": 5.0}) == StrategyConfig(name="ewc", ewc_lambda=5.0)
    with pytest.raises(ConfigError) as err:
        strategy_config({"name": "ewc", "lamda": 5.0})
    assert err.value.field == "lamda"
