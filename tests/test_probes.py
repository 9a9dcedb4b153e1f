"""Geometry probes: the helpers against brute force, each probe on a tiny trained model, and refusals."""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from framework.metrics import EvalSet
from framework.models import LSTMConfig, MambaConfig, MLPConfig, TransformerConfig, build_model
from framework.probes import PROBES, ProbeError, run_probe
from framework.probes import stats
from framework.tasks import BijectionConfig, HMMConfig, build_task
from framework.training import TrainConfig, train

TASK = build_task(BijectionConfig(V=6, L=6))
TINY = TransformerConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64)
ABS_SPEARMAN_MIN = 0.45  # measured 0.58 for this tiny model at site z:-1 (0.95 at demo size: see the probe docs)
TRAIN = TrainConfig(steps=240, batch_size=64, lr=3e-3, warmup_steps=20, eval_every=10**6, val_sequences=64,
                    checkpoint_every=10**6, snapshot_every=80)


def _transformer(seed=0):
    torch.manual_seed(seed)
    return build_model(TINY, TASK.vocab_size, TASK.n_classes, TASK.seq_len)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: on a shared 2-core machine one torch thread is ~10x faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, one_thread):
    """One tiny transformer trained once for the module, with three weight snapshots of its run."""
    out = tmp_path_factory.mktemp("tiny_run")
    model = _transformer()
    train(model, TASK, TRAIN, out, seed=0, val_set=EvalSet.generate(TASK, 64, seed=1), meta={"task": "bijection-6"})
    snapshots = sorted((out / "snapshots").glob("step_*.pt"))
    assert len(snapshots) == 3
    return model.eval(), snapshots


@pytest.fixture(scope="module")
def batches():
    return EvalSet.generate(TASK, 256, seed=7, batch_size=128).batches


def _numbers(obj, where="result"):
    """Every number in a nested result, with its path."""
    if isinstance(obj, bool) or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield where, obj
    elif obj is None:
        yield where, float("nan")  # an undefined number is a failure here: all cases below are defined
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{where}[{i}]")
    else:
        raise AssertionError(f"{where}: {type(obj).__name__} is not JSON-able")


def _check_result(result, name, out_dir: Path):
    json.dumps(result)  # JSON-able
    for where, x in _numbers(result):
        assert math.isfinite(x), f"{name}: {where} = {x}"
    assert result["probe"] == name
    assert result["plots"] and all((out_dir / p).is_file() and p.startswith(name) and p.endswith(".png")
                                   for p in result["plots"])


# ---------------------------------------------------------------- helpers against references

def test_attention_weights_match_an_explicit_softmax_loop():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 3, 7, 4, generator=g), torch.randn(2, 3, 7, 4, generator=g)
    fast = stats.attention_weights(q, k)
    assert torch.allclose(fast, stats.attention_weights_reference(q, k), atol=1e-12)
    assert torch.allclose(fast.sum(-1), torch.ones(2, 3, 7, dtype=torch.float64))
    assert (fast.triu(1) == 0).all()  # causal
    rows = torch.tensor([0, 3, 6])
    assert torch.allclose(stats.attention_weights(q, k, rows), fast[:, :, rows], atol=1e-14)


def test_attention_weights_match_the_model_attention_output():
    """softmax(q k^T / sqrt(dh)) with the causal mask, times v, is what the model's hook_z holds."""
    from framework.probes.base import run_with

    model = _transformer(seed=3).double().eval()
    tokens = TASK.sample(4, torch.Generator().manual_seed(0)).tokens
    attn = model.blocks[1].attn
    _, acts = run_with(model, tokens, {"q": attn.hook_q, "k": attn.hook_k, "v": attn.hook_v, "z": attn.hook_z})
    z = stats.attention_weights(acts["q"], acts["k"]) @ acts["v"].double()
    assert torch.allclose(z, acts["z"].double(), atol=1e-10)


def test_ranks_and_spearman_match_references_with_ties():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 5, (40,), generator=g).double()  # many ties
    y = x + torch.randn(40, generator=g)
    assert torch.equal(stats.rankdata(x), stats.rankdata_reference(x))
    rx, ry = stats.rankdata_reference(x), stats.rankdata_reference(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    reference = float((rx * ry).sum() / torch.sqrt((rx * rx).sum() * (ry * ry).sum()))
    assert stats.spearman(x, y) == pytest.approx(reference, abs=1e-12)
    assert stats.spearman(y, -y ** 3) == pytest.approx(-1.0)  # monotone: rank correlation is exactly -1
    assert math.isnan(stats.spearman(torch.ones(5), torch.arange(5.0)))
    scipy_stats = pytest.importorskip("scipy.stats")
    assert stats.spearman(x, y) == pytest.approx(scipy_stats.spearmanr(x.numpy(), y.numpy())[0], abs=1e-12)


def test_pca_variance_ratios_are_the_covariance_eigenvalues():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(200, 5, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 1.0, 0.5, 0.1])
    ratio, components, scores = stats.pca(x)
    eig = torch.linalg.eigvalsh(torch.cov(x.T)).flip(0)
    assert torch.allclose(ratio, eig / eig.sum(), atol=1e-12)
    assert torch.allclose(scores, (x - x.mean(0)) @ components.T, atol=1e-10)
    assert ratio[0] > 0.6  # 25 / 35.3 of the variance in expectation


def test_offdiagonal_cosine_and_js_divergence_by_hand():
    g = torch.Generator().manual_seed(3)
    v = torch.randn(6, 4, generator=g, dtype=torch.float64)
    pairs = [abs(float(torch.nn.functional.cosine_similarity(v[i], v[j], dim=0)))
             for i in range(6) for j in range(6) if i != j]
    assert float(stats.mean_abs_offdiag_cosine(v)) == pytest.approx(sum(pairs) / len(pairs), abs=1e-12)
    assert float(stats.mean_abs_offdiag_cosine(torch.eye(4))) == 0.0
    p, q = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert float(stats.js_divergence_bits(p, q)) == pytest.approx(1.0)  # disjoint supports: 1 bit
    assert float(stats.js_divergence_bits(p, p)) == 0.0


def test_silhouette_and_nearest_centroid_against_brute_force():
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(30) % 3
    x = torch.randn(30, 2, generator=g, dtype=torch.float64) + 4.0 * labels[:, None]
    s = []
    for i in range(30):
        d = [float(torch.dist(x[i], x[j])) for j in range(30)]
        own = [d[j] for j in range(30) if labels[j] == labels[i] and j != i]
        a = sum(own) / len(own)
        b = min(sum(d[j] for j in range(30) if labels[j] == c) / int((labels == c).sum())
                for c in range(3) if c != labels[i])
        s.append((b - a) / max(a, b))
    assert stats.silhouette(x, labels) == pytest.approx(sum(s) / 30, abs=1e-12)
    assert stats.nearest_centroid_accuracy(x, labels) > 0.9
    assert stats.nearest_centroid_accuracy(torch.randn(30, 2, generator=g), labels) < 0.8


def test_key_orthogonality_reads_orthogonal_and_parallel_keys(tmp_path, batches):
    """A model whose key tokens' layer-0 keys are built orthogonal scores 0; built parallel, 1."""
    model = _transformer().double().eval()
    attn = model.blocks[0].attn
    with torch.no_grad():
        model.tok_emb.weight.zero_()
        model.tok_emb.weight[:6, :6] = torch.eye(6)  # key tokens 0..5 on their own axes
        attn.k_proj.weight.zero_()
        attn.k_proj.weight[:6, :6] = torch.eye(6)  # head 0 reads those axes; head 1 sees nothing
        attn.k_proj.weight[16:22, :6] = torch.eye(6)
    result = run_probe("key_orthogonality", model, TASK, batches, tmp_path)
    assert result["embedding_mean_abs_cos"] == pytest.approx(0.0, abs=1e-12)
    assert result["embedding_below_random"]
    with torch.no_grad():
        model.tok_emb.weight[:6, :6] = 1.0  # every key token the same vector
    result = run_probe("key_orthogonality", model, TASK, batches, tmp_path)
    assert result["embedding_mean_abs_cos"] == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------- probes on the tiny trained model

def test_key_orthogonality_reports_trained_untrained_and_random(trained, batches, tmp_path):
    model, _ = trained
    result = run_probe("key_orthogonality", model, TASK, batches, tmp_path)
    _check_result(result, "key_orthogonality", tmp_path)
    assert result["tokens"] == list(range(6))  # the key tokens: those at scored positions
    dh = TINY.d_model // TINY.n_heads
    # 6 Gaussian vectors in 16 dimensions: E|cos| = Gamma(dh/2) / (sqrt(pi) Gamma((dh+1)/2)) = 0.2
    expected = math.exp(math.lgamma(dh / 2) - math.lgamma((dh + 1) / 2)) / math.sqrt(math.pi)
    assert result["random_mean_abs_cos"] == pytest.approx(expected, abs=0.01)
    # An untrained model's keys are about as orthogonal as random vectors.
    assert abs(result["untrained_embedding_mean_abs_cos"] - expected) < 0.1
    # Without replacement no key is ever looked up, and training aligns the key tokens' keys
    # (measured: ~0.99 for this model); the probe must report that, not the paper's expectation.
    assert result["mean_abs_cos"] > result["random_mean_abs_cos"]


def test_attention_entropy_lies_between_zero_and_the_uniform_maximum(trained, batches, tmp_path):
    model, _ = trained
    result = run_probe("attention_entropy", model, TASK, batches, tmp_path)
    _check_result(result, "attention_entropy", tmp_path)
    assert result["max_bits"] == pytest.approx(math.log2(TASK.seq_len))
    assert result["positions"] == TASK.positions()[1:].tolist()  # scored positions after 0
    assert len(result["layers"]) == TINY.n_layers
    for layer in result["layers"]:
        assert 0 <= layer["entropy_bits"] <= result["max_bits"]
        assert all(0 <= h <= result["max_bits"] for h in layer["entropy_bits_per_head"])
        assert all(0 <= h <= u + 1e-9 for h, u in zip(layer["per_position"], result["uniform_bits"]))
        assert all(0 <= n <= 1 + 1e-9 for n in layer["normalised_entropy_per_head"])
    everywhere = run_probe("attention_entropy", model, TASK, batches, tmp_path, options={"positions": "all"})
    assert everywhere["positions"] == list(range(1, TASK.seq_len))


def test_qk_alignment_per_layer(trained, batches, tmp_path):
    model, _ = trained
    result = run_probe("qk_alignment", model, TASK, batches, tmp_path)
    _check_result(result, "qk_alignment", tmp_path)
    assert [layer["layer"] for layer in result["layers"]] == list(range(TINY.n_layers))
    for layer in result["layers"]:
        assert -1 <= layer["uniform_cos"] <= layer["max_cos"] <= 1
        assert layer["attended_cos"] <= layer["max_cos"] + 1e-12
        assert layer["alignment"] == pytest.approx(layer["attended_cos"] - layer["uniform_cos"])


def test_value_manifold_tracks_the_bayes_entropy(trained, batches, tmp_path):
    model, _ = trained
    result = run_probe("value_manifold", model, TASK, batches, tmp_path)
    _check_result(result, "value_manifold", tmp_path)
    assert result["site"] == "z:-1" and set(result["by_site"]) == {"z:-1", "features", "resid_post:-1", "v:-1"}
    assert result["n_points"] == 256 * TASK.L
    # Without replacement H_Bayes = log2(V - i) is a function of the position alone.
    assert result["spearman_h_bayes_position"] == pytest.approx(-1.0)
    assert result["abs_spearman_pc1_h_bayes"] >= ABS_SPEARMAN_MIN
    assert 0 < result["pc1_variance"] <= result["top_k_variance"] <= 1
    other = run_probe("value_manifold", model, TASK, batches, tmp_path, options={"site": "features",
                                                                                 "compare_sites": False})
    assert other["site"] == "features" and list(other["by_site"]) == ["features"]


def test_ablating_everything_hurts_and_numbers_are_bits(trained, batches, tmp_path):
    model, _ = trained
    result = run_probe("ablation", model, TASK, batches, tmp_path)
    _check_result(result, "ablation", tmp_path)
    intact = result["intact"]["kl_bits"]
    assert len(result["heads"]) == TINY.n_layers * TINY.n_heads and len(result["layers"]) == TINY.n_layers
    assert result["all_layers"]["kl_bits"] > intact + 0.5
    assert result["all_heads"]["kl_bits"] > intact + 0.5
    assert result["all_layers"]["delta_kl_bits"] == pytest.approx(result["all_layers"]["kl_bits"] - intact)
    # The hooks are gone afterwards: the model scores as before.
    again = run_probe("ablation", model, TASK, batches, tmp_path)
    assert again["intact"]["kl_bits"] == pytest.approx(intact, rel=1e-9)


def test_dynamics_has_one_entry_per_snapshot(trained, batches, tmp_path):
    model, snapshots = trained
    result = run_probe("dynamics", model, TASK, batches, tmp_path, snapshots=list(reversed(snapshots)))
    _check_result(result, "dynamics", tmp_path)
    entries = result["snapshots"]
    assert [e["step"] for e in entries] == [80, 160, 240]  # ordered by step whatever the order given
    assert entries[-1]["attention_js_to_final_bits"] == pytest.approx(0.0, abs=1e-12)
    assert entries[-1]["attention_corr_to_final"] == pytest.approx(1.0)
    assert all(0 <= e["attention_js_to_final_bits"] <= 1 for e in entries)
    assert entries[0]["kl_bits"] > entries[-1]["kl_bits"]  # training improved calibration
    assert entries[0]["attention_progress"] == 0.0 and entries[-1]["attention_progress"] == pytest.approx(1.0)
    assert -1 <= result["dissociation"] <= 1


def test_dynamics_needs_snapshots_that_fit(trained, batches, tmp_path):
    model, snapshots = trained
    with pytest.raises(ProbeError, match="needs at least 2"):
        run_probe("dynamics", model, TASK, batches, tmp_path, snapshots=snapshots[:1])
    with pytest.raises(ProbeError, match="needs at least 2"):
        run_probe("dynamics", model, TASK, batches, tmp_path)
    with pytest.raises(ProbeError, match="not found"):
        run_probe("dynamics", model, TASK, batches, tmp_path, snapshots=[snapshots[0], tmp_path / "nope.pt"])
    other_run = torch.load(snapshots[0], weights_only=True)
    other_run["meta"] = {"task": "another"}
    torch.save(other_run, tmp_path / "other.pt")
    with pytest.raises(ProbeError, match="different runs"):
        run_probe("dynamics", model, TASK, batches, tmp_path, snapshots=[snapshots[1], tmp_path / "other.pt"])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ProbeError, match="refusing checkpoint"):
        run_probe("dynamics", model, TASK, batches, tmp_path, snapshots=[snapshots[1], tmp_path / "junk.pt"])
    wider = build_model(replace(TINY, d_model=48), TASK.vocab_size, TASK.n_classes, TASK.seq_len)
    with pytest.raises(ProbeError, match="does not fit this model"):
        run_probe("dynamics", wider, TASK, batches, tmp_path, snapshots=snapshots)


# ---------------------------------------------------------------- Mamba states

def test_mamba_states_cluster_report(tmp_path):
    task = build_task(HMMConfig(K=8))
    torch.manual_seed(0)
    model = build_model(MambaConfig(d_model=16, n_layers=1, d_state=4), task.vocab_size, task.n_classes, task.seq_len)
    batches = EvalSet.generate(task, 64, seed=3).batches
    result = run_probe("mamba_states", model, task, batches, tmp_path)
    _check_result(result, "mamba_states", tmp_path)
    assert result["n_points"] + result["n_excluded_ties"] == 64 * 8
    assert -1 <= result["silhouette"] <= 1 and 0 <= result["nearest_centroid_accuracy"] <= 1
    assert 0 < result["chance_accuracy"] <= 1 and 2 <= result["n_classes"] <= 5
    layer = run_probe("mamba_states", model, task, batches, tmp_path, options={"site": "resid_post:-1", "dims": 3})
    assert layer["dims"] == 3 and len(layer["pc_variance_ratio"]) == 3
    # Layer ablation applies to a Mamba stack (no heads to zero).
    ablated = run_probe("ablation", model, task, batches, tmp_path)
    assert "heads" not in ablated and len(ablated["layers"]) == 1


# ---------------------------------------------------------------- refusals, before any compute

@pytest.mark.parametrize("config, article", [(LSTMConfig(d_model=16, n_layers=1), "an LSTM"),
                                             (MLPConfig(), "an MLP")])
@pytest.mark.parametrize("name", ["key_orthogonality", "qk_alignment", "attention_entropy", "dynamics"])
def test_attention_probes_refuse_models_without_attention(name, config, article, batches, tmp_path):
    model = build_model(config, TASK.vocab_size, TASK.n_classes, TASK.seq_len)
    with pytest.raises(ProbeError, match=f"probe '{name}' reads .*; {article} has no attention. "
                                         "It applies to: transformer"):
        run_probe(name, model, TASK, batches, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before writing anything


def test_mamba_states_refuses_a_transformer(batches, tmp_path):
    with pytest.raises(ProbeError, match="a transformer has no selective state-space layers. It applies to: mamba"):
        run_probe("mamba_states", _transformer(), TASK, batches, tmp_path)


def test_unknown_probe_and_options_are_refused(batches, tmp_path):
    with pytest.raises(ProbeError, match="unknown probe 'nope'; choose one of: " + ", ".join(PROBES)):
        run_probe("nope", _transformer(), TASK, batches, tmp_path)
    with pytest.raises(ProbeError, match="has no option 'layerz'; its options: .*layer"):
        run_probe("key_orthogonality", _transformer(), TASK, batches, tmp_path, options={"layerz": 1})
    with pytest.raises(ProbeError, match="option max_sequences must be an integer >= 1, got 0"):
        run_probe("ablation", _transformer(), TASK, batches, tmp_path, options={"max_sequences": 0})
    with pytest.raises(ProbeError, match="option positions must be 'scored' or 'all'"):
        run_probe("attention_entropy", _transformer(), TASK, batches, tmp_path, options={"positions": "keys"})
    with pytest.raises(ProbeError, match="not a layer"):
        run_probe("key_orthogonality", _transformer(), TASK, batches, tmp_path, options={"layer": 5})
    with pytest.raises(ProbeError, match="unknown site"):
        run_probe("value_manifold", _transformer(), TASK, batches, tmp_path, options={"site": "nowhere"})
    lstm = build_model(LSTMConfig(d_model=16, n_layers=1), TASK.vocab_size, TASK.n_classes, TASK.seq_len)
    with pytest.raises(ProbeError, match="no residual blocks"):
        run_probe("value_manifold", lstm, TASK, batches, tmp_path, options={"site": "v:0"})


def test_every_probe_declares_what_it_applies_to():
    for name, probe in PROBES.items():
        assert probe.name == name and probe.requires and probe.summary
        assert set(probe.requires) <= {"transformer", "mamba", "lstm", "mlp"}


@pytest.mark.parametrize("config", [LSTMConfig(d_model=16, n_layers=1), MLPConfig(hidden=32, n_layers=1)])
def test_value_manifold_reads_the_features_of_any_architecture(config, batches, tmp_path):
    model = build_model(config, TASK.vocab_size, TASK.n_classes, TASK.seq_len)
    result = run_probe("value_manifold", model, TASK, batches, tmp_path)
    _check_result(result, "value_manifold", tmp_path)
    assert result["site"] == "features" and list(result["by_site"]) == ["features"]


def test_centring_removes_the_part_every_key_shares():
    """Orthonormal keys plus one large shared offset: raw |cos| near 1, centred exactly 1/(n-1)
    (the n centred basis vectors form a regular simplex), whatever the offset."""
    from framework.probes.keys import centred

    n = 6
    keys = (torch.eye(n, dtype=torch.float64) + 10.0 * torch.ones(n, dtype=torch.float64)).unsqueeze(0)  # (1, n, n)
    assert stats.mean_abs_offdiag_cosine(keys).item() > 0.99
    assert stats.mean_abs_offdiag_cosine(centred(keys)).item() == pytest.approx(1 / (n - 1), abs=1e-12)
