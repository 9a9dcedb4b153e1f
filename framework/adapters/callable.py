"""The ``callable`` adapter: any Python function ``str -> str``, given directly or as ``"module:function"``.

Its identity hashes the function's source code where Python can find it, so editing the function
invalidates its stored answers; ``tag`` is there for what the source does not show (data it reads).
"""
from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from framework.adapters.base import Adapter, AdapterConfig, Reply, one_line
from framework.errors import ConfigError, require
from framework.seeds import digest


@dataclass
class CallableConfig(AdapterConfig):
    name: str = "callable"
    function: str = ""  # "package.module:function" (a dotted attribute path after the colon is allowed)
    tag: str = ""  # bump it when the function's answers change in a way its source does not show

    def __post_init__(self) -> None:
        require(isinstance(self.function, str) and self.function.count(":") == 1
                and all(self.function.split(":")), "function",
                f"expected 'module:function', got {self.function!r}")


def resolve(path: str) -> Callable[[str], Any]:
    """The object a ``"module:attr.attr"`` path names; a ConfigError (field ``function``) says what is wrong."""
    module_name, _, attr_path = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError("function", f"cannot import module {module_name!r}: {one_line(err)}") from None
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise ConfigError("function", f"{module_name!r} has no attribute {attr_path!r}")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise ConfigError("function", f"{path!r} is a {type(obj).__name__}, not a callable")
    return obj


def _source_digest(fn: Callable[..., Any]) -> str | None:
    try:
        return digest(inspect.getsource(fn))
    except (OSError, TypeError):  # built-ins, C extensions, code typed into a REPL
        return None


class CallableAdapter(Adapter):
    """Calls ``fn(prompt)`` once per prompt, in order; an exception becomes that prompt's failed reply."""

    name = "callable"

    def __init__(self, config: CallableConfig | None = None, *, fn: Callable[[str], Any] | None = None,
                 tag: str = ""):
        if (config is None) == (fn is None):
            raise TypeError("give either a CallableConfig or fn=, not both")
        if config is not None:
            fn, path, tag = resolve(config.function), config.function, config.tag
        else:
            if not callable(fn):
                raise ConfigError("function", f"expected a callable, got {type(fn).__name__}")
            path = f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__name__)}"
            if "<" in path and not tag:  # <lambda>, <locals>: two different functions could share the name
                raise ConfigError("tag", f"{path} has no importable name; give tag= to identify its answers")
        self.fn, self.path, self.tag = fn, path, tag

    @property
    def label(self) -> str:
        return self.path

    @property
    def settings(self) -> dict[str, Any]:
        return {"function": self.path, "source": _source_digest(self.fn), "tag": self.tag}

    def stream(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        for i, prompt in enumerate(prompts):
            start = time.perf_counter()
            try:
                out = self.fn(prompt)
            except Exception as err:  # the function's bug is this prompt's failure; Ctrl-C still stops the run
                yield i, Reply(None, one_line(err), latency_s=time.perf_counter() - start)
                continue
            latency = time.perf_counter() - start
            if isinstance(out, str):
                yield i, Reply(out, latency_s=latency)
            else:
                yield i, Reply(None, f"TypeError: returned {type(out).__name__}, not str", latency_s=latency)
