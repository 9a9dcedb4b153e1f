"""Text adapters: the shared way capabilities ask external models questions (text in, text out).

The causal scoring harness and the Einstein test both use this layer (SPEC §2): an adapter
(``callable``, ``hf``, ``openai``) registered by name with a config dataclass, a resumable answer
store keyed by (query hash, adapter identity), :func:`ask` to drive one over many prompts, and
parsers that turn answer text into yes/no or numbers (a parse failure counts as wrong).

Adapters whose library is optional (``hf`` needs transformers) import it only when built.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from framework.adapters.ask import ask, summarize
from framework.adapters.base import Adapter, AdapterConfig, AdapterError, EndpointUnreachable, Reply
from framework.adapters.callable import CallableAdapter, CallableConfig
from framework.adapters.hf import HFAdapter, HFConfig
from framework.adapters.openai_chat import OpenAIAdapter, OpenAIConfig
from framework.adapters.parsing import Parsed, matches, parse, parse_number, parse_probability, parse_yes_no
from framework.adapters.store import Answer, AnswerStore, StoreError, query_key
from framework.registry import config_from

ADAPTERS: dict[str, tuple[type[AdapterConfig], type[Adapter]]] = {
    "callable": (CallableConfig, CallableAdapter),
    "hf": (HFConfig, HFAdapter),
    "openai": (OpenAIConfig, OpenAIAdapter),
}


def build_adapter(config: AdapterConfig | Mapping[str, Any]) -> Adapter:
    """An adapter from its config: a config dataclass, or a mapping (dict, Hydra DictConfig) with ``name``."""
    config = config_from(ADAPTERS, config, "adapter")
    return ADAPTERS[config.name][1](config)


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterConfig",
    "AdapterError",
    "Answer",
    "AnswerStore",
    "CallableAdapter",
    "CallableConfig",
    "EndpointUnreachable",
    "HFAdapter",
    "HFConfig",
    "OpenAIAdapter",
    "OpenAIConfig",
    "Parsed",
    "Reply",
    "StoreError",
    "ask",
    "build_adapter",
    "matches",
    "parse",
    "parse_number",
    "parse_probability",
    "parse_yes_no",
    "query_key",
    "summarize",
]
