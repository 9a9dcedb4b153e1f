"""The answer store: append-only JSONL, latest record wins, torn tails cut, corruption refused."""
from __future__ import annotations

import json

import pytest

from framework.adapters import Answer, AnswerStore, StoreError, query_key
from framework.errors import FrameworkError


def _answer(prompt, adapter="callable/x@1", text="ok", error=None):
    return Answer(prompt, adapter, text, error, attempts=1, latency_s=0.01, time="2026-01-01T00:00:00Z")


def test_query_key_is_stable_and_distinct():
    assert query_key("Is X a cause of Y?") == query_key("Is X a cause of Y?")
    assert query_key("a") != query_key("a ")  # the exact text is the query
    assert len(query_key("x")) == 16
    # A fixed value: the key must not change between processes, machines or releases.
    assert query_key("hello") == "5aa762ae383fbb72"


def test_answers_persist_and_latest_wins(tmp_path):
    path = tmp_path / "answers.jsonl"
    with AnswerStore(path) as store:
        store.put(_answer("q1"))
        store.put(_answer("q2", text=None, error="HTTP 500: boom"))
        store.put(_answer("q1", adapter="other@2", text="other"))
        store.put(_answer("q2", text="second try"))
    lines = path.read_text().splitlines()
    assert len(lines) == 4  # append-only: the failure stays in the history
    rec = json.loads(lines[1])
    assert rec["ok"] is False and rec["error"] == "HTTP 500: boom" and rec["key"] == query_key("q2")
    assert set(rec) == {"v", "key", "adapter", "ok", "prompt", "text", "error", "attempts", "latency_s",
                        "finish_reason", "time"}
    with AnswerStore(path) as store:
        assert len(store) == 3
        assert store.get("q1", "callable/x@1").text == "ok"
        assert store.get("q1", "other@2").text == "other"
        assert store.get("q2", "callable/x@1").text == "second try" and store.get("q2", "callable/x@1").cached
        assert store.get("q3", "callable/x@1") is None
        assert store.summary("callable/x@1") == {"answers": 2, "ok": 2, "failed": 0}
        assert store.torn == 0


def test_a_torn_last_line_is_cut_and_the_store_keeps_working(tmp_path):
    path = tmp_path / "answers.jsonl"
    with AnswerStore(path) as store:
        store.put(_answer("q1"))
        store.put(_answer("q2"))
    whole = path.read_bytes()
    path.write_bytes(whole + json.dumps(_answer("q3").record()).encode()[:37])  # killed mid-write
    with AnswerStore(path) as store:
        assert store.torn == 1 and len(store) == 2 and store.get("q3", "callable/x@1") is None
        store.put(_answer("q3"))
    assert path.read_bytes().startswith(whole)
    with AnswerStore(path) as store:
        assert store.torn == 0 and len(store) == 3


def test_a_corrupt_line_in_the_middle_is_refused(tmp_path):
    path = tmp_path / "answers.jsonl"
    good = json.dumps(_answer("q1").record())
    path.write_text(good + "\n{not json\n" + good + "\n")
    with pytest.raises(StoreError, match="line 2") as err:
        AnswerStore(path)
    assert isinstance(err.value, FrameworkError)
    path.write_text(json.dumps({"v": 99, "prompt": "x"}) + "\n")
    with pytest.raises(StoreError, match="line 1"):
        AnswerStore(path)


def test_one_writer_at_a_time(tmp_path):
    path = tmp_path / "answers.jsonl"
    with AnswerStore(path):
        with pytest.raises(StoreError, match="in use"):
            AnswerStore(path)
    AnswerStore(path).close()  # released on close


def test_in_memory_store_writes_nothing(tmp_path):
    store = AnswerStore(None)
    store.put(_answer("q1"))
    assert store.get("q1", "callable/x@1").text == "ok"
    assert list(tmp_path.iterdir()) == []


def test_unicode_and_newlines_survive(tmp_path):
    path = tmp_path / "a.jsonl"
    prompt = "Does Ü cause ψ?\nAnswer yes or no."
    with AnswerStore(path) as store:
        store.put(_answer(prompt, text="Ja —\nyes\u2028\r"))  # \u2028 ends a str line
    assert len(path.read_text().splitlines()) == 1 and path.read_bytes().isascii()
    with AnswerStore(path) as store:
        assert store.get(prompt, "callable/x@1").text == "Ja —\nyes\u2028\r"
