"""The model zoo: every architecture the wind tunnels compare, built by name.

``build_model(config, vocab_size, n_classes, max_len)`` returns a :class:`SequenceModel` mapping
(B, T) tokens to (B, T, n_classes) causal logits. ``match_params`` resizes a non-transformer config
to a transformer's parameter count, as the paper compares architectures at equal capacity.
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


def build_model(config: ModelConfig, vocab_size: int, n_classes: int, max_len: int) -> SequenceModel:
    if config.name not in MODELS:
        raise ConfigError("name", f"unknown model {config.name!r}; choose one of: {', '.join(MODELS)}")
    config_cls, model_cls = MODELS[config.name]
    if not isinstance(config, config_cls):
        raise ConfigError("name", f"model {config.name!r} needs a {config_cls.__name__}, "
                                  f"got a {type(config).__name__}")
    return model_cls(config, vocab_size, n_classes, max_len)


from framework.models.capacity import match_params  # noqa: E402  (it builds models through build_model)

__all__ = [
    "MODELS", "build_model", "count_params", "match_params", "ModelConfig", "SequenceModel",
    "TransformerConfig", "Transformer", "MambaConfig", "Mamba", "LSTMConfig", "LSTM",
    "MLPConfig", "MLP",
]
