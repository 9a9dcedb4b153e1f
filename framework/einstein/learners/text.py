"""An external-model learner: the fit data as a text prompt, the model's numbers as predictions.

Fit keeps the data it may see (training points, the anomalies given, the displayed variable names,
which are random per instance); predict renders one prompt per ``probes_per_prompt`` probe inputs
(only their inputs: a probe's answer never reaches the model), puts them to any
:mod:`framework.adapters` adapter (``callable``, ``hf``, ``openai``) through :func:`~framework.adapters.ask`
and the answer store, and reads each ``Q<k>: <number>`` line with
:func:`~framework.adapters.parse_number`. A probe whose answer cannot be read is NaN (t = 0: it
preferred no theory), and counted in ``stats``. With a store (``store``: a JSONL path; the einstein
runner gives every (world, learner) one in its run folder) a rerun asks nothing it has asked before.

``copy_nearest`` is a stand-in model for runs without one: a function that reads the prompt back and
answers each query with the output of the nearest data point (in log-standardised inputs). It is
not a language model; it checks the rendering, the parsing and the scores end to end.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np

from framework.errors import ConfigError, require
from framework.einstein.learners.base import FitData, Learner, LearnerConfig

_QLINE = re.compile(r"^\W*Q\s*(\d+)\W*?[:=)\].-]\s*(.*)$", re.IGNORECASE)


@dataclass
class TextConfig(LearnerConfig):
    name: str = "text"
    # The adapter, as its config: {name: callable, function: "module:fn"} | {name: hf, ...} | {name: openai, ...}
    adapter: Dict[str, Any] = field(default_factory=lambda: {"name": "callable",
                                                             "function": "framework.einstein.learners.text:copy_nearest"})
    store: Optional[str] = None  # JSONL answer store; None: answers are not kept
    probes_per_prompt: int = 8
    digits: int = 6  # significant digits of every number in the prompt
    max_points: int = 96  # data points shown at most (training points subsampled; anomalies always shown)
    progress: bool = False

    def __post_init__(self):
        from framework.adapters import ADAPTERS
        from framework.registry import config_from

        require(self.probes_per_prompt >= 1, "probes_per_prompt", f"must be >= 1, got {self.probes_per_prompt}")
        require(1 <= self.digits <= 17, "digits", f"must be in 1..17, got {self.digits}")
        require(self.max_points >= 1, "max_points", f"must be >= 1, got {self.max_points}")
        if not isinstance(self.adapter, dict) and hasattr(self.adapter, "items"):
            self.adapter = dict(self.adapter)
        require(isinstance(self.adapter, dict) and "name" in self.adapter, "adapter",
                f"must be an adapter config with a name (callable, hf, openai), got {self.adapter!r}")
        try:
            config_from(ADAPTERS, self.adapter, "adapter")
        except ConfigError as err:
            raise err.under("adapter") from None


def _fmt(v: float, digits: int) -> str:
    return f"{float(v):.{digits}g}"


def render(variables, output, x, y, queries, digits: int = 6) -> str:
    """The prompt: the data (x, y) and the query inputs, numbered Q1.. (their outputs are not in it)."""
    names = ", ".join(variables)
    lines = [f"A quantity {output} depends on {names}. Here are noisy measurements ({len(y)} points):"]
    for xi, yi in zip(x, y):
        lines.append(", ".join(f"{n}={_fmt(v, digits)}" for n, v in zip(variables, xi)) + f" -> {output}={_fmt(yi, digits)}")
    lines += ["", f"Find the law that explains all of the measurements, then predict {output} at each of these "
              f"inputs. Reply with one line per query, in the form 'Q<k>: <number>', and nothing else."]
    for k, q in enumerate(queries, 1):
        lines.append(f"Q{k}: " + ", ".join(f"{n}={_fmt(v, digits)}" for n, v in zip(variables, q)))
    return "\n".join(lines)


def read_answers(text: str | None, n: int) -> list[float]:
    """n numbers from ``Q<k>: <number>`` lines (a lone number when n == 1); NaN where unreadable."""
    from framework.adapters import parse_number

    out = [math.nan] * n
    if not text:
        return out
    for line in text.splitlines():
        m = _QLINE.match(line.strip())
        if m and 1 <= int(m.group(1)) <= n and math.isnan(out[int(m.group(1)) - 1]):
            parsed = parse_number(m.group(2))
            if parsed.ok:
                out[int(m.group(1)) - 1] = float(parsed.value)
    if n == 1 and math.isnan(out[0]):
        parsed = parse_number(text)
        out[0] = float(parsed.value) if parsed.ok else math.nan
    return out


class TextLearner(Learner):
    name = "text"
    sees = ("train", "anomalies", "variables")

    def fit(self, data: FitData, rng: np.random.Generator) -> None:
        c = self.config
        x_tr, y_tr = np.asarray(data.x_train, float), np.asarray(data.y_train, float)
        x_an = np.zeros((0, x_tr.shape[1])) if data.x_anomaly is None else np.asarray(data.x_anomaly, float)
        y_an = np.zeros(0) if data.y_anomaly is None else np.asarray(data.y_anomaly, float)
        keep = max(c.max_points - len(x_an), 0)
        if len(x_tr) > keep:
            pick = np.sort(rng.choice(len(x_tr), size=keep, replace=False))
            x_tr, y_tr = x_tr[pick], y_tr[pick]
        self.x, self.y = np.concatenate([x_tr, x_an]), np.concatenate([y_tr, y_an])
        d = self.x.shape[1]
        self.variables = tuple(data.variables) if data.variables else tuple(f"x{j + 1}" for j in range(d))
        self.output = data.output or "y"
        self.stats: dict[str, int] = {}

    def prompts(self, x: np.ndarray) -> list[tuple[str, int, int]]:
        k = self.config.probes_per_prompt
        return [(render(self.variables, self.output, self.x, self.y, x[s:s + k], self.config.digits), s, len(x[s:s + k]))
                for s in range(0, len(x), k)]

    def predict(self, x: np.ndarray) -> np.ndarray:
        from framework.adapters import ask, build_adapter

        x = np.asarray(x, dtype=float)
        batches = self.prompts(x)
        with build_adapter(self.config.adapter) as adapter:
            answers = ask(adapter, [p for p, _, _ in batches], self.config.store, progress=self.config.progress,
                          desc=f"text {adapter.label}")
        out = np.full(len(x), np.nan)
        for (_, start, n), answer in zip(batches, answers):
            out[start:start + n] = read_answers(answer.text if answer.ok else None, n)
        self.stats = {"prompts": len(batches), "failed_prompts": sum(not a.ok for a in answers),
                      "cached": sum(a.cached for a in answers), "unparsed": int(np.isnan(out).sum())}
        return out


_DATA = re.compile(r"^(.*) -> (\S+)=(\S+)$")
_PAIR = re.compile(r"([^\s,=]+)=([^\s,]+)")


def copy_nearest(prompt: str) -> str:
    """A stand-in model (not a language model): each query gets the output of its nearest data point."""
    xs, ys, queries = [], [], []
    for line in prompt.splitlines():
        m = _DATA.match(line)
        if m:
            xs.append([float(v) for _, v in _PAIR.findall(m.group(1))])
            ys.append(float(m.group(3)))
        elif line.startswith("Q") and ":" in line and "=" in line:
            queries.append([float(v) for _, v in _PAIR.findall(line.split(":", 1)[1])])
    x, q = np.asarray(xs, float), np.asarray(queries, float)
    pos = np.all(x > 0, axis=0) & np.all(q > 0, axis=0)
    fx, fq = x.copy(), q.copy()
    fx[:, pos], fq[:, pos] = np.log(x[:, pos]), np.log(q[:, pos])
    mu, sd = fx.mean(0), fx.std(0)
    sd[sd == 0] = 1
    dist = (((fq[:, None, :] - mu) / sd - (fx[None, :, :] - mu) / sd) ** 2).sum(-1)
    return "\n".join(f"Q{k}: {ys[int(i)]:.6g}" for k, i in enumerate(dist.argmin(1), 1))
