"""Plasticity plugins: they run with any strategy on any stream and architecture, and continual
backprop's reset keeps the function (bias absorption), zeroes outgoing weights and optimizer state."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from framework.continual.plasticity import (
    PLASTICITY,
    ContinualBackpropConfig,
    ContinualBackpropPlugin,
    L2InitConfig,
    L2InitPlugin,
    ReDoConfig,
    ReDoPlugin,
    ShrinkPerturbConfig,
    ShrinkPerturbPlugin,
    build_plasticity,
)
from framework.continual.strategies import StrategyConfig, build_strategy
from framework.continual.streams import TINY_STREAMS, build_stream
from framework.continual.units import find_units, reset_units
from framework.errors import ConfigError
from framework.models import LSTMConfig, MambaConfig, MLPConfig, TransformerConfig, build_model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ARCHS = {
    "transformer": TransformerConfig(d_model=8, n_layers=1, n_heads=2, d_ff=16),
    "lstm": LSTMConfig(d_model=8, n_layers=2),
    "mamba": MambaConfig(d_model=8, n_layers=1, d_state=4),
    "mlp": MLPConfig(d_model=4, hidden=16, n_layers=1),
}
# aggressive settings so that every method acts within a tiny run (4 steps)
ACTIVE = {
    "cbp": {"name": "cbp", "replacement_rate": 0.5, "maturity": 1},
    "redo": {"name": "redo", "tau": 0.9, "every": 1},
    "shrink_perturb": {"name": "shrink_perturb", "shrink": 0.01, "sigma": 0.01},
    "l2_init": {"name": "l2_init", "strength": 0.1},
}
STREAMS = {name: build_stream(config) for name, config in TINY_STREAMS.items()}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a busy CPU: thread hand-offs cost 20x the work, so run these on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def model_for(stream, arch="transformer", seed=0):
    torch.manual_seed(seed)
    return stream.prepare_model(build_model(ARCHS[arch], stream.vocab_size, stream.n_classes, stream.seq_len))


def train(stream, model, strategy="naive", plugins=()):
    random.seed(0)
    s = build_strategy(StrategyConfig(name=strategy, train_mb_size=8, mem_size=8, patterns_per_exp=8), model,
                       plugins=list(plugins))
    for experience in stream.train_stream:
        s.train(experience)
    return s


def outputs_finite(stream, model) -> bool:
    tokens = torch.stack([stream.test_stream[0].dataset[i][0] for i in range(4)])
    with torch.no_grad():
        return bool(torch.isfinite(model(tokens)).all())


@pytest.mark.parametrize("stream_name", list(TINY_STREAMS))
@pytest.mark.parametrize("method", list(PLASTICITY))
def test_every_plasticity_method_runs_on_every_stream(method, stream_name):
    stream = STREAMS[stream_name]
    plugin = build_plasticity(ACTIVE[method])
    strategy = train(stream, model_for(stream), plugins=[plugin])
    assert outputs_finite(stream, strategy.model)
    if method in ("cbp", "redo"):
        assert plugin.resets > 0


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_architecture_runs_naive_and_continual_backprop(arch):
    stream = STREAMS["task_sequence"]
    train(stream, model_for(stream, arch))
    plugin = build_plasticity(ACTIVE["cbp"])
    strategy = train(stream, model_for(stream, arch), plugins=[plugin])
    assert plugin.resets > 0 and outputs_finite(stream, strategy.model)


@pytest.mark.parametrize("strategy", ["ewc", "lwf", "replay", "gdumb"])
def test_plasticity_composes_with_other_strategies(strategy):
    stream = STREAMS["prior_shift"]
    plugin = build_plasticity({**ACTIVE["cbp"], "maturity": 0})  # GDumb restarts its model (and units) each experience
    s = train(stream, model_for(stream, "mlp"), strategy, [plugin])
    assert plugin.resets > 0 and outputs_finite(stream, s.model)


def constant_unit(model, arch: str, unit: int) -> None:
    """Make ``unit`` of the first unit group output the same value at every input and position."""
    group = find_units(model)[0]
    with torch.no_grad():
        if arch in ("transformer", "mlp"):
            fc = group.incoming[0].param, group.incoming[1].param
            fc[0][unit] = 0.0
            fc[1][unit] = 0.7  # h = GELU(0.7) everywhere
        else:  # lstm layer 0: zero input and recurrent rows, forget gate shut: c_t = i * g at every step
            lstm = model.lstm
            H = lstm.hidden_size
            rows = unit + H * torch.arange(4)
            lstm.weight_ih_l0[rows] = 0.0
            lstm.weight_hh_l0[rows] = 0.0
            lstm.bias_hh_l0[rows] = 0.0
            lstm.bias_ih_l0[rows] = torch.tensor([1.0, -40.0, 0.5, 1.0])  # input, forget, cell, output gates
            # the unit's recurrent read would see h_{-1} = 0 at t = 0: remove it so absorption is exact there too
            lstm.weight_hh_l0[:, unit] = 0.0


@pytest.mark.parametrize("arch", ["transformer", "mlp", "lstm"])
def test_continual_backprop_reset_keeps_the_function_and_clears_the_unit(arch):
    stream = STREAMS["prior_shift"]
    model = model_for(stream, arch)
    unit = 3
    constant_unit(model, arch, unit)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.stack([stream.train_stream[0].dataset[i][0] for i in range(8)])
    model(tokens).sum().backward()
    optimizer.step()  # Adam state everywhere
    constant_unit(model, arch, unit)  # the step moved it; constant again
    optimizer.zero_grad()
    with torch.no_grad():
        before = model(tokens)

    # one step of the plugin, on a strategy stand-in: every unit mature, exactly one replaced,
    # and the constant unit has the lowest utility because its outgoing weights are the smallest
    group = find_units(model)[0]
    with torch.no_grad():
        for weight, dim in group.outgoing:
            weight.select(dim, unit).mul_(1e-3)
        before = model(tokens)
    plugin = ContinualBackpropPlugin(ContinualBackpropConfig(replacement_rate=1 / group.size, maturity=0, seed=1))
    strategy = SimpleNamespace(model=model, optimizer=optimizer)
    plugin.before_forward(strategy)
    model(tokens)
    plugin.after_forward(strategy)
    plugin.after_update(strategy)
    assert plugin.resets == 1

    group = plugin.groups[0]
    for weight, dim in group.outgoing:
        assert (weight.select(dim, unit) == 0).all()  # zero outgoing weights
        others = [i for i in range(group.size) if i != unit]
        assert (weight.index_select(dim, torch.tensor(others)) != 0).any()
    for inc in group.incoming:
        state = optimizer.state[inc.param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert (state[key].index_select(inc.dim, inc.index(torch.tensor([unit]))) == 0).all()
    for weight, dim in group.outgoing:
        for key in ("exp_avg", "exp_avg_sq"):
            assert (optimizer.state[weight][key].select(dim, unit) == 0).all()
    fresh = group.incoming[0]
    assert fresh.param.index_select(fresh.dim, fresh.index(torch.tensor([unit]))).abs().sum() > 0  # fresh, not zero
    with torch.no_grad():
        after = model(tokens)
    assert torch.allclose(after, before, atol=1e-5)  # the next bias absorbed the unit's (constant) output
    assert plugin.state[group.name]["age"][unit] == 0


def test_without_absorption_the_function_changes():
    """The control for the test above: dropping the unit without absorbing its mean changes the output."""
    stream = STREAMS["prior_shift"]
    model = model_for(stream, "transformer")
    constant_unit(model, "transformer", 3)
    tokens = torch.stack([stream.train_stream[0].dataset[i][0] for i in range(8)])
    with torch.no_grad():
        before = model(tokens)
    reset_units(find_units(model)[0], torch.tensor([3]), None, None, torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(model(tokens), before, atol=1e-5)


def test_mamba_reset_zeroes_both_readers_of_the_channel():
    stream = STREAMS["prior_shift"]
    model = model_for(stream, "mamba")
    group = find_units(model)[0]
    mixer = model.blocks[0].mixer
    E = mixer.out_proj.in_features
    old_z = mixer.in_proj.weight[E + 2].clone()
    reset_units(group, torch.tensor([2]), None, None, torch.Generator().manual_seed(0))
    assert (mixer.out_proj.weight[:, 2] == 0).all() and (mixer.x_proj.weight[:, 2] == 0).all()
    assert not torch.equal(mixer.in_proj.weight[E + 2], old_z)  # the z (gate) row is fresh too
    assert len(find_units(model_for(stream, "lstm"))) == 2
    assert [g.resettable for g in find_units(model_for(stream, "lstm"))] == [True, False]  # top feeds the LayerNorm


def test_continual_backprop_protects_young_units():
    stream = STREAMS["prior_shift"]
    plugin = build_plasticity({"name": "cbp", "replacement_rate": 1.0, "maturity": 3})
    train(stream, model_for(stream), plugins=[plugin])  # 4 steps: ages 1..4, eligible only at step 4
    assert plugin.resets == 16  # every unit once, at the one step they were mature (d_ff = 16)


def test_redo_resets_only_dormant_units():
    stream = STREAMS["prior_shift"]
    model = model_for(stream)
    group = find_units(model)[0]
    with torch.no_grad():
        group.incoming[0].param[:4] = 0.0  # units 0..3 get h = GELU(bias) = GELU(0) = 0: dormant
        group.incoming[1].param[:4] = 0.0
    plugin = ReDoPlugin(ReDoConfig(tau=0.025, every=1))
    strategy = SimpleNamespace(model=model, optimizer=None, clock=SimpleNamespace(train_iterations=0))
    tokens = torch.stack([stream.train_stream[0].dataset[i][0] for i in range(8)])
    plugin.before_forward(strategy)
    model(tokens)
    plugin.after_forward(strategy)
    plugin.after_update(strategy)
    assert plugin.resets == 4
    assert (group.outgoing[0][0][:, :4] == 0).all() and (group.outgoing[0][0][:, 4:] != 0).any()
    assert (group.incoming[0].param[:4] != 0).any()


def test_shrink_perturb_and_l2_init_do_what_they_say():
    stream = STREAMS["prior_shift"]
    model = model_for(stream)
    before = [p.detach().clone() for p in model.parameters()]
    ShrinkPerturbPlugin(ShrinkPerturbConfig(shrink=0.5, sigma=0.0)).apply(model)
    assert all(torch.allclose(p, 0.5 * b) for p, b in zip(model.parameters(), before))
    plugin = L2InitPlugin(L2InitConfig(strength=0.1))
    plugin.before_training(SimpleNamespace(model=model))
    assert float(plugin.penalty(model)) == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert torch.isclose(plugin.penalty(model), torch.tensor(float(next(model.parameters()).numel())))
    per_experience = ShrinkPerturbPlugin(ShrinkPerturbConfig(shrink=0.5, sigma=0.0, at="experience"))
    model = model_for(stream)
    before = [p.detach().clone() for p in model.parameters()]
    per_experience.after_update(SimpleNamespace(model=model))  # not per step
    per_experience.before_training_exp(SimpleNamespace(model=model, clock=SimpleNamespace(train_exp_counter=0)))
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))  # not before the first experience
    per_experience.before_training_exp(SimpleNamespace(model=model, clock=SimpleNamespace(train_exp_counter=1)))
    assert all(torch.allclose(p, 0.5 * b) for p, b in zip(model.parameters(), before))
    noisy = ShrinkPerturbPlugin(ShrinkPerturbConfig(shrink=1e-6, sigma=0.1))
    noisy.apply(model)
    spread = torch.cat([(p - 0.5 * b).flatten() for p, b in zip(model.parameters(), before)]).std()
    assert 0.08 < spread < 0.12


@pytest.mark.parametrize("config, field", [
    ({"name": "cbp", "replacement_rate": 0.0}, "replacement_rate"),
    ({"name": "cbp", "replacement_rate": 1.5}, "replacement_rate"),
    ({"name": "cbp", "decay": 1.0}, "decay"),
    ({"name": "cbp", "decay": -0.1}, "decay"),
    ({"name": "cbp", "maturity": -1}, "maturity"),
    ({"name": "redo", "tau": 0.0}, "tau"),
    ({"name": "redo", "tau": 1.01}, "tau"),
    ({"name": "redo", "every": 0}, "every"),
    ({"name": "shrink_perturb", "shrink": 0.0}, "shrink"),
    ({"name": "shrink_perturb", "shrink": 2.0}, "shrink"),
    ({"name": "shrink_perturb", "sigma": -1.0}, "sigma"),
    ({"name": "shrink_perturb", "at": "epoch"}, "at"),
    ({"name": "l2_init", "strength": 0.0}, "strength"),
    ({"name": "dropout"}, "name"),
    ({"name": "cbp", "rate": 0.1}, "rate"),
])
def test_bad_plasticity_settings_name_the_field(config, field):
    with pytest.raises(ConfigError) as err:
        build_plasticity(config)
    assert err.value.field == field
