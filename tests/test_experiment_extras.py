"""What a run does beyond train-and-score: evaluate_at variants, the matrix view, probes, the taxonomy,
and probe mode on a saved checkpoint (including the checkpoints and probes it must refuse)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from framework.errors import ConfigError
from framework.experiment import plan, run
from framework.io import CheckpointError, save_torch
from framework.probes import ProbeError
from framework.runners.windtunnel.taxonomy import TaxonomyConfig, classify

ROOT = Path(__file__).resolve().parent.parent
TINY = ["experiment=smoke", "runtime.progress=false", "train.steps=10", "train.eval_every=10", "~models.mamba"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny bijection run with a transformer and an LSTM, with weight snapshots, shared by the probe tests."""
    from hydra import compose, initialize_config_dir

    from framework.config import CONFIG_DIR

    out = tmp_path_factory.mktemp("trained")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, "~models.mlp", "~tasks.hmm", "train.snapshot_every=5"])
    run(cfg, out)
    return out


@pytest.mark.parametrize("overrides,field", [
    (["+evaluate_at.hmm={S3: {S: 3}}"], "evaluate_at.hmm.S3"),  # other classes: not scorable
    (["+evaluate_at.hmm={K0: {K: 0}}"], "evaluate_at.hmm.K0.K"),
    (["+evaluate_at.hmm={Kx: {Kk: 9}}"], "evaluate_at.hmm.Kx.Kk"),
    (["+evaluate_at.hmm={T: {name: bijection}}"], "evaluate_at.hmm.T.name"),
    (["+evaluate_at.hmm={K9: 9}"], "evaluate_at.hmm.K9"),
    (["matrix=[hmm]"], "matrix"),  # HMM sequences are not enumerable
    (["probes=[telepathy]"], "probes"),
    (["probes=[dynamics]"], "train.snapshot_every"),
    (["probes=[dynamics]", "train.snapshot_every=50"], "train.snapshot_every"),  # 10 steps: one snapshot
    (["probes=[key_orthogonality]", "+probe_options.key_orthogonality.layr=7"], "probe_options.key_orthogonality"),
    (["experiment=probe/value_manifold"], "checkpoint"),
    (["experiment=probe/value_manifold", "checkpoint=/nonexistent/run"], "checkpoint"),
    (["taxonomy={max_kl_bits: 0}"], "taxonomy.max_kl_bits"),
])
def test_bad_extras_name_their_field(compose, overrides, field):
    base = [] if overrides[0].startswith("experiment=") else TINY
    with pytest.raises(ConfigError) as info:
        plan(compose([*base, *overrides]))
    assert info.value.field == field, info.value


def test_extras_for_a_removed_task_are_ignored_with_a_warning(compose, caplog):
    jobs = plan(compose([*TINY, "~tasks.hmm", "+evaluate_at.hmm={K9: {K: 9}}", "matrix=[hmm]"])).jobs
    assert jobs and not any(job.variants or job.matrix for job in jobs)
    assert "name task 'hmm'" in caplog.text


def test_variants_are_scored_and_the_mlp_skips_longer_ones(compose, tmp_path):
    cfg = compose([*TINY, "~tasks.bijection", "~models.lstm", "tasks.hmm.K=6", "+evaluate_at.hmm={K4: {K: 4}, K9: {K: 9}}"])
    metrics = run(cfg, tmp_path)
    by_model = {r["model_key"]: r for r in metrics["runs"]}
    for name, K in (("K4", 4), ("K9", 9)):
        variant = by_model["transformer"]["evaluate_at"][name]
        assert len(variant["per_position"]["kl_bits"]) == variant["n_positions"] == K
        assert variant["kl_bits"] > 0 and variant["n_sequences"] >= 2048
    assert "kl_bits" in by_model["mlp"]["evaluate_at"]["K4"]
    assert "fixed-width prefix" in by_model["mlp"]["evaluate_at"]["K9"]["skipped"]
    assert (tmp_path / "lengths_hmm.png").stat().st_size > 0
    assert "## Length generalisation" in (tmp_path / "report.md").read_text()


def test_resume_refuses_a_finished_job_whose_settings_changed(compose, tmp_path):
    base = [*TINY, "~tasks.hmm", "~models.lstm", "~models.mlp"]
    first = run(compose(base), tmp_path)
    assert run(compose([*base, "resume=true"]), tmp_path)["runs"] == first["runs"]
    with pytest.raises(ConfigError, match="finished with other settings") as info:
        run(compose([*base, "resume=true", "matrix=[bijection]", "tasks.bijection.V=4", "tasks.bijection.L=4"]), tmp_path)
    assert info.value.field == "resume"


def test_evaluation_settings_do_not_change_the_trained_model(compose, tmp_path):
    base = [*TINY, "~tasks.bijection", "~models.lstm", "~models.mlp", "tasks.hmm.K=6"]
    plain = run(compose(base), tmp_path / "plain")["runs"][0]
    longer = run(compose([*base, "+evaluate_at.hmm={K9: {K: 9}}"]), tmp_path / "longer")["runs"][0]
    assert (plain["params"], plain["kl_bits"]) == (longer["params"], longer["kl_bits"])
    assert longer["evaluate_at"]["K9"]["n_positions"] == 9


def test_matrix_and_end_of_training_probes(compose, tmp_path):
    cfg = compose([*TINY, "~tasks.hmm", "~models.mlp", "tasks.bijection.V=4", "tasks.bijection.L=4", "matrix=[bijection]", "models.lstm.match_params=false",
                   "probes=[attention_entropy,mamba_states]"])
    metrics = run(cfg, tmp_path)
    by_model = {r["model_key"]: r for r in metrics["runs"]}
    view = by_model["transformer"]["matrix"]
    assert view["n_sequences"] == 576 and view["kl_bits_max"] >= view["kl_bits_mean"] > 0
    probes = by_model["transformer"]["probes"]
    assert len(probes["attention_entropy"]["layers"]) == 1  # the smoke transformer has one layer
    assert "no selective state-space" in probes["mamba_states"]["skipped"]
    assert "has no attention" in by_model["lstm"]["probes"]["attention_entropy"]["skipped"]
    assert list((tmp_path / "bijection_transformer" / "probes").glob("attention_entropy*.png"))
    report = (tmp_path / "report.md").read_text()
    assert "## Whole-matrix view" in report and "## Probes" in report


def test_probe_mode_reads_the_checkpoint_and_its_snapshots(compose, trained, tmp_path):
    job = trained / "bijection_transformer"
    metrics = run(compose(["experiment=probe/dynamics", f"checkpoint={job}"]), tmp_path)
    (entry,) = metrics["runs"]
    assert entry["model"] == "transformer" and entry["step"] == 10
    assert [e["step"] for e in entry["probes"]["dynamics"]["snapshots"]] == [5, 10]
    assert json.loads((tmp_path / "metrics.json").read_text())["experiment"] == "probe/dynamics"
    assert list(tmp_path.glob("dynamics*.png"))


def test_probe_mode_refuses_what_does_not_fit(compose, trained, tmp_path):
    lstm = trained / "bijection_lstm"
    with pytest.raises(ProbeError, match="an LSTM has no attention"):
        plan(compose(["experiment=probe/qk_alignment", f"checkpoint={lstm}"]))
    named = ["experiment=probe/value_manifold", f"checkpoint={lstm}", "+model@models.m=transformer"]
    with pytest.raises(CheckpointError, match="refusing to probe"):
        plan(compose(named))
    named = ["experiment=probe/value_manifold", f"checkpoint={lstm}", "+task@tasks.t=hmm"]
    with pytest.raises(CheckpointError, match="holds a task"):
        plan(compose(named))
    foreign = tmp_path / "foreign.pt"
    save_torch(foreign, {"weights": torch.zeros(3)})
    with pytest.raises(CheckpointError, match="not a checkpoint of a wind-tunnel job"):
        plan(compose(["experiment=probe/value_manifold", f"checkpoint={foreign}"]))
    state = torch.load(lstm / "checkpoint.pt", weights_only=True)
    state["meta"]["model"]["d_model"] += 8  # the record says one size, the weights are another
    mismatched = tmp_path / "mismatched.pt"
    save_torch(mismatched, state)
    with pytest.raises(CheckpointError, match="do not fit"):
        plan(compose(["experiment=probe/value_manifold", f"checkpoint={mismatched}"]))


def test_probe_command_refuses_in_one_line_and_leaves_no_run(trained, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "framework.cli", "experiment=probe/attention_entropy",
                           f"checkpoint={trained / 'bijection_lstm'}", f"hydra.run.dir={out}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "has no attention" in lines[0], proc.stderr
    assert not out.exists()


def _run(model, task, kl, accuracy=0.0):
    return {"model_key": model, "task_key": task, "kl_bits": kl, "accuracy": accuracy}


def test_taxonomy_verdicts_follow_the_scores():
    settings = TaxonomyConfig(primitives={"accumulation": ["bij", "tid"], "transport": ["hmm"], "binding": ["rec"],
                                          "counting": ["absent"]},
                              max_kl_bits=0.1, min_accuracy=0.9, by_accuracy=["rec"])
    runs = [_run("t", "bij", 0.01), _run("t", "tid", 0.05), _run("t", "hmm", 0.09), _run("t", "rec", 9.0, 0.95),
            _run("l", "bij", 0.01), _run("l", "tid", 0.2), _run("l", "hmm", 0.05), _run("l", "rec", 0.0, 0.3)]
    verdicts = classify(runs, settings)["models"]
    assert verdicts["t"]["primitives"] == ["accumulation", "transport", "binding"]
    assert verdicts["l"]["primitives"] == ["transport"]  # one accumulation task failed; recall by accuracy
    assert verdicts["t"]["untested"] == ["counting"]
    assert verdicts["l"]["solved"] == {"bij": True, "tid": False, "hmm": True, "rec": False}


def test_report_writes_the_taxonomy_table(tmp_path):
    from framework.runners.windtunnel.report import taxonomy_rows

    settings = TaxonomyConfig(primitives={"accumulation": ["bij"], "binding": ["rec"]}, by_accuracy=["rec"])
    runs = [_run("t", "bij", 0.01), _run("t", "rec", 3.0, 0.97), _run("m", "bij", 1.2), _run("m", "rec", 3.0, 0.02)]
    metrics = {"taxonomy": classify(runs, settings)}
    text = "\n".join(taxonomy_rows(metrics, {"bij": runs[0::2], "rec": runs[1::2]}))
    assert "| t | 0.01 bits ✓ | 97.0% acc ✓ | accumulation, binding |" in text
    assert "| m | 1.2 bits ✗ | 2.0% acc ✗ | none |" in text


def test_every_probe_has_an_experiment_listing_its_current_defaults(compose):
    from omegaconf import OmegaConf

    from framework.probes import PROBES

    for name, probe in PROBES.items():
        cfg = compose([f"experiment=probe/{name}"])
        assert list(cfg.probes) == [name] and cfg.experiment == f"probe/{name}"
        assert OmegaConf.to_container(cfg.probe_options)[name] == probe.options, name
