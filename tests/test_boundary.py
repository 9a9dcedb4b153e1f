"""The construction boundary (issue 13): the transfer runner, the padded task it reads tasks through,
the (a, b) probes of program identification, the variant split of the wind-tunnel report, and the
one-line refusals of impossible boundary settings before any compute."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import framework.runners.transfer  # noqa: F401  (registers the transfer runner)
from framework.errors import ConfigError
from framework.experiment import plan, run
from framework.metrics.boundary import variant_split
from framework.models import TransformerConfig, build_model
from framework.probes import program as program_probes
from framework.tasks import ProgramConfig, ProgramTask
from framework.tasks.padded import PaddedTask

ROOT = Path(__file__).resolve().parent.parent
FAST = ["runtime.progress=false", "train.val_sequences=64", "train.eval_every=10"]
TINY_TRANSFORMER = ["models.transformer.d_model=16", "models.transformer.n_layers=1", "models.transformer.n_heads=2",
                    "models.transformer.d_ff=32"]
TRANSFER = ["experiment=boundary/modulus_transfer", *FAST, *TINY_TRANSFORMER, "~models.mamba", "~models.mlp_prefix",
            "models.lstm.n_layers=1", "models.lstm.d_model=16", "models.lstm.match_params=false",
            "tasks.p5.length=6", "tasks.p7.length=6", "curve_every=5",
            "phases=[{task: p5, train: {steps: 10}}, {task: p7, train: {steps: 10}}]",
            "+train_by.lstm_phase1={steps: 6}"]


# ------------------------------------------------------------------ the padded task


def test_padded_task_keeps_the_exact_posterior_exact():
    task = PaddedTask(ProgramTask(ProgramConfig(p=5, length=6)), 7, 7)
    batch = task.sample(256, torch.Generator().manual_seed(0))
    assert batch.posterior.shape == (256, 6, 7) and task.vocab_size == task.n_classes == 7
    assert torch.all(batch.posterior[..., 5:] == 0)  # residues 5, 6 cannot follow in Z_5
    assert torch.allclose(batch.posterior.sum(-1), torch.ones(256, 6, dtype=torch.float64))
    assert torch.allclose(task.posterior_reference(batch.tokens[:8]), batch.posterior[:8])
    assert int(batch.tokens.max()) < 5 and task.p == 5  # the tokens are the task's own; attributes read through
    with pytest.raises(ConfigError):
        PaddedTask(ProgramTask(ProgramConfig(p=7, length=6)), 5, 5)


# ------------------------------------------------------------------ the transfer runner


def test_transfer_runner_end_to_end(compose, tmp_path):
    metrics = run(compose(TRANSFER), tmp_path)
    assert metrics["runner"] == "transfer" and metrics["sizes"] == [7, 7, 6]
    by_model = {r["model_key"]: r for r in metrics["runs"]}
    assert set(by_model) == {"transformer", "lstm"}
    for r in by_model.values():
        R = r["R_kl_bits"]
        assert r["tasks"] == ["p5", "p7"] and len(R) == 2 and all(len(row) == 2 for row in R)
        assert all(x > 0 for row in R for x in row)
        # the definitions of jobs.py, checked against R itself
        assert r["forgetting_bits"]["0"] == pytest.approx(R[1][0] - R[0][0])
        assert r["transfer_bits"]["1"] == pytest.approx(r["scratch"]["1"]["kl_bits"] - R[1][1])
        assert r["zero_shot_transfer_bits"]["1"] == pytest.approx(r["R_init_kl_bits"][1] - R[0][1])
    for key, last in (("transformer", 10), ("lstm", 6)):  # train_by.lstm_phase1 shortens one phase of one model
        r = by_model[key]
        assert r["steps"] == [10, last] and r["scratch"]["1"]["steps"] == last
        # curve: init, then snapshots every 5 steps and at the end of each phase, both tasks scored at each
        assert [p["global_step"] for p in r["curve"]] == [0, 5, 10, 15, 10 + last]
        assert all(set(p["kl_bits"]) == {"p5", "p7"} for p in r["curve"])
    assert (tmp_path / "transfer.png").stat().st_size > 0
    report = (tmp_path / "report.md").read_text()
    assert "R[i][j]" in report and "| phase1_p7 | p7 |" in report
    assert (tmp_path / "transformer" / "phase1_p7" / "checkpoint.pt").exists()
    assert (tmp_path / "lstm" / "scratch1_p7" / "checkpoint.pt").exists()
    # resume=true finds the finished work and redoes nothing
    again = run(compose([*TRANSFER, "resume=true"]), tmp_path)
    assert again["runs"] == json.loads((tmp_path / "metrics.json").read_text())["runs"]


@pytest.mark.parametrize("overrides,field", [
    (["phases=[{task: p5}]"], "phases"),
    (["phases=[{task: p5}, {task: p11}]"], "phases[1].task"),
    (["phases=[{task: p5}, {tsk: p7}]"], "phases[1].tsk"),
    (["phases=[{task: p5, train: {stepz: 3}}, {task: p7}]"], "phases[0].train.stepz"),
    (["phases=[{task: p5, train: {steps: 0}}, {task: p7}]"], "phases[0].train.steps"),
    (["phases=[p5, p7]"], "phases[0]"),
    (["curve_every=-1"], "curve_every"),
    (["tasks.p7.p=8"], "tasks.p7.p"),
    (["match_to=gpt"], "match_to"),
    (["+train_by.transformer={stepz: 3}"], "train_by.transformer.stepz"),
])
def test_transfer_refuses_bad_input_before_compute(compose, overrides, field):
    with pytest.raises(ConfigError) as info:
        plan(compose([*TRANSFER, *overrides]))
    assert info.value.field == field, info.value


def test_transfer_deltas_for_a_removed_model_are_ignored_with_a_warning(compose, caplog):
    the_plan = plan(compose(TRANSFER))  # the experiment's train_by.mamba_phase0 outlives ~models.mamba
    assert set(the_plan.phases) == {"transformer", "lstm"} and "train_by.mamba_phase0" in caplog.text


# ------------------------------------------------------------------ boundary settings refused in one line


@pytest.mark.parametrize("experiment,override,field", [
    ("loss_horizon", "tasks.program.loss_horizon=13", "tasks.program.loss_horizon"),  # longer than length 12
    ("loss_horizon", "tasks.program.loss_horizon=0", "tasks.program.loss_horizon"),
    ("loss_horizon", "+evaluate_at.program.far={loss_horizon: 20}", "evaluate_at.program.far.loss_horizon"),
    ("heldout_prefix", "tasks.program.heldout_bucket=8", "tasks.program.heldout_bucket"),  # buckets 0..7
    ("heldout_prefix", "tasks.program.heldout_bucket=-1", "tasks.program.heldout_bucket"),
    ("length", "tasks.program.p=9", "tasks.program.p"),
    ("program", "tasks.integer.pi=1.0", "tasks.integer.pi"),
    ("program", "tasks.opaque.pi=0", "tasks.opaque.pi"),
    ("program", "+probe_options.program_ablation.rank=0", "probe_options.program_ablation"),
])
def test_boundary_settings_are_refused_before_compute(compose, experiment, override, field):
    with pytest.raises(ConfigError) as info:
        plan(compose([f"experiment=boundary/{experiment}", override]))
    assert info.value.field == field, info.value


def test_the_command_refuses_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "framework.cli", "experiment=boundary/loss_horizon",
                           "tasks.program.loss_horizon=13", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tasks.program.loss_horizon" in lines[0] and "length=12" in lines[0]
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ the variant split


def test_variant_split_separates_trained_positions_from_those_past_them():
    run_entry = {"kl_bits": 0.01, "kl_bits_stderr": 0.001, "per_position": {"kl_bits": [0.01, 0.01]},
                 "evaluate_at": {"full": {"kl_bits": 0.5, "kl_bits_stderr": 0.01,
                                          "per_position": {"kl_bits": [0.02, 0.0, 1.0, 2.0],
                                                           "entropy_mae_bits": [0.0, 0.2, 1.0, 1.0]}},
                                 "L9": {"seq_len": 9, "skipped": "mlp"}}}
    split = variant_split(run_entry)
    assert set(split) == {"full"}
    assert split["full"]["kl_bits_within"] == pytest.approx(0.01)
    assert split["full"]["kl_bits_past"] == pytest.approx(1.5)
    assert split["full"]["entropy_mae_bits_within"] == pytest.approx(0.1)
    assert split["full"]["trained_positions"] == 2 and split["full"]["variant_positions"] == 4


# ------------------------------------------------------------------ the (a, b) probes


def test_program_sequences_and_their_programs_are_recovered_from_the_tokens():
    task = ProgramTask(ProgramConfig(p=5, length=8))
    gen = torch.Generator().manual_seed(1)
    x0, a, b = torch.randint(0, 5, (3, 64), generator=gen)
    b = torch.where((a * x0 + b) % 5 == x0, (b + 1) % 5, b)  # x_1 != x_0, so (a, b) is unique
    run_ = [x0]
    for _ in range(7):
        run_.append((a * run_[-1] + b) % 5)
    programs = torch.stack(run_, 1)
    noise = torch.randint(0, 5, (64, 8), generator=gen)
    tokens = torch.cat([programs[:32], noise[:32], programs[32:], noise[32:]])  # each half: programs, then noise
    from framework.probes.base import ProbeContext
    from framework.tasks.base import Batch

    batch = Batch(tokens, task.positions(), task.posterior(tokens), torch.zeros(128, 8, dtype=torch.long))
    ctx = ProbeContext(None, task, [batch], Path("."), {"max_sequences": 128}, None, torch.device("cpu"))
    parts = program_probes.split_sequences(ctx)
    for half, rows in (("fit", slice(0, 32)), ("test", slice(32, 64))):
        found = parts[half]
        assert bool(found["program"][:32].all()) and int(found["program"][32:].sum()) <= 1  # noise: 5^-5 odds
        assert torch.equal(found["a"][:32], a[rows]) and torch.equal(found["b"][:32], b[rows])


def test_linear_probe_decodes_what_is_linearly_there_and_not_what_is_not():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 7, (2000,), generator=gen)
    code = torch.randn(7, 16, generator=gen, dtype=torch.float64)
    there = code[y] + 0.3 * torch.randn(2000, 16, generator=gen, dtype=torch.float64)
    absent = torch.randn(2000, 16, generator=gen, dtype=torch.float64)
    for x, lo, hi in ((there, 0.95, 1.0), (absent, 0.0, 0.25)):
        fitted = program_probes.ridge_fit(x[:1000], y[:1000], 7, 1e-3)
        acc = float((program_probes.ridge_predict(fitted, x[1000:]) == y[1000:]).double().mean())
        assert lo <= acc <= hi, acc


def test_interventions_edit_the_residual_stream_as_stated():
    torch.manual_seed(0)
    model = build_model(TransformerConfig(d_model=16, n_layers=2, n_heads=2, d_ff=32), 7, 7, 8).double().eval()
    base, donor = torch.randint(0, 7, (2, 5, 8))
    site = "resid_post:1"
    donor_resid = program_probes.residuals(model, donor, [site])[site]
    eye = torch.eye(16, dtype=torch.float64)

    def patch(basis):
        return lambda x, rows: x + ((donor_resid[rows] - x) @ basis) @ basis.T

    with torch.inference_mode():
        # the whole stream patched at the last block: the base's logits become the donor's
        full = program_probes.edited_logits(model, base, site, patch(eye))
        assert torch.allclose(full, model(donor).double(), atol=1e-10)
        # an empty subspace changes nothing; a partial one changes something
        none = program_probes.edited_logits(model, base, site, patch(eye[:, :0]))
        assert torch.allclose(none, model(base).double(), atol=1e-10)
        some = program_probes.edited_logits(model, base, site, patch(eye[:, :4]))
        assert not torch.allclose(some, model(base).double())
        # mean ablation of everything: the output no longer depends on the tokens
        mu = torch.zeros(8, 16, dtype=torch.float64)
        ablated = program_probes.edited_logits(model, torch.cat([base, donor]), site,
                                               lambda x, rows: x - ((x - mu[: x.shape[1]]) @ eye) @ eye.T)
        assert torch.allclose(ablated[:5], ablated[5:], atol=1e-10)


def test_program_probes_on_a_tiny_trained_transformer(compose, tmp_path):
    options = [f"+probe_options.{name}.max_sequences=600" for name in
               ("program_decode", "program_ablation", "program_interchange")]
    cfg = compose(["experiment=boundary/program", *FAST, *TINY_TRANSFORMER, "~tasks.opaque", "tasks.integer.p=5",
                   "tasks.integer.length=6", "train.steps=30", "+task@tasks.bij=bijection", "tasks.bij.V=4",
                   "tasks.bij.L=4", "+model@models.lstm=lstm", "models.lstm.d_model=8", "models.lstm.n_layers=1",
                   "+train_by.bij={steps: 2}", "+train_by.lstm={steps: 2}", *options,
                   "+probe_options.program_interchange.random_draws=2",
                   "+probe_options.program_ablation.random_draws=2"])
    metrics = run(cfg, tmp_path)
    runs = {(r["task_key"], r["model_key"]): r for r in metrics["runs"]}
    probes = runs["integer", "transformer"]["probes"]
    decode = probes["program_decode"]
    assert decode["sites"] == ["embed", "resid_post:0"] and decode["chance_a"] == pytest.approx(0.2)
    for key in ("accuracy_a", "accuracy_b", "accuracy_ab"):
        assert all(len(decode[key][s]) == 6 and all(0 <= v <= 1 for v in decode[key][s]) for s in decode["sites"])
    # the embedding at t = 0 holds x_0 alone, which says nothing about (a, b)
    assert decode["accuracy_ab"]["embed"][0] < 0.2
    ablation = probes["program_ablation"]
    assert ablation["site"] == "resid_post:0" and 1 <= ablation["rank"] <= 8  # 2 (p - 1) at most
    assert len(ablation["random_subspace"]["draws"]) == 2
    assert ablation["probe_subspace"]["programs"]["kl_bits"] > 0
    inter = probes["program_interchange"]
    for row in ("intact", "probe_subspace", "random_subspace"):
        assert 0 <= inter[row]["follows_donor"] <= 1 and inter[row]["kl_bits_vs_donor"] > 0
    assert inter["intact"]["follows_donor"] + inter["intact"]["follows_base"] <= 1
    assert "has no residual stream" in runs["integer", "lstm"]["probes"]["program_decode"]["skipped"]
    assert "has no program" in runs["bij", "transformer"]["probes"]["program_ablation"]["skipped"]
    assert (tmp_path / "integer_transformer" / "probes" / "program_interchange.png").exists()
    assert "program_decode" in (tmp_path / "report.md").read_text()
