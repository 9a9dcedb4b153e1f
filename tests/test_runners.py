"""A new kind of experiment and a new architecture plug in without editing any framework file.

The toy runner below is registered here, in the test, and runs through the ``windtunnel`` command
(as a plugin file named in $WINDTUNNEL_PLUGINS), a ``-m`` sweep, and ``windtunnel-report``. The toy
architecture is registered here too, and is trained, scored and reported by the wind-tunnel runner.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from framework.config import RunConfig
from framework.errors import ConfigError, require
from framework.experiment import run
from framework.models import MODELS, ModelConfig, SequenceModel, register_model
from framework.runners import Runner, register_runner
from framework.sweep_report import aggregate, main as report_main

ROOT = Path(__file__).resolve().parent.parent


# ---- a toy runner: a few lines ----------------------------------------------------------------

@dataclass
class CoinConfig(RunConfig):
    runner: str = "coin"
    flips: int = 100  # flips of a biased coin per run
    bias: float = 0.5

    def __post_init__(self) -> None:
        require(self.flips >= 1, "flips", f"must be >= 1, got {self.flips}")


@register_runner
class CoinRunner(Runner):
    name, config = "coin", CoinConfig
    metrics, labels = {"error": "lower", "heads": "higher"}, ("coin",)

    def plan(self, settings: CoinConfig) -> CoinConfig:
        return settings

    def run(self, plan: CoinConfig, run_dir) -> dict:
        g = torch.Generator().manual_seed(plan.seed)
        heads = int((torch.rand(plan.flips, generator=g) < plan.bias).sum())
        return {"runs": [{"coin": f"p={plan.bias}", "heads": heads, "error": abs(heads / plan.flips - plan.bias)}]}


def _windtunnel(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "WINDTUNNEL_PLUGINS": __file__}
    return subprocess.run([sys.executable, "-m", "framework.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_a_toy_runner_runs_through_the_command_a_sweep_and_the_report(tmp_path):
    out = tmp_path / "one"
    proc = _windtunnel(["runner=coin", "flips=50", "bias=0.3", f"hydra.run.dir={out}"])
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["runner"] == "coin" and metrics["experiment"] == "coin"  # its default experiment
    assert metrics["runs"][0]["coin"] == "p=0.3" and 0 <= metrics["runs"][0]["heads"] <= 50
    assert (out / "config.yaml").exists()

    sweep = tmp_path / "sweep"
    proc = _windtunnel(["-m", "runner=coin", "seed=0,1,2", "bias=0.2,0.8", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr
    assert len(list(sweep.glob("*/metrics.json"))) == 6
    env_before = os.environ.get("WINDTUNNEL_PLUGINS")
    os.environ["WINDTUNNEL_PLUGINS"] = __file__  # the report finds the runner's metrics the same way
    try:
        assert report_main([str(sweep)]) == 0
        summary = aggregate(sweep)
    finally:
        os.environ.pop("WINDTUNNEL_PLUGINS") if env_before is None else os.environ.update(WINDTUNNEL_PLUGINS=env_before)
    groups = {g["coin"]: g for g in summary["groups"]}
    assert set(groups) == {"p=0.2", "p=0.8"} and {g["n_seeds"] for g in groups.values()} == {3}
    assert groups["p=0.8"]["heads"] > groups["p=0.2"]["heads"]  # 80 against 20 expected heads of 100
    text = (sweep / "summary.md").read_text()
    assert "## Runner: coin" in text and "error ↓" in text and "heads ↑" in text
    assert (sweep / "summary_error.png").stat().st_size > 0


@pytest.mark.parametrize("override,message", [("flips=0", "invalid setting: flips: must be >= 1"),
                                               ("flipz=3", "invalid setting: flipz"), ("+flipz=3", "flipz: not a setting")])
def test_a_toy_runners_bad_settings_are_refused_in_one_line(override, message, tmp_path, monkeypatch, capsys):
    from framework import cli

    monkeypatch.setattr(sys, "argv", ["windtunnel", "runner=coin", override, f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_toy_runner_runs_in_process(compose, tmp_path):
    metrics = run(compose(["runner=coin", "flips=20"]), tmp_path)
    assert metrics["runner"] == "coin" and len(metrics["runs"]) == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["runs"] == metrics["runs"]


# ---- a fifth architecture -----------------------------------------------------------------------

@dataclass
class BagConfig(ModelConfig):
    """A bag of the tokens seen so far: a running mean of embeddings, then a linear head."""

    name: str = "bag"
    width: int = 16
    size_field = "width"

    def __post_init__(self) -> None:
        require(self.width >= 1, "width", f"must be >= 1, got {self.width}")


class Bag(SequenceModel):
    article, color = "a bag of tokens", "tab:olive"

    def __init__(self, config: BagConfig, vocab_size: int, n_classes: int, max_len: int):
        super().__init__()
        self.config = config
        self.emb = nn.Embedding(vocab_size, config.width)
        self.hook_features = nn.Identity()
        self.head = nn.Linear(config.width, n_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        e = self.emb(tokens)  # (B, T, w)
        steps = torch.arange(1, tokens.shape[1] + 1, device=tokens.device)[None, :, None]
        return self.head(self.hook_features(e.cumsum(1) / steps))  # (B, T, n_classes)


@pytest.fixture
def bag():
    """The toy architecture, registered for one test only (the registry is the process's)."""
    register_model("bag", BagConfig, Bag)
    yield
    MODELS.pop("bag")


def test_a_fifth_architecture_is_trained_scored_probed_and_reported(compose, tmp_path, bag):
    cfg = compose(["experiment=smoke", "runtime.progress=false", "~models.mamba", "~models.lstm", "~models.mlp",
                   "+models.bag={name: bag, width: 8, match_params: true}", "+evaluate_at.hmm={K9: {K: 9}}",
                   "probes=[value_manifold,attention_entropy]"])
    metrics = run(cfg, tmp_path)
    bags = [r for r in metrics["runs"] if r["model"] == "bag"]
    assert [r["task_key"] for r in bags] == ["bijection", "hmm"]
    transformers = {r["task_key"]: r["params"] for r in metrics["runs"] if r["model"] == "transformer"}
    for r in bags:
        assert abs(r["params"] / transformers[r["task_key"]] - 1) <= 0.02  # capacity-matched by its size field
        assert r["model_config"]["width"] != 8 and r["kl_bits"] > 0 and r["n_sequences"] >= 2048
        manifold = r["probes"]["value_manifold"]  # through the hook point every architecture exposes
        assert "skipped" not in manifold and manifold["site"] == "features" and 0 < manifold["pc1_variance"] <= 1
        assert "a bag of tokens has no attention" in r["probes"]["attention_entropy"]["skipped"]
    assert bags[1]["evaluate_at"]["K9"]["n_positions"] == 9  # the default at_length: reads any length
    report = (tmp_path / "report.md").read_text()
    assert "| bijection | bag |" in report and "| hmm | bag |" in report
    assert (tmp_path / "calibration_hmm.png").stat().st_size > 0


def test_match_to_names_the_size_reference(compose):
    from framework.experiment import plan
    from framework.models import count_params

    jobs = plan(compose(["experiment=smoke", "~tasks.hmm", "match_to=lstm", "models.lstm.match_params=false"])).jobs
    counts = {j.model_key: count_params(j.build_model()) for j in jobs}
    for key in ("mamba", "mlp"):
        assert abs(counts[key] / counts["lstm"] - 1) <= 0.02, counts  # matched to the LSTM ...
        assert abs(counts[key] / counts["transformer"] - 1) > 0.02, counts  # ... not to the transformer
    with pytest.raises(ConfigError) as info:
        plan(compose(["experiment=smoke", "match_to=gru"]))
    assert info.value.field == "match_to" and "lstm" in info.value.message


def test_the_config_hash_ignores_only_what_never_changes_a_result(compose):
    from framework.config import config_hash

    base = config_hash(compose(["experiment=smoke"]))
    for neutral in ("runtime.threads=1", "runtime.progress=false", "resume=true", "hydra.run.dir=/elsewhere"):
        assert config_hash(compose(["experiment=smoke", neutral])) == base, neutral
    for deciding in ("runtime.device=cpu", "runtime.deterministic=true", "seed=1", "train.lr=2e-3"):
        assert config_hash(compose(["experiment=smoke", deciding])) != base, deciding


@pytest.mark.parametrize("plugins,what", [("/nonexistent/plugin.py", "no such file"),
                                          ("no_such_module_xyz", "ModuleNotFoundError")])
def test_a_plugin_that_cannot_be_imported_is_refused_in_one_line(plugins, what, tmp_path, monkeypatch, capsys):
    from framework import cli

    monkeypatch.setenv("WINDTUNNEL_PLUGINS", plugins)
    monkeypatch.setattr(sys, "argv", ["windtunnel", "experiment=smoke", f"hydra.run.dir={tmp_path / 'r'}"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and len(lines) == 1, lines
    assert "WINDTUNNEL_PLUGINS" in lines[0] and what in lines[0] and not (tmp_path / "r").exists(), lines


def test_an_installed_package_registers_its_runner_through_an_entry_point(tmp_path):
    """A package that declares a `windtunnel.runners` entry point is found without any setting."""
    (tmp_path / "coinplugin.py").write_text(Path(__file__).read_text())
    dist = tmp_path / "coinplugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: coinplugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[windtunnel.runners]\ncoin = coinplugin\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("WINDTUNNEL_PLUGINS", None)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "framework.cli", "runner=coin", "flips=10", f"hydra.run.dir={out}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "metrics.json").read_text())["runner"] == "coin"
