"""The ``job`` adapter: a model trained here, from its job folder, asked in its own task's tokens.

A wind-tunnel model reads tokens, not text, so this adapter answers only the queries it can write in
its task's grammar and says why for every other one (the harness reports those as "not answerable";
none is dropped). It answers as text ("Yes", "0.1234"), so its answers go through the same answer
store, parsing and scoring as any language model's.

Mode A (``causal_mechanisms``): the model reads a binary SCM over one CLadder family (CPD entries in
hundredths, the coupling) and answers P(Y | do(X=x')) or P(Y_{x'} | X=x, Y=y). A generated query is
encodable when it is about that family (its nodes and edges), gives every CPD entry as a hundredth,
and is one of

* ``ate``: P(Y=y | do(X=t)) - P(Y=y | do(X=c)), two do-queries (number, or its sign for yes/no);
* ``collider_bias``: whether that effect is non-zero (|estimate| > ``effect_tol``);
* ``pn``: 1 - P(Y_c = y | X=t, Y=y); ``ps``: P(Y_t = y | X=c, Y != y) (rung 3, under the query's
  coupling, if the model was trained on it).

The CPDs are read back from the prompt's own numbers (``given_info``) and checked by rendering them
again: a prompt this code would misread is not answerable rather than misencoded. Nodes the prompt
leaves out are not ancestors of X or Y and cannot change the answer; they get 50%.
A mode-B (``causal_samples``) model reads samples, which a query set does not hold: score it with
``experiment=causal/tunnel``.
"""
from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framework.adapters.base import Adapter, AdapterConfig, Reply
from framework.causal import render
from framework.causal.graphs import DAG
from framework.causal.queryset import CausalQuery
from framework.errors import CheckpointError, ConfigError, require
from framework.tasks import causal_mechanisms as mech
from framework.tasks.causal_common import GRAPHS
from framework.training.checkpoint import load_trained

ENCODABLE = ("ate", "collider_bias", "pn", "ps")
_PERCENT = re.compile(r" is (\d+(?:\.\d+)?)%\.")


@dataclass
class JobConfig(AdapterConfig):
    name: str = "job"
    path: str = ""  # a trained job folder (windtunnel experiment=causal/mechanisms), or its checkpoint.pt
    batch_size: int = 512  # sequences per forward pass
    effect_tol: float = 0.01  # collider_bias: an estimated effect of at most this size counts as no effect

    def __post_init__(self) -> None:
        require(isinstance(self.path, str) and self.path != "", "path",
                "give the job folder of a trained model, e.g. adapter.path=runs/causal_mechanisms/<run>/"
                "causal_mechanisms_transformer")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        require(0 <= self.effect_tol < 1, "effect_tol", f"must be in [0, 1), got {self.effect_tol}")


def load_job(path: str) -> tuple[torch.nn.Module, Any, dict, Path]:
    """``load_trained`` with its errors placed under ``adapter.path``."""
    try:
        return load_trained(path)
    except ConfigError as err:
        raise ConfigError("adapter.path", err.message) from None
    except CheckpointError as err:
        raise ConfigError("adapter.path", str(err)) from None


@dataclass(frozen=True)
class Encoded:
    """One query in mode-A tokens: one sequence per question, and how its answer follows from theirs."""

    tokens: torch.Tensor  # (k, seq_len) long
    combine: Callable[[list[float]], float]  # P(Y = outcome state) at each question's first [ASK] -> the value
    text: Callable[[float], str]  # the value -> the answer text


class JobAdapter(Adapter):
    name = "job"

    def __init__(self, config: JobConfig, *, predict: Callable[[torch.Tensor], torch.Tensor] | None = None):
        """``predict`` (tokens -> (B, P, 2) probabilities) replaces the model, e.g. by the task's exact
        posterior in tests of the encoding."""
        self.config = config
        self.model, self.task, self.state, self.path = load_job(config.path)
        if self.task.name != "causal_mechanisms":
            hint = " (a mode-B model: score it with experiment=causal/tunnel)" if self.task.name == "causal_samples" else ""
            raise ConfigError("adapter.path", f"job {self.path.parent} holds a {self.task.name} model; the job adapter "
                                              f"asks queries in causal_mechanisms tokens only{hint}")
        self.model.eval()
        self._predict = predict
        with open(self.path, "rb") as f:
            self._digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]  # retrained weights: answers anew
        self._encoded: dict[str, Encoded] = {}

    @property
    def label(self) -> str:
        return self.path.parent.name

    @property
    def settings(self) -> dict[str, Any]:
        return {"checkpoint": self._digest, "effect_tol": float(self.config.effect_tol), "task": self.state["meta"]["task"],
                "predict": None if self._predict is None else getattr(self._predict, "__qualname__", "custom")}

    # ------------------------------------------------------------------ encoding

    def encode(self, query: CausalQuery) -> Encoded | str:
        """The query in this model's tokens, or why it cannot be written in them."""
        cfg = self.task.config
        if query.source != "family" or query.graph != cfg.graph:
            return f"the model reads SCMs over the {cfg.graph} family, not {query.source} {query.graph}"
        nodes, edges = GRAPHS[cfg.graph]
        if tuple(query.nodes) != nodes or set(map(tuple, query.edges)) != set(edges) or query.latent:
            return f"graph differs from the model's {cfg.graph} family"
        if query.query_type not in ENCODABLE:
            return f"{query.query_type} is not a do-query or a counterfactual given X and Y"
        coupling = query.coupling if query.rung == 3 else None
        allowed = ("independent", "monotone") if cfg.coupling == "mixed" else (cfg.coupling,)
        if coupling is not None and coupling not in allowed:
            return f"coupling {coupling}: the model was trained on {cfg.coupling} only"
        if query.treatment != "X" or query.outcome != "Y":
            return "treatment and outcome are not X and Y"
        p = self.read_cpds(query)
        if isinstance(p, str):
            return p
        meta = query.meta
        t, c, y = (int(meta[k]) for k in ("treated", "control", "outcome_state"))
        head = [mech.SCM, mech.MON if (coupling or allowed[0]) == "monotone" else mech.IND, *(h - 1 for h in p), mech.SEP]

        def seq(e_x: int | None, e_y: int | None, x_do: int) -> list[int]:
            see = [mech.NONE if e is None else mech.V0 + e for e in (e_x, e_y)]
            return head + [mech.SEE, *see, mech.DO, mech.V0 + x_do, mech.ASK] * cfg.Q

        kind, qtype = query.answer_kind, query.query_type
        if qtype in ("ate", "collider_bias"):
            questions, combine = [seq(None, None, t), seq(None, None, c)], lambda v: v[0] - v[1]
        elif qtype == "pn":
            questions, combine = [seq(t, y, c)], lambda v: 1.0 - v[0]
        else:  # ps
            questions, combine = [seq(c, 1 - y, t)], lambda v: v[0]
        if kind == "number":
            text = lambda v: f"{v:.6g}"  # noqa: E731
        elif qtype == "collider_bias":
            text = lambda v: "Yes" if abs(v) > self.config.effect_tol else "No"  # noqa: E731
        elif qtype == "ate":
            more = meta.get("polarity", "more") == "more"
            text = lambda v: "Yes" if (v > 0 if more else v < 0) else "No"  # noqa: E731
        else:
            text = lambda v: "Yes" if v > 0.5 else "No"  # noqa: E731
        outcome = y
        return Encoded(torch.tensor(questions), lambda probs: combine([pr[outcome] for pr in probs]), text)

    def read_cpds(self, query: CausalQuery) -> list[int] | str:
        """P(v = 1 | c) in hundredths, rows in the task's order, read from the prompt and re-rendered to check."""
        g = self.task.graph
        dag = DAG(query.nodes, query.edges, query.latent)
        text = query.given_info
        if query.coupling is not None:
            suffix = " " + render.COUPLING_TEXT.get(query.coupling, "")
            if not text.endswith(suffix):
                return "the prompt does not state the coupling as generated"
            text = text[: -len(suffix)]
        percents = [float(m) for m in _PERCENT.findall(text)]
        units = [round(v * (render.UNIT // 100)) for v in percents]
        labels = {v: render.BINARY_STATES for v in dag.nodes}
        names = {v: query.variables.get(v, v) for v in dag.nodes}
        order = dag.topological_order()
        for size in range(len(order), 0, -1):
            for shown in itertools.combinations(order, size):
                if sum(2 ** len(dag.parents(v)) for v in shown) != len(units):
                    continue
                table, at = {}, 0
                for v in order:
                    rows = 2 ** len(dag.parents(v))
                    if v in shown:
                        one = np.array(units[at: at + rows], dtype=np.int64)
                        at += rows
                    else:
                        one = np.full(rows, render.UNIT // 2, dtype=np.int64)
                    table[v] = np.stack([render.UNIT - one, one], 1)
                if render.given_info(dag, table, set(shown), names, labels) != text:
                    continue
                out = [0] * self.task.R
                for i, v in enumerate(g.nodes):
                    parents = dag.parents(v)
                    for c, row in enumerate(table[v]):
                        values = dict(zip(parents, np.unravel_index(c, [2] * len(parents))))
                        k = 0
                        for par in g.parents[i]:  # the task's C-order over its own parent order
                            k = k * 2 + int(values[g.nodes[par]])
                        hundredths, rest = divmod(int(row[1]), render.UNIT // 100)
                        if rest or not 1 <= hundredths <= 99:
                            return f"CPD entry {row[1] / 100:g}% of {v} is not a hundredth in 1..99%"
                        out[self.task.offsets[i] + k] = hundredths
                return out
        return "cannot read the CPDs back from the prompt"

    def bind(self, queries: Sequence[CausalQuery]) -> dict[str, str]:
        """Encode ``queries``; returns {query id: why not} for those the model cannot be asked."""
        refused = {}
        for q in queries:
            got = self.encode(q)
            if isinstance(got, str):
                refused[q.id] = got
            else:
                self._encoded[q.prompt] = got
        return refused

    # ------------------------------------------------------------------ answering

    def probabilities(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, 2) float64: the model's P(Y) at the first [ASK] of each sequence."""
        first = int(self.task.positions()[0])
        if self._predict is not None:
            return self._predict(tokens)[:, 0].double()
        with torch.inference_mode():
            return torch.softmax(self.model(tokens)[:, first].double(), -1)

    def stream(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        bs = self.config.batch_size
        for lo in range(0, len(prompts), bs):
            chunk = prompts[lo: lo + bs]
            missing = [j for j, p in enumerate(chunk) if p not in self._encoded]
            for j in missing:
                yield lo + j, Reply(None, "not a query bound to this adapter (bind() it first)")
            todo = [j for j in range(len(chunk)) if j not in set(missing)]
            if not todo:
                continue
            encoded = [self._encoded[chunk[j]] for j in todo]
            tokens = torch.cat([e.tokens for e in encoded])
            probs = self.probabilities(tokens).tolist()
            at = 0
            for j, e in zip(todo, encoded):
                k = e.tokens.shape[0]
                value = e.combine(probs[at: at + k])
                at += k
                yield lo + j, Reply(e.text(value))
