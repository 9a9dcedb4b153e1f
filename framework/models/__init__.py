"""The model zoo: every architecture the wind tunnels compare, built by name.

``build_model(config, vocab_size, n_classes, max_len)`` returns a :class:`SequenceModel` mapping
(B, T) tokens to (B, T, n_classes) causal logits. ``match_params`` resizes a config to a reference
model's parameter count, as the paper compares architectures at equal capacity. A new architecture
is a config dataclass and a SequenceModel subclass, added with :func:`register_model`; what reports
and messages need to know about it (its size field, article and colour) sits on those two classes.
"""
from __future__ import annotations

from framework.errors import ConfigError
from framework.models.base import ModelConfig, SequenceModel, count_params
from framework.models.lstm import LSTM, LSTMConfig
from framework.models.mamba import Mamba, MambaConfig
from framework.models.mlp import MLP, MLPConfig
from framework.models.transformer import Transformer, TransformerConfig

MODELS: dict[str, tuple[type[ModelConfig], type[SequenceModel]]] = {
    "transformer": (TransformerConfig, Transformer),
    "mamba": (MambaConfig, Mamba),
    "lstm": (LSTMConfig, LSTM),
    "mlp": (MLPConfig, MLP),
}


def register_model(name: str, config_cls: type[ModelConfig], model_cls: type[SequenceModel]) -> None:
    """Make ``name`` an architecture: ``models.<key>: {name: <name>, ...}`` then builds it."""
    MODELS[name] = (config_cls, model_cls)


def build_model(config: ModelConfig, vocab_size: int, n_classes: int, max_len: int) -> SequenceModel:
    if config.name not in MODELS:
        raise ConfigError("name", f"unknown model {config.name!r}; choose one of: {', '.join(MODELS)}")
    config_cls, model_cls = MODELS[config.name]
    if not isinstance(config, config_cls):
        raise ConfigError("name", f"model {config.name!r} needs a {config_cls.__name__}, "
                                  f"got a {type(config).__name__}")
    return model_cls(config, vocab_size, n_classes, max_len)


def article(name: str) -> str:
    """How a message names an architecture: "an LSTM"."""
    model_cls = MODELS[name][1] if name in MODELS else None
    return (model_cls.article if model_cls else "") or f"a {name!r} model"


def color(name: str) -> str | None:
    """An architecture's colour in plots (None: the plot's next colour)."""
    return MODELS[name][1].color if name in MODELS else None


from framework.models.capacity import match_params  # noqa: E402  (it builds models through build_model)

__all__ = [
    "MODELS", "article", "build_model", "color", "count_params", "match_params", "register_model", "ModelConfig",
    "SequenceModel", "TransformerConfig", "Transformer", "MambaConfig", "Mamba", "LSTMConfig", "LSTM",
    "MLPConfig", "MLP",
]
