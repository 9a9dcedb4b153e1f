"""The model zoo: causality, shapes, the registry, config validation, hooks, capacity matching."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from framework.errors import ConfigError
from framework.models import (
    MODELS,
    LSTMConfig,
    MambaConfig,
    MLPConfig,
    ModelConfig,
    TransformerConfig,
    build_model,
    count_params,
    match_params,
)
from framework.models.capacity import param_count

VOCAB, N_CLASSES, MAX_LEN = 11, 5, 19
NAMES = list(MODELS)


def tiny(name: str) -> ModelConfig:
    """The default config (small already); the MLP a little narrower to stay quick."""
    config_cls = MODELS[name][0]
    return config_cls(hidden=64) if name == "mlp" else config_cls()


def build(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(tiny(name), VOCAB, N_CLASSES, MAX_LEN).eval()


@pytest.mark.parametrize("T", [MAX_LEN, 12])
@pytest.mark.parametrize("name", NAMES)
def test_causal(name, T):
    """Changing tokens after t leaves the logits at 0..t unchanged, and changes the logits at t+1."""
    model = build(name)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, VOCAB, (4, T), generator=g)
    with torch.no_grad():
        base = model(tokens)
        for t in sorted({0, 1, T // 2, T - 2, T - 1}):
            changed = tokens.clone()
            # every later token moves to a different value
            changed[:, t + 1:] = (changed[:, t + 1:] + torch.randint(1, VOCAB, (4, T - t - 1), generator=g)) % VOCAB
            out = model(changed)
            torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=0)
            if t + 1 < T:
                moved = (out[:, t + 1] - base[:, t + 1]).abs().amax(dim=-1)  # (B,)
                assert (moved > 1e-6).all(), f"{name}: logits at {t + 1} ignore token {t + 1}"


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_dtype(name):
    model = build(name)
    for T in (1, 7, MAX_LEN):
        logits = model(torch.randint(0, VOCAB, (3, T)))
        assert logits.shape == (3, T, N_CLASSES)
        assert logits.dtype == torch.float32
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_trains_on_a_fixed_batch(name):
    """A few AdamW steps fit a fixed random labelling better: gradients reach every part."""
    model = build(name).train()
    g = torch.Generator().manual_seed(2)
    tokens = torch.randint(0, VOCAB, (8, 12), generator=g)
    labels = torch.randint(0, N_CLASSES, (8, 12), generator=g)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(model(tokens).flatten(0, 1), labels.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(N_CLASSES), abs=0.15)  # near-uniform at init
    assert losses[-1] < 0.85 * losses[0]
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"{name}: parameters without gradient: {no_grad}"


@pytest.mark.parametrize("name", ["transformer", "mlp"])
def test_position_embedded_models_refuse_longer_sequences(name):
    with pytest.raises(ValueError, match="max_len"):
        build(name)(torch.zeros(1, MAX_LEN + 1, dtype=torch.long))


def test_recurrent_models_run_past_max_len():
    for name in ("mamba", "lstm"):
        assert build(name)(torch.zeros(1, MAX_LEN + 5, dtype=torch.long)).shape == (1, MAX_LEN + 5, N_CLASSES)


def test_mamba_parallel_scan_equals_reference_scan():
    torch.manual_seed(0)
    model = build_model(MambaConfig(d_model=16, n_layers=2), VOCAB, N_CLASSES, 64).double()
    tokens = torch.randint(0, VOCAB, (2, 64))
    out = {}
    for impl in ("ref", "parallel", "auto"):
        model.scan_impl = impl
        model.zero_grad()
        logits = model(tokens)
        logits.square().sum().backward()
        out[impl] = (logits.detach(), [p.grad.clone() for p in model.parameters()])
    assert out["ref"][0].dtype == torch.float64
    for impl in ("parallel", "auto"):
        torch.testing.assert_close(out[impl][0], out["ref"][0], atol=1e-10, rtol=1e-10)
        for g, g_ref in zip(out[impl][1], out["ref"][1]):
            torch.testing.assert_close(g, g_ref, atol=1e-9, rtol=1e-9)


def test_mamba_init_follows_mamba_ssm():
    cfg = MambaConfig(d_model=32, d_state=8)
    mixer = build_model(cfg, VOCAB, N_CLASSES, MAX_LEN).blocks[0].mixer
    assert cfg.dt_rank == 2 and mixer.dt_proj.in_features == 2
    torch.testing.assert_close(-torch.exp(mixer.A_log[3]), -torch.arange(1.0, 9.0))  # S4D-real
    dt = torch.nn.functional.softplus(mixer.dt_proj.bias)
    assert dt.min() >= 1e-3 * 0.999 and dt.max() <= 0.1 * 1.001


def test_transformer_init_scales_residual_projections():
    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=128, n_layers=8, d_ff=512), VOCAB, N_CLASSES, MAX_LEN)
    std = torch.cat([b.mlp.out_proj.weight.flatten() for b in model.blocks]).std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.blocks[0].attn.q_proj.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_transformer_hooks_expose_heads_and_residuals():
    model = build("transformer")
    cfg = model.config
    seen = {}
    points = {
        "q": model.blocks[1].attn.hook_q, "k": model.blocks[1].attn.hook_k,
        "v": model.blocks[1].attn.hook_v, "z": model.blocks[1].attn.hook_z,
        "resid": model.blocks[1].hook_resid_post, "features": model.hook_features,
    }
    handles = [m.register_forward_hook(lambda mod, inp, out, key=key: seen.__setitem__(key, out))
               for key, m in points.items()]
    tokens = torch.randint(0, VOCAB, (2, 9))
    with torch.no_grad():
        model(tokens)
    for h in handles:
        h.remove()
    dh = cfg.d_model // cfg.n_heads
    for key in "qkvz":
        assert seen[key].shape == (2, cfg.n_heads, 9, dh)
    assert seen["resid"].shape == seen["features"].shape == (2, 9, cfg.d_model)
    # The hook values are the real ones: attention recomputed from q, k, v gives hook_z.
    scores = seen["q"] @ seen["k"].transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(torch.ones(9, 9, dtype=torch.bool).triu(1), float("-inf"))
    torch.testing.assert_close(scores.softmax(-1) @ seen["v"], seen["z"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_every_model_exposes_final_features(name):
    model = build(name)
    seen = []
    model.hook_features.register_forward_hook(lambda mod, inp, out: seen.append(out))
    model(torch.randint(0, VOCAB, (2, 5)))
    width = model.config.hidden if name == "mlp" else model.config.d_model
    assert seen[0].shape == (2, 5, width)


def test_registry():
    assert set(MODELS) == {"transformer", "mamba", "lstm", "mlp"}
    for name, (config_cls, model_cls) in MODELS.items():
        config = config_cls()
        assert config.name == name and config.match_params is False
        assert type(build_model(config, VOCAB, N_CLASSES, MAX_LEN)) is model_cls
    with pytest.raises(ConfigError) as err:
        build_model(dataclasses.replace(LSTMConfig(), name="gru"), VOCAB, N_CLASSES, MAX_LEN)
    assert err.value.field == "name" and "'gru'" in err.value.message and "transformer" in err.value.message
    with pytest.raises(ConfigError) as err:
        build_model(dataclasses.replace(LSTMConfig(), name="mamba"), VOCAB, N_CLASSES, MAX_LEN)
    assert err.value.field == "name" and "MambaConfig" in err.value.message


def test_config_fields_are_plain_typed_for_hydra():
    for config_cls, _ in MODELS.values():
        for field in dataclasses.fields(config_cls):
            assert field.type in ("int", "float", "bool", "str", int, float, bool, str), (config_cls, field)


@pytest.mark.parametrize(
    "config_cls,kwargs,field",
    [
        (TransformerConfig, dict(n_heads=5), "n_heads"),
        (TransformerConfig, dict(d_model=0), "d_model"),
        (TransformerConfig, dict(n_layers=0), "n_layers"),
        (TransformerConfig, dict(d_ff=-1), "d_ff"),
        (TransformerConfig, dict(dropout=1.0), "dropout"),
        (TransformerConfig, dict(dropout=-0.1), "dropout"),
        (TransformerConfig, dict(d_model=64.0), "d_model"),
        (MambaConfig, dict(d_model=0), "d_model"),
        (MambaConfig, dict(d_state=0), "d_state"),
        (MambaConfig, dict(d_conv=0), "d_conv"),
        (MambaConfig, dict(expand=0), "expand"),
        (MambaConfig, dict(n_layers=-2), "n_layers"),
        (LSTMConfig, dict(d_model=0), "d_model"),
        (LSTMConfig, dict(n_layers=0), "n_layers"),
        (MLPConfig, dict(hidden=0), "hidden"),
        (MLPConfig, dict(d_model=0), "d_model"),
        (MLPConfig, dict(n_layers=0), "n_layers"),
        (MLPConfig, dict(hidden="256"), "hidden"),
    ],
)
def test_bad_configs_name_the_field(config_cls, kwargs, field):
    with pytest.raises(ConfigError) as err:
        config_cls(**kwargs)
    assert err.value.field == field
    assert str(kwargs[field]) in err.value.message or field == "n_heads"


def test_n_heads_message_names_d_model():
    with pytest.raises(ConfigError, match="must divide d_model=64, got 5"):
        TransformerConfig(n_heads=5)


# ---- capacity matching ------------------------------------------------------------------------

SETTINGS = [(20, 20, 19), (105, 5, 153)]  # (vocab, n_classes, max_len): bijection-like, HMM-like
TRANSFORMERS = [TransformerConfig(), TransformerConfig(d_model=128, n_layers=4, d_ff=512)]


@pytest.mark.parametrize("vocab,n_classes,max_len", SETTINGS)
@pytest.mark.parametrize("transformer", TRANSFORMERS, ids=["small", "large"])
def test_match_params_within_two_percent(transformer, vocab, n_classes, max_len):
    target = param_count(transformer, vocab, n_classes, max_len)
    for config in (MambaConfig(), LSTMConfig(), MLPConfig()):
        matched = match_params(config, target, vocab, n_classes, max_len)
        assert type(matched) is type(config)
        n = count_params(build_model(matched, vocab, n_classes, max_len))
        assert abs(n - target) <= 0.02 * target, (matched, n, target)
        assert match_params(config, target, vocab, n_classes, max_len) == matched  # deterministic
        changed = {f.name for f in dataclasses.fields(config) if getattr(config, f.name) != getattr(matched, f.name)}
        assert changed <= {"mlp": {"hidden", "d_model"}}.get(config.name, {"d_model"})


def test_match_params_moves_only_the_size_field_and_leaves_transformers_alone():
    target = param_count(TransformerConfig(), 20, 20, 19)
    m = match_params(MambaConfig(d_state=8, n_layers=3, match_params=True), target, 20, 20, 19)
    assert (m.d_state, m.n_layers, m.match_params) == (8, 3, True) and m.d_model != 64
    mlp = match_params(MLPConfig(), target, 20, 20, 19)
    assert mlp.d_model == 32 and mlp.hidden != 256
    transformer = TransformerConfig(d_model=32, n_heads=2)
    assert match_params(transformer, 10**6, 20, 20, 19) is transformer


def test_match_params_mlp_widens_the_embedding_only_when_hidden_cannot_match():
    target = param_count(TransformerConfig(), 105, 5, 153)
    loose = match_params(MLPConfig(), target, 105, 5, 153, tolerance=0.02)
    tight = match_params(MLPConfig(), target, 105, 5, 153, tolerance=0.002)
    assert loose.d_model == 32 and tight.d_model != 32  # one hidden step is ~4% of the target here
    assert abs(param_count(tight, 105, 5, 153) - target) <= 0.002 * target


def test_match_params_impossible_target():
    with pytest.raises(ConfigError) as err:
        match_params(LSTMConfig(), 50, 20, 20, 19)  # below even d_model = 1
    assert err.value.field == "match_params"
    with pytest.raises(ConfigError) as err:
        match_params(LSTMConfig(), 0, 20, 20, 19)
    assert err.value.field == "match_params"


@pytest.mark.parametrize("name", NAMES)
def test_meta_count_equals_real_count(name):
    for config in (tiny(name), dataclasses.replace(tiny(name), n_layers=3)):
        assert param_count(config, 105, 5, 93) == count_params(build_model(config, 105, 5, 93))


def test_mlp_token_context_reads_only_its_own_token():
    """The paper's per-position control: position t ignores every other token, yet is still causal."""
    torch.manual_seed(0)
    model = build_model(MLPConfig(hidden=64, context="token"), VOCAB, N_CLASSES, MAX_LEN).eval()
    prefix = build_model(MLPConfig(hidden=64), VOCAB, N_CLASSES, MAX_LEN)
    assert count_params(model) == count_params(prefix)  # the same weights, read differently
    tokens = torch.randint(0, VOCAB, (4, MAX_LEN))
    changed = tokens.clone()
    changed[:, :5] = (changed[:, :5] + 1) % VOCAB  # earlier tokens change, position 5 onwards do not
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, 5:], model(tokens)[:, 5:], atol=1e-6, rtol=0)
        assert (model(changed)[:, :5] - model(tokens)[:, :5]).abs().amax() > 1e-6
    with pytest.raises(ConfigError, match="context"):
        MLPConfig(context="window")


@pytest.mark.parametrize("positional", ["sinusoidal", "none"])
def test_fixed_positions_are_causal_at_any_length(positional):
    """Sinusoidal and absent position encodings need no trained row per position, so a model built
    for MAX_LEN runs on its own table at longer lengths (length generalisation) and stays causal."""
    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32, positional=positional),
                        VOCAB, N_CLASSES, 60).eval()
    tokens = torch.randint(0, VOCAB, (2, 60))
    changed = tokens.clone()
    changed[:, 41:] = (changed[:, 41:] + 1) % VOCAB
    a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :41], b[:, :41]) and not torch.allclose(a[:, 41:], b[:, 41:])
    assert not any("pos_emb" in name for name, _ in model.named_parameters())


def test_sinusoidal_table_matches_the_formula():
    from framework.models.transformer import sinusoidal_positions

    table = sinusoidal_positions(7, 6)
    for pos in range(7):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_learned_positions_refuse_sequences_past_max_len():
    model = build_model(TransformerConfig(d_model=16, n_layers=1, n_heads=2, d_ff=32), VOCAB, N_CLASSES, 8)
    with pytest.raises(ValueError, match="exceeds max_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_unknown_positional_names_the_field():
    with pytest.raises(ConfigError) as info:
        TransformerConfig(positional="rotary")
    assert info.value.field == "positional"
