"""The adapter interface: text in, text out, under a stable identity.

An adapter wraps something that answers prompts (a Python function, a local Hugging Face model, an
OpenAI-compatible server). Its ``identity`` names it together with every setting that can change
its answers (model, temperature, system prompt, max tokens, ...), and nothing that cannot (URLs,
concurrency, timeouts, API keys), so the answer store can key answers by (prompt, identity) and a
rerun with the same identity never asks again.
"""
from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from framework.errors import FrameworkError
from framework.seeds import digest


class AdapterError(FrameworkError, RuntimeError):
    """An adapter that cannot answer at all (bad endpoint, missing model, missing library)."""


class EndpointUnreachable(AdapterError):
    """An endpoint that refused or dropped every attempt at a request, retries included."""


@dataclass
class AdapterConfig:
    """Fields every adapter config carries. Subclasses add their own and validate in ``__post_init__``."""

    name: str = "?"


@dataclass(frozen=True)
class Reply:
    """What an adapter made of one prompt: the text, or why there is none."""

    text: str | None
    error: str | None = None  # one line; None when text is the answer
    attempts: int = 1  # requests made, retries included
    latency_s: float = 0.0  # wall time of the successful (or last) attempt
    finish_reason: str | None = None  # "stop", "length", ... when the backend says
    fatal: bool = False  # the backend cannot answer any prompt (unreachable, no such model): stop asking

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


def one_line(err: BaseException | str) -> str:
    """An exception as ``Type: first line`` (a traceback never goes into the store)."""
    if isinstance(err, str):
        text = err
    else:
        first = (str(err).strip().splitlines() or [""])[0]
        text = f"{type(err).__name__}: {first}" if first else type(err).__name__
    return " ".join(text.split())[:500]


class Adapter(abc.ABC):
    """Answers prompts. Subclasses set ``name``, ``label`` and ``settings`` and implement :meth:`stream`."""

    name: str = "?"

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """A short human-readable name for the model (model name, folder name, function path)."""

    @property
    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able: every setting that can change an answer, and nothing secret."""

    @property
    def identity(self) -> str:
        """``name/label@digest(settings)``: equal for two adapters exactly when their answers may be reused."""
        return f"{self.name}/{self.label}@{digest(self.settings)}"

    @abc.abstractmethod
    def stream(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        """``(index into prompts, reply)`` for every prompt, in the order the replies arrive.

        A failed prompt yields a failed :class:`Reply`, never nothing. After yielding a reply with
        ``fatal=True`` the stream raises :class:`AdapterError` instead of asking the rest.
        """

    def answer(self, prompts: Sequence[str]) -> list[Reply]:
        """Replies in prompt order (no store, no progress bar: :func:`framework.adapters.ask` has both)."""
        replies: list[Reply | None] = [None] * len(prompts)
        for i, reply in self.stream(prompts):
            replies[i] = reply
        return replies  # type: ignore[return-value]  # stream yields every index

    def close(self) -> None:
        """Release clients, threads or models; the default holds none."""

    def __enter__(self) -> "Adapter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identity}>"
