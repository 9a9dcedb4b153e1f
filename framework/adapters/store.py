"""The answer store: every answer kept as it arrives, keyed by (query hash, adapter identity).

Format: JSON Lines, one record per answer, appended and fsynced before the next, so a run killed at
any moment loses at most the answer being written. A record::

    {"v": 1, "key": "<query hash>", "adapter": "<identity>", "ok": true, "prompt": "...", "text": "...",
     "error": null, "attempts": 1, "latency_s": 0.12, "finish_reason": "stop",
     "time": "2026-01-01T00:00:00.000Z"}

The last record for a (key, adapter) pair wins, so a failure later answered is answered. A torn last
line (killed mid-write) is cut off when the store is opened; a bad line anywhere else means the
file is not ours or was edited, and the store refuses it rather than guess. One process writes a
store at a time (an advisory lock, where the OS has one).
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from framework.errors import FrameworkError
from framework.seeds import digest

try:
    import fcntl
except ImportError:  # Windows: no advisory lock
    fcntl = None  # type: ignore[assignment]

FORMAT_VERSION = 1


class StoreError(FrameworkError, RuntimeError):
    """An answer store that is corrupt, not ours, or in use by another process."""


def query_key(prompt: str) -> str:
    """The query hash: 16 hex digits of SHA-256 over the prompt text, stable across processes and machines."""
    return digest(prompt, 16)


@dataclass(frozen=True)
class Answer:
    """One prompt's answer from one adapter; ``ok`` False means the call failed and ``error`` says why."""

    prompt: str
    adapter: str  # the adapter's identity
    text: str | None
    error: str | None = None
    attempts: int = 1
    latency_s: float = 0.0
    finish_reason: str | None = None
    time: str = ""  # ISO 8601 UTC, when it arrived
    cached: bool = field(default=False, compare=False)  # read from the store, not asked in this run

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None

    @property
    def key(self) -> str:
        return query_key(self.prompt)

    def record(self) -> dict[str, Any]:
        rec = asdict(self)
        del rec["cached"]
        return {"v": FORMAT_VERSION, "key": self.key, "adapter": rec.pop("adapter"), "ok": self.ok, **rec}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Answer":
        if rec.get("v") != FORMAT_VERSION:
            raise ValueError(f"format version {rec.get('v')!r}, expected {FORMAT_VERSION}")
        return cls(prompt=rec["prompt"], adapter=rec["adapter"], text=rec["text"], error=rec["error"],
                   attempts=int(rec["attempts"]), latency_s=float(rec["latency_s"]),
                   finish_reason=rec.get("finish_reason"), time=rec.get("time", ""), cached=True)


class AnswerStore:
    """Answers by (prompt, adapter identity), persisted to a JSONL file (``path=None``: in memory only)."""

    def __init__(self, path: str | Path | None = None, *, fsync: bool = True):
        self.path = None if path is None else Path(path)
        self.fsync = fsync
        self.torn = 0  # torn trailing lines cut off when opening (0 or 1)
        self._answers: dict[tuple[str, str], Answer] = {}
        self._file = None
        if self.path is not None:
            self._open()

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+b")
        if fcntl is not None:
            try:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self._file.close()
                raise StoreError(f"answer store {self.path} is in use by another process") from None
        self._file.seek(0)
        data = self._file.read()
        end = data.rfind(b"\n") + 1  # everything after the last newline is a torn write
        if end < len(data):
            self.torn = 1
            self._file.truncate(end)
            self._file.flush()
            os.fsync(self._file.fileno())
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                answer = Answer.from_record(json.loads(line))
            except (ValueError, KeyError, TypeError) as err:
                self._file.close()
                raise StoreError(f"answer store {self.path}, line {lineno}: not an answer record "
                                 f"({type(err).__name__}); fix or move the file") from None
            self._answers[(answer.key, answer.adapter)] = answer

    def get(self, prompt: str, adapter: str) -> Answer | None:
        answer = self._answers.get((query_key(prompt), adapter))
        if answer is not None and answer.prompt != prompt:  # a 64-bit hash collision: never seen, never trusted
            raise StoreError(f"answer store {self.path}: two prompts share the query hash {query_key(prompt)}")
        return answer

    def put(self, answer: Answer) -> None:
        """Keep ``answer``: appended to the file and, with ``fsync``, on disk before this returns."""
        if self._file is not None:
            # ASCII only: no raw U+2028 or the like for a str.splitlines() reader to split a record on
            line = json.dumps(answer.record(), ensure_ascii=True).encode() + b"\n"
            self._file.write(line)  # one write: a kill leaves a whole record or a torn tail
            self._file.flush()
            if self.fsync:
                os.fsync(self._file.fileno())
        self._answers[(answer.key, answer.adapter)] = answer

    def answers(self, adapter: str | None = None) -> Iterator[Answer]:
        return (a for a in self._answers.values() if adapter is None or a.adapter == adapter)

    def summary(self, adapter: str | None = None) -> dict[str, int]:
        """``{"answers": n, "ok": n, "failed": n}`` over the latest answer of each (prompt, adapter)."""
        answers = list(self.answers(adapter))
        ok = sum(a.ok for a in answers)
        return {"answers": len(answers), "ok": ok, "failed": len(answers) - ok}

    def __len__(self) -> int:
        return len(self._answers)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None

    def __enter__(self) -> "AnswerStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
