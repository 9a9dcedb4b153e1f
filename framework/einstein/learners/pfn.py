"""An in-context learner, PFN style: a sequence model trained on many random functions (the
``regression_context`` task) reads a world instance as its context and predicts the probes.

Fit stores the data; predict maps the data and the probe inputs into the task's normalised
coordinates, tokenises them, and takes the posterior mean of the model's distribution over y bins
at each probe (Müller et al. 2022, "Transformers Can Do Bayesian Inference"). The map, from the
fitted data alone (never the probes):

* each input: log when positive and spanning over a decade; oriented so that the anomalies lie above
  the training points (where there are anomalies); then affine, the data's range onto [0, 1/2), the
  task's context half. Probes may land in [1/2, 1] (extrapolation up to one more data span) and are
  clipped there;
* the output: log when positive and spanning over a decade, then the data's range onto
  [Y_FLOOR, 2 Y_FLOOR] = [0.25, 0.5] of the task's [0, 1] output bins;
* the context: ``n_context`` points, training points first and then up to ``max_spread`` anomalies
  (the task's layout), subsampled without replacement where there are more (with, where fewer).

The model is either a trained wind-tunnel job (``checkpoint``: a folder or checkpoint.pt of a
``regression_context`` job, e.g. from ``windtunnel tasks.rc={name: regression_context} ...``) or is
trained here on first use, with the existing training loop, and kept for the process (and in
``cache_dir`` when given) under a digest of its settings.

Limits, by construction: the prior is the task's additive bent laws, not the worlds' laws; outputs
beyond twice the data's range fall in the edge bins (so a law that grows much faster beyond the data,
W3's precession, is clipped); the value grid is 1/48 of the output range.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from framework.errors import ConfigError, require
from framework.einstein.learners.base import FitData, Learner, LearnerConfig
from framework.seeds import digest

log = logging.getLogger(__name__)

_TRAINED: dict[str, tuple[torch.nn.Module, Any]] = {}  # settings digest -> (model, task), per process


def _tiny_model() -> dict:
    return {"name": "transformer", "d_model": 64, "n_layers": 2, "n_heads": 4, "d_ff": 128}


@dataclass
class PFNConfig(LearnerConfig):
    name: str = "pfn"
    checkpoint: Optional[str] = None  # a trained regression_context job; None: train one here
    task: Dict[str, Any] = field(default_factory=dict)  # regression_context settings to train on
    model: Dict[str, Any] = field(default_factory=_tiny_model)  # the architecture (a framework.models config)
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    train_seed: int = 0
    cache_dir: Optional[str] = None  # where a model trained here is kept (and found again); None: a temp dir

    def __post_init__(self):
        require(self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        if self.checkpoint is not None:
            path = Path(self.checkpoint)
            require((path / "checkpoint.pt").exists() if path.is_dir() else path.exists(), "checkpoint",
                    f"no checkpoint at {path} (a regression_context job folder or its checkpoint.pt)")
        else:
            from framework.models import MODELS
            from framework.registry import config_from
            from framework.tasks import TASKS

            try:
                config_from(TASKS, {**self.task, "name": "regression_context"}, "task")
            except ConfigError as err:
                raise err.under("task") from None
            try:
                config_from(MODELS, dict(self.model), "model")
            except ConfigError as err:
                raise err.under("model") from None


def trained_model(config: PFNConfig) -> tuple[torch.nn.Module, Any]:
    """(model in eval mode, its regression_context task): loaded, or trained once per settings."""
    from framework.tasks import TASKS
    from framework.training.checkpoint import load_trained

    if config.checkpoint is not None:
        key = f"checkpoint:{Path(config.checkpoint).resolve()}"
        if key not in _TRAINED:
            model, task, _, path = load_trained(config.checkpoint)
            if task.name != "regression_context":
                raise ConfigError("checkpoint", f"{path} is a {task.name} job, not a regression_context one")
            _TRAINED[key] = (model.eval(), task)
        return _TRAINED[key]
    settings = {"task": config.task, "model": config.model, "steps": config.steps, "batch_size": config.batch_size,
                "lr": config.lr, "seed": config.train_seed}
    key = digest(settings, 16)
    if key not in _TRAINED:
        _TRAINED[key] = _train(config, key)
    return _TRAINED[key]


def _train(config: PFNConfig, key: str) -> tuple[torch.nn.Module, Any]:
    from framework.metrics.evaluate import EvalSet
    from framework.models import MODELS, build_model, count_params
    from framework.registry import config_from
    from framework.seeds import derive_seed
    from framework.tasks import TASKS, build_task
    from framework.training import TrainConfig, train

    task_config = config_from(TASKS, {**config.task, "name": "regression_context"}, "task")
    task = build_task(task_config)
    model_config = config_from(MODELS, dict(config.model), "model")
    torch.manual_seed(derive_seed(config.train_seed, "pfn", "init"))
    model = build_model(model_config, task.vocab_size, task.n_classes, task.seq_len)
    root = Path(config.cache_dir) if config.cache_dir else Path(tempfile.gettempdir()) / "windtunnel_pfn"
    out = root / key
    cfg = TrainConfig(steps=config.steps, batch_size=config.batch_size, lr=config.lr,
                      warmup_steps=min(100, config.steps // 10), eval_every=max(1, config.steps // 4),
                      val_sequences=256, eval_batch_size=256, checkpoint_every=max(1, config.steps // 4),
                      optimizer="adamw")  # what its lr was tuned, and its cache keyed, with
    val = EvalSet.generate(task, cfg.val_sequences, derive_seed(config.train_seed, "pfn", "val"), cfg.eval_batch_size)
    meta = {"task": asdict(task_config), "model": asdict(model_config), "params": count_params(model)}
    log.info("pfn: training a %s (%d parameters) on regression_context for %d steps in %s",
             model_config.name, meta["params"], cfg.steps, out)
    result = train(model, task, cfg, out, seed=derive_seed(config.train_seed, "pfn", "data"), val_set=val,
                   meta=meta, resume=True, desc="pfn", progress=False)
    model.eval()
    model.pfn_history = result.history  # validation KL (bits) against the task's exact posterior
    return model, task


class _Axis:
    """One column's map into [0, 1]: optional log, orientation, affine from the data's range."""

    def __init__(self, values: np.ndarray, lo: float, span: float, oriented_by: np.ndarray | None = None,
                 train: np.ndarray | None = None):
        v = np.asarray(values, dtype=float)
        self.log = bool(np.all(v > 0) and v.max() / v.min() > 10)
        z = self._z(v)
        self.sign = 1.0
        if oriented_by is not None and len(oriented_by) and train is not None:
            if np.mean(self._z(oriented_by)) < np.mean(self._z(train)):
                self.sign = -1.0
        z = self.sign * z
        self.zmin, zmax = float(z.min()), float(z.max())
        self.zspan = zmax - self.zmin if zmax > self.zmin else 1.0
        self.lo, self.span = lo, span

    def _z(self, v):
        v = np.asarray(v, dtype=float)
        return np.log(np.maximum(v, 1e-300)) if self.log else v

    def forward(self, v):
        return self.lo + self.span * (self.sign * self._z(v) - self.zmin) / self.zspan

    def inverse(self, u):
        z = self.sign * ((np.asarray(u, dtype=float) - self.lo) / self.span * self.zspan + self.zmin)
        return np.exp(np.clip(z, -700, 700)) if self.log else z


class PFNLearner(Learner):
    name = "pfn"
    sees = ("train", "anomalies")

    def fit(self, data: FitData, rng: np.random.Generator) -> None:
        from framework.tasks.regression_context import CONTEXT_HALF, Y_FLOOR

        self.model, self.task = trained_model(self.config)
        c = self.task.config
        x_tr, y_tr = np.asarray(data.x_train, float), np.asarray(data.y_train, float)
        x_an = np.asarray(data.x_anomaly if data.x_anomaly is not None else np.zeros((0, x_tr.shape[1])), float)
        y_an = np.asarray(data.y_anomaly if data.y_anomaly is not None else np.zeros(0), float)
        if x_tr.shape[1] != c.d:
            raise ConfigError("learner.task.d", f"the world has {x_tr.shape[1]} inputs and the PFN's task {c.d}")
        x_all, y_all = np.concatenate([x_tr, x_an]), np.concatenate([y_tr, y_an])
        self.x_axes = [_Axis(x_all[:, j], 0.0, CONTEXT_HALF * (1 - 1e-9), x_an[:, j], x_tr[:, j]) for j in range(c.d)]
        self.y_axis = _Axis(y_all, Y_FLOOR, Y_FLOOR)
        m = min(len(x_an), c.max_spread)
        pick_an = rng.choice(len(x_an), size=m, replace=False) if m else np.zeros(0, dtype=int)
        n_tr = c.n_context - m
        pick_tr = rng.choice(len(x_tr), size=n_tr, replace=len(x_tr) < n_tr)
        x_ctx = np.concatenate([x_tr[pick_tr], x_an[pick_an]])
        y_ctx = np.concatenate([y_tr[pick_tr], y_an[pick_an]])
        self.x_ctx = self._x_bins(x_ctx)  # (n, d)
        self.y_ctx = self.task.y_bin(torch.as_tensor(self.y_axis.forward(y_ctx)))  # (n,)

    def _x_bins(self, x: np.ndarray) -> torch.Tensor:
        u = np.stack([axis.forward(x[:, j]) for j, axis in enumerate(self.x_axes)], axis=1)
        return self.task.x_bin(torch.as_tensor(u))

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        P = self.task.config.n_probe
        bins = self._x_bins(x)  # (N, d)
        n_seq = -(-len(x) // P)
        pad = torch.cat([bins, bins[:1].expand(n_seq * P - len(x), -1)]) if n_seq * P > len(x) else bins
        probes = pad.reshape(n_seq, P, -1)
        tokens = self.task.encode(self.x_ctx.expand(n_seq, -1, -1), self.y_ctx.expand(n_seq, -1), probes)
        device = next(self.model.parameters()).device
        logits = self.model(tokens.to(device))[:, self.task.positions().to(device)].double().cpu()  # (S, P, C)
        p = torch.softmax(logits, dim=-1).reshape(n_seq * P, -1)[: len(x)]
        u = (p * self.task.y_centres()).sum(-1).numpy()  # the posterior mean, in [0, 1]
        return self.y_axis.inverse(u)
