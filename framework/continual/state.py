"""A strategy's whole state as tensors and plain containers, for ``torch.save`` / ``load_torch``.

Avalanche's ``save_checkpoint`` pickles the whole strategy with dill and fails with torch 2.14, and
a pickle of objects cannot be loaded with ``weights_only=True`` (which refuses to run code). So a
continual checkpoint is built here instead, at an experience boundary (after ``strategy.train``
returned) or between two steps of an experience (framework.continual.steps replays what the data
loaders hold, which is not here): the model and optimizer ``state_dict``s, the clock, the global RNGs (torch, python,
numpy), and every plugin's attributes, encoded recursively:

* tensors, numbers, strings, None: as they are; dicts (``defaultdict(dict)`` too), lists, tuples
  and sets: tagged containers; Avalanche's ``ParamData`` (EWC / SI / MAS importances and saved
  parameters): name, shape and tensor;
* a model copy a plugin keeps (LwF's teacher, GDumb's initial model): its ``state_dict``, loaded
  back into a copy of the strategy's model; a ``torch.Generator`` (plasticity plugins): its state;
* an Avalanche dataset (replay, GDumb and A-GEM buffers): its items as tensors (buffers are small;
  the stream's own experiences are never encoded, Cumulative's union is rebuilt from the stream);
* any other object of Avalanche's or the framework's (storage policies and their per-experience
  buffers): its class by name (only from those packages) and its attributes.

Attributes that are views of the strategy rather than state (the unit plugins' hooks and unit
groups, data loaders and iterators, which a plugin makes again at the next experience) are left
out: see ``SKIP``. An attribute of a type not listed here raises, so a plugin with state this
module does not know fails loudly in the tests rather than resuming wrongly.
"""
from __future__ import annotations

import copy
import importlib
import random
from collections import defaultdict
from typing import Any

import numpy as np
import torch
from avalanche.benchmarks.utils import DataAttribute, make_avalanche_dataset
from avalanche.benchmarks.utils.data import AvalancheDataset
from avalanche.training.utils import ParamData
from torch import nn

# attributes that are rebuilt, not restored (per plugin attribute name)
SKIP = {"_model", "groups", "stats", "buffer_dataloader", "buffer_dliter", "stream", "supports_distributed", "rng_tape"}
ALLOWED_PACKAGES = ("avalanche.", "framework.")


def _encode(value: Any, where: str) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, ParamData):
        return {"__kind__": "paramdata", "name": value.name, "shape": list(value.shape), "data": value.data.cpu().clone()}
    if isinstance(value, torch.device):
        return {"__kind__": "device", "name": str(value)}
    if isinstance(value, torch.Generator):
        return {"__kind__": "generator", "state": value.get_state()}
    if isinstance(value, nn.Module):
        return {"__kind__": "module", "state": {k: v.detach().cpu().clone() for k, v in value.state_dict().items()},
                "training": value.training}
    if isinstance(value, AvalancheDataset):
        rows = [value[i] for i in range(len(value))]
        if not rows:
            return {"__kind__": "dataset", "n": 0}
        return {"__kind__": "dataset", "n": len(rows), "tokens": torch.stack([r[0] for r in rows]),
                "target": torch.stack([r[1] for r in rows]), "labels": [int(r[2]) for r in rows]}
    if isinstance(value, dict):
        kind = "defaultdict" if isinstance(value, defaultdict) else "dict"
        return {"__kind__": kind, "items": [[_encode(k, where), _encode(v, f"{where}[{k!r}]")] for k, v in value.items()]}
    if isinstance(value, (list, tuple, set)):
        kind = type(value).__name__ if type(value) in (list, tuple, set) else "list"
        items = sorted(value) if isinstance(value, set) else value
        return {"__kind__": kind, "items": [_encode(v, f"{where}[{i}]") for i, v in enumerate(items)]}
    cls = type(value)
    if cls.__module__.startswith(ALLOWED_PACKAGES) and hasattr(value, "__dict__"):
        return {"__kind__": "object", "class": f"{cls.__module__}:{cls.__qualname__}",
                "attrs": {k: _encode(v, f"{where}.{k}") for k, v in vars(value).items() if k not in SKIP}}
    raise TypeError(f"cannot checkpoint {where}: a {cls.__module__}.{cls.__qualname__} (add it to framework.continual.state)")


def _decode(value: Any, model: nn.Module) -> Any:
    if not isinstance(value, dict) or "__kind__" not in value:
        return value
    kind = value["__kind__"]
    if kind == "paramdata":
        return ParamData(value["name"], tuple(value["shape"]), init_tensor=value["data"].clone())
    if kind == "device":
        return torch.device(value["name"])
    if kind == "generator":
        generator = torch.Generator()
        generator.set_state(value["state"])
        return generator
    if kind == "module":
        module = copy.deepcopy(model)
        module.load_state_dict(value["state"])
        module.train(value["training"])
        if not value["training"]:
            for p in module.parameters():
                p.requires_grad_(False)
        return module
    if kind == "dataset":
        if value["n"] == 0:
            return make_avalanche_dataset(torch.utils.data.TensorDataset(torch.zeros(0)), data_attributes=[])
        labels = DataAttribute(value["labels"], "targets_task_labels", use_in_getitem=True)
        return make_avalanche_dataset(torch.utils.data.TensorDataset(value["tokens"], value["target"]),
                                      data_attributes=[labels])
    if kind in ("dict", "defaultdict"):
        out = defaultdict(dict) if kind == "defaultdict" else {}
        for k, v in value["items"]:
            out[_decode(k, model)] = _decode(v, model)
        return out
    if kind in ("list", "tuple", "set"):
        items = [_decode(v, model) for v in value["items"]]
        return {"list": list, "tuple": tuple, "set": set}[kind](items)
    if kind == "object":
        module_name, qualname = value["class"].split(":")
        if not module_name.startswith(ALLOWED_PACKAGES):
            raise TypeError(f"refusing to rebuild a {value['class']} from a checkpoint")
        cls = importlib.import_module(module_name)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        obj = cls.__new__(cls)
        for k, v in value["attrs"].items():
            setattr(obj, k, _decode(v, model))
        return obj
    raise ValueError(f"unknown encoded kind {kind!r}")


def rng_from(raw: tuple) -> dict:
    """(torch.get_rng_state(), random.getstate(), np.random.get_state()) as tensors and plain containers."""
    torch_state, python_state, (kind, keys, pos, has_gauss, cached) = raw
    return {"torch": torch_state.clone(), "python": _encode(python_state, "python_rng"),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]}


def rng_to(state: dict) -> tuple:
    """The inverse of :func:`rng_from`."""
    py = _decode(state["python"], nn.Module())
    kind, keys, pos, has_gauss, cached = state["numpy"]
    return state["torch"], (py[0], tuple(py[1]), py[2]), (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


def rng_state() -> dict:
    return rng_from((torch.get_rng_state(), random.getstate(), np.random.get_state()))


def set_rng_state(state: dict) -> None:
    torch_state, python_state, numpy_state = rng_to(state)
    torch.set_rng_state(torch_state)
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def _plugins(strategy) -> list:
    """The plugins whose state is the strategy's (the evaluator, loggers and progress bars are not)."""
    from avalanche.training.plugins import EvaluationPlugin

    return [p for p in strategy.plugins if not isinstance(p, EvaluationPlugin) and not getattr(p, "stateless", False)]


def strategy_state(strategy) -> dict:
    """Everything that decides what ``strategy`` does next, at an experience boundary (or between two
    steps of an experience, with framework.continual.steps for what its loaders hold)."""
    plugins = _plugins(strategy)
    state = {
        "model": {k: v.detach().cpu().clone() for k, v in strategy.model.state_dict().items()},
        "optimizer": strategy.optimizer.state_dict(),
        "plugins": [{"class": type(p).__qualname__,
                     "attrs": {k: _encode(v, f"{type(p).__name__}.{k}") for k, v in vars(p).items() if k not in SKIP}}
                    for p in plugins],
        "rng": rng_state(),
    }
    if getattr(strategy, "dataset", None) is not None:  # Cumulative: the union so far, by experience count
        state["cumulative_experiences"] = int(strategy.clock.train_exp_counter)
    return state


def load_strategy_state(strategy, state: dict, stream=None, within_experience: bool = False) -> None:
    """Put ``state`` (from :func:`strategy_state`) into a freshly built ``strategy`` of the same config,
    or (``within_experience``) into the strategy training on the experience the state was taken in,
    whose datasets and loaders Avalanche has made already (framework.continual.steps)."""
    strategy.model.load_state_dict(state["model"])
    # Avalanche resets the optimizer the first time it sees it; do that now, so the loaded state stays
    strategy.make_optimizer(reset_optimizer_state=True)
    strategy.optimizer.load_state_dict(state["optimizer"])
    plugins = _plugins(strategy)
    if [type(p).__qualname__ for p in plugins] != [p["class"] for p in state["plugins"]]:
        raise ValueError("the checkpoint's plugins are not this strategy's: "
                         f"{[p['class'] for p in state['plugins']]} vs {[type(p).__qualname__ for p in plugins]}")
    for plugin, saved in zip(plugins, state["plugins"]):
        for k, v in saved["attrs"].items():
            setattr(plugin, k, _decode(v, strategy.model))
        if hasattr(plugin, "on_restore"):
            plugin.on_restore(strategy)
    n = None if within_experience else state.get("cumulative_experiences")
    if n:
        from avalanche.benchmarks.utils import concat_datasets

        strategy.dataset = None
        for j in range(n):
            d = stream.train_stream[j].dataset
            strategy.dataset = d if strategy.dataset is None else concat_datasets([strategy.dataset, d])
    set_rng_state(state["rng"])
