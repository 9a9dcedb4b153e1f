"""``ask``: the one loop that puts prompts to an adapter through the answer store.

What the store already holds for this adapter's identity is not asked again (failed answers are,
unless ``retry_failed=False``); each new answer is stored the moment it arrives, so a run that
dies or is killed resumes where it stopped. The causal scoring harness and the Einstein test both
ask their questions through here.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from tqdm.auto import tqdm

from framework.adapters.base import Adapter
from framework.adapters.store import Answer, AnswerStore

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ask(adapter: Adapter, prompts: Sequence[str], store: AnswerStore | str | Path | None = None, *,
        progress: bool = True, retry_failed: bool = True, desc: str | None = None) -> list[Answer]:
    """One :class:`Answer` per prompt, in prompt order (a repeated prompt is asked once).

    ``store``: an open :class:`AnswerStore`, a path to open one at (closed again on return), or None
    (nothing kept). Failed calls come back as answers with ``ok`` False, and are stored as such; the
    progress bar and a log line report them. An :class:`~framework.adapters.base.AdapterError` from
    the adapter (endpoint unreachable) propagates after everything that arrived has been stored.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a sequence of strings, not one string")
    own = not isinstance(store, AnswerStore)
    if own:
        store = AnswerStore(store)
    identity = adapter.identity
    try:
        known: dict[str, Answer] = {}
        todo: list[str] = []
        for prompt in dict.fromkeys(prompts):  # unique, in first-seen order
            if not isinstance(prompt, str):
                raise TypeError(f"prompts must be strings, got {type(prompt).__name__}")
            got = store.get(prompt, identity)
            if got is not None and (got.ok or not retry_failed):
                known[prompt] = got
            else:
                todo.append(prompt)
        failed = sum(not a.ok for a in known.values())
        with tqdm(total=len(known) + len(todo), initial=len(known), disable=not progress,
                  desc=desc or identity, unit="q", dynamic_ncols=True) as bar:
            if failed:
                bar.set_postfix(failed=failed)
            for i, reply in adapter.stream(todo):
                answer = Answer(todo[i], identity, reply.text, reply.error, reply.attempts, reply.latency_s,
                                reply.finish_reason, _now())
                store.put(answer)
                known[answer.prompt] = answer
                if not answer.ok:
                    failed += 1
                    bar.set_postfix(failed=failed)
                bar.update(1)
        if failed:
            log.warning("%s: %d of %d prompts failed (stored as failed%s)", identity, failed, len(known),
                        "; the next run asks them again" if retry_failed else "")
        return [known[p] for p in prompts]
    finally:
        if own:
            store.close()


def summarize(answers: Sequence[Answer]) -> dict[str, int]:
    """Counts for a report: ``{"n", "ok", "failed", "cached", "asked"}``."""
    ok = sum(a.ok for a in answers)
    cached = sum(a.cached for a in answers)
    return {"n": len(answers), "ok": ok, "failed": len(answers) - ok, "cached": cached, "asked": len(answers) - cached}
