"""Bad settings fail before compute with one line naming the field; good ones compose into typed jobs."""
from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException

from framework.experiment import plan
from framework.errors import ConfigError

BAD = [
    (["experiment=smoke", "tasks.bijection.L=7"], "tasks.bijection.L"),  # L > V without replacement
    (["experiment=smoke", "tasks.bijection.V=1"], "tasks.bijection.V"),
    (["experiment=smoke", "tasks.hmm.S=1"], "tasks.hmm.S"),
    (["experiment=smoke", "tasks.hmm.K=0"], "tasks.hmm.K"),
    (["experiment=smoke", "train.lr=0"], "train.lr"),
    (["experiment=smoke", "train.lr=-1e-3"], "train.lr"),
    (["experiment=smoke", "train.target=logits"], "train.target"),
    (["experiment=smoke", "train.eval_sequences=100"], "train.eval_sequences"),
    (["experiment=smoke", "runtime.device=tpu"], "runtime.device"),
    (["experiment=smoke", "models.transformer.n_heads=3"], "models.transformer.n_heads"),
    (["experiment=smoke", "models.lstm.d_model=0"], "models.lstm.d_model"),
    (["experiment=smoke", "models.mlp.name=perceptron"], "models.mlp.name"),
    (["experiment=smoke", "tasks.hmm.name=maze"], "tasks.hmm.name"),

    (["experiment=smoke", "+train_by.hmm={stepz: 3}"], "train_by.hmm.stepz"),
    (["experiment=smoke", "+train_by.hmm={steps: 0}"], "train_by.hmm.steps"),
    (["experiment=smoke", "+train_by.hmm_mlp={lr: 0}"], "train_by.hmm_mlp.lr"),
    (["experiment=smoke", "+train_by.lstm=3"], "train_by.lstm"),
    (["experiment=smoke", "~models.transformer", "~models.mamba", "~models.lstm", "~models.mlp"], "models"),
]


@pytest.mark.parametrize("overrides,field", BAD)
def test_bad_setting_names_its_field(compose, overrides, field):
    with pytest.raises(ConfigError) as info:
        plan(compose(overrides))
    assert info.value.field == field
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["train.lrr=1", "train.steps=many", "models.transformer.d_modl=3",
                                      "experiment=nonexistent", "tasks.bijection.replacement=maybe"])
def test_typos_and_wrong_types_fail_at_compose_time(compose, override):
    with pytest.raises(ConfigCompositionException):
        compose(["experiment=smoke", override])


def test_smoke_plan_is_capacity_matched(compose):
    from framework.models import count_params

    jobs = plan(compose(["experiment=smoke"])).jobs
    assert [(j.task_key, j.model_key) for j in jobs] == [
        (t, m) for t in ("bijection", "hmm") for m in ("transformer", "mamba", "lstm", "mlp")]
    for task_key in ("bijection", "hmm"):
        counts = {j.model_key: count_params(j.build_model()) for j in jobs if j.task_key == task_key}
        for name in ("mamba", "lstm", "mlp"):
            assert abs(counts[name] / counts["transformer"] - 1) <= 0.02, (task_key, counts)


def test_train_by_applies_task_then_model_then_job_deltas(compose):
    jobs = plan(compose(["experiment=smoke", "+train_by.hmm={steps: 7, lr: 0.5}", "+train_by.mlp={steps: 9}",
                         "+train_by.hmm_mlp={steps: 11}"])).jobs
    steps = {j.name: j.train.steps for j in jobs}
    assert steps == {"bijection_transformer": 20, "bijection_mamba": 20, "bijection_lstm": 20, "bijection_mlp": 9,
                     "hmm_transformer": 7, "hmm_mamba": 7, "hmm_lstm": 7, "hmm_mlp": 11}
    assert {j.train.lr for j in jobs if j.task_key == "hmm"} == {0.5}


@pytest.mark.parametrize("experiment", ["default", "smoke", "demo", "paper/bijection_v20", "paper/hmm"])
def test_every_experiment_resolves(compose, experiment):
    assert plan(compose([f"experiment={experiment}"])).jobs


def test_train_by_for_a_removed_model_is_ignored_with_a_warning(compose, caplog):
    jobs = plan(compose(["experiment=demo", "~models.mlp_token", "~tasks.hmm"])).jobs
    assert {j.model_key for j in jobs} == {"transformer", "mamba", "lstm", "mlp"}
    assert any("train_by.mlp_token matches no" in r.getMessage() for r in caplog.records)


def test_the_label_preset_is_the_default_with_labels_a_longer_momentum_and_batch_64(compose):
    from framework.training import TrainConfig

    [preset] = [j.train for j in plan(compose(["experiment=demo", "train=label"])).jobs
                if j.name == "bijection_transformer"]
    [plain] = [j.train for j in plan(compose(["experiment=demo"])).jobs if j.name == "bijection_transformer"]
    changed = {k: getattr(preset, k) for k in vars(plain) if getattr(preset, k) != getattr(plain, k)}
    assert changed == {"target": "label", "batch_size": 64, "lr": 8.5e-3, "muon_momentum": 0.99}
    assert preset.steps == plain.steps  # the experiment's own settings still apply on top
    assert isinstance(preset, TrainConfig)
    # A bad value next to the preset still fails by name.
    with pytest.raises(ConfigError) as info:
        plan(compose(["experiment=smoke", "train=label", "train.muon_momentum=1"]))
    assert info.value.field == "train.muon_momentum"
