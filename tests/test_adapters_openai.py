"""The openai adapter against a real HTTP server on 127.0.0.1 (framework.adapters.fakeserver).

Every request goes to 127.0.0.1; every wait is bounded. Timing checks use lower bounds that the
client guarantees (it sleeps at least that long) with slack for a loaded machine.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest

from framework.adapters import (AdapterError, AnswerStore, EndpointUnreachable, OpenAIAdapter, OpenAIConfig,
                                ask, build_adapter)
from framework.adapters.fakeserver import FakeChatServer

pytest.importorskip("openai")


def adapter_for(server: FakeChatServer | str, **kw) -> OpenAIAdapter:
    base_url = server if isinstance(server, str) else server.base_url
    kw = {"model": "fake-model", "base_url": base_url, "retries": 0, "backoff_s": 0.01, "timeout_s": 10.0, **kw}
    return OpenAIAdapter(OpenAIConfig(**kw))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wire_format_and_settings_sent():
    with FakeChatServer(reply=lambda p: f"You said {p}. The answer is 0.25.") as server:
        adapter = adapter_for(server, system_prompt="Answer briefly.", temperature=0.0, max_tokens=20, seed=3)
        [reply] = adapter.answer(["What is P(Y=1)?"])
        assert reply.ok and reply.text == "You said What is P(Y=1)?. The answer is 0.25."
        assert reply.attempts == 1 and reply.finish_reason == "stop" and reply.latency_s > 0
        [req] = server.log
        assert req.body["model"] == "fake-model" and req.body["max_tokens"] == 20 and req.body["seed"] == 3
        assert req.body["temperature"] == 0.0
        assert req.body["messages"] == [{"role": "system", "content": "Answer briefly."},
                                        {"role": "user", "content": "What is P(Y=1)?"}]
        [cut] = adapter_for(server, max_tokens=2).answer(["one two three four"])
        assert cut.text == "You said" and cut.finish_reason == "length"


def test_identity_ignores_transport_and_never_holds_the_key(monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_TEST_KEY", "sk-secret-123")
    a = adapter_for("http://127.0.0.1:1/v1", api_key_env="WINDTUNNEL_TEST_KEY")
    b = adapter_for("http://127.0.0.1:2/v1", concurrency=9, timeout_s=1.0, retries=5, requests_per_second=2.0)
    assert a.identity == b.identity and a.identity.startswith("openai/fake-model@")
    assert adapter_for("http://127.0.0.1:1/v1", temperature=0).identity == a.identity  # YAML "0" is 0.0
    for change in ({"temperature": 0.7}, {"max_tokens": 9}, {"system_prompt": "Be terse."}, {"seed": 1},
                   {"model": "other"}, {"tag": "weights-v2"}):
        assert adapter_for("http://127.0.0.1:1/v1", **change).identity != a.identity, change
    assert "sk-secret" not in a.identity and "sk-secret" not in repr(a.settings)


def test_api_key_is_sent_from_the_environment(monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_TEST_KEY", "sk-secret-123")
    with FakeChatServer() as server:
        adapter_for(server, api_key_env="WINDTUNNEL_TEST_KEY").answer(["x"])
        adapter_for(server).answer(["y"])  # no key configured: a placeholder local servers accept
        keys = [{k.lower(): v for k, v in r.headers.items()}["authorization"] for r in server.log]
    assert keys == ["Bearer sk-secret-123", "Bearer EMPTY"]


def test_concurrency_is_used_and_bounded():
    with FakeChatServer(delay_s=0.25) as server:
        adapter = adapter_for(server, concurrency=4)
        start = time.monotonic()
        replies = adapter.answer([f"q{i}" for i in range(8)])
        elapsed = time.monotonic() - start
        assert all(r.ok for r in replies) and [r.text for r in replies] == [f"echo: q{i}" for i in range(8)]
        assert server.max_in_flight == 4  # the pool was used, and never exceeded
        assert elapsed < 8 * 0.25  # faster than one at a time
    with FakeChatServer(delay_s=0.05) as server:
        adapter_for(server, concurrency=1).answer([f"q{i}" for i in range(4)])
        assert server.max_in_flight == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_are_retried_with_backoff(status):
    def fault(prompt, n):
        return status if n <= 2 else None  # fail twice, then answer

    with FakeChatServer(fault=fault) as server:
        adapter = adapter_for(server, retries=3, backoff_s=0.1, backoff_max_s=1.0)
        [reply] = adapter.answer(["flaky"])
        assert reply.ok and reply.text == "echo: flaky" and reply.attempts == 3
        times = [r.time for r in server.log]
        assert [r.status for r in server.log] == [status, status, 200]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert gaps[0] >= 0.1 - 0.01 and gaps[1] >= 0.2 - 0.01  # exponential: 0.1 s, then 0.2 s


def test_retries_run_out_and_the_failure_is_recorded(tmp_path):
    with FakeChatServer(fault=lambda p, n: 500 if p == "broken" else None) as server:
        adapter = adapter_for(server, retries=2, backoff_s=0.01)
        answers = ask(adapter, ["fine", "broken", "fine too"], tmp_path / "a.jsonl", progress=False)
        assert [a.ok for a in answers] == [True, False, True]
        assert answers[1].attempts == 3 and answers[1].error.startswith("HTTP 500")
        assert "after 3 attempts" in answers[1].error
        assert server.prompts().count("broken") == 3


def test_client_errors_fail_one_prompt_without_retrying():
    with FakeChatServer(fault=lambda p, n: 400 if p == "too long" else None) as server:
        replies = adapter_for(server, retries=3).answer(["too long", "ok"])
        assert not replies[0].ok and replies[0].attempts == 1 and "HTTP 400: injected HTTP 400" in replies[0].error
        assert replies[1].ok
        assert server.prompts().count("too long") == 1


def test_retry_after_is_honoured():
    with FakeChatServer(fault=lambda p, n: (429, {"Retry-After": "0.4"}) if n == 1 else None) as server:
        [reply] = adapter_for(server, retries=1, backoff_s=0.01, backoff_max_s=2.0).answer(["x"])
        assert reply.ok and reply.attempts == 2
        first, second = server.log
        assert second.time - first.time >= 0.4 - 0.01  # not the 0.01 s backoff


def test_an_unreachable_endpoint_is_one_clear_error(tmp_path):
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    adapter = adapter_for(base_url, retries=2, backoff_s=0.01, concurrency=2)
    start = time.monotonic()
    with pytest.raises(EndpointUnreachable) as err:
        ask(adapter, [f"q{i}" for i in range(50)], tmp_path / "a.jsonl", progress=False)
    message = str(err.value)
    assert "\n" not in message and base_url in message and "after 3 attempts" in message
    assert "connection" in message.lower() and "refused" in message.lower()
    assert time.monotonic() - start < 5.0  # it stops, instead of trying all 50 prompts
    with AnswerStore(tmp_path / "a.jsonl") as store:
        failed = list(store.answers())
    assert failed and all(not a.ok and a.attempts == 3 for a in failed)  # recorded as failed, not skipped


def test_not_found_stops_the_run():
    with FakeChatServer(fault=lambda p, n: 404) as server:
        with pytest.raises(AdapterError, match="HTTP 404: not found"):
            adapter_for(server, retries=3, concurrency=1).answer([f"q{i}" for i in range(10)])
        assert len(server.log) <= 2  # no retries; at most the next prompt, already on its way


def test_rate_limit_is_respected():
    rate, n = 10.0, 11
    with FakeChatServer() as server:
        adapter = adapter_for(server, concurrency=8, requests_per_second=rate)
        start = time.monotonic()
        assert all(r.ok for r in adapter.answer([f"q{i}" for i in range(n)]))
        elapsed = time.monotonic() - start
        times = sorted(r.time for r in server.log)
    # The client sleeps (n - 1) / rate = 1.0 s at least; 8 threads without a limit take ~0.05 s.
    assert elapsed >= (n - 1) / rate - 0.01
    # At the server: arrival jitter can only shift a start later, so allow 0.25 s off the span.
    assert times[-1] - times[0] >= (n - 1) / rate - 0.25
    # No second held more than rate + 1 starts (a loaded machine can bunch two, hence +1).
    assert max(sum(t <= s < t + 1.0 for s in times) for t in times) <= rate + 1


def test_per_request_timeout():
    release = threading.Event()

    def fault(prompt, n):
        if prompt == "slow":
            release.wait(5.0)  # bounded: the test releases it at the end
        return None

    with FakeChatServer(fault=fault) as server:
        adapter = adapter_for(server, timeout_s=0.3, retries=1, backoff_s=0.01, concurrency=2)
        start = time.monotonic()
        slow, fast = adapter.answer(["slow", "fast"])
        elapsed = time.monotonic() - start
        release.set()
        assert fast.ok
        assert not slow.ok and slow.attempts == 2 and "timed out after 0.3 s" in slow.error
        assert not slow.fatal  # one slow prompt does not stop the run
        assert 0.6 - 0.05 <= elapsed < 4.0


def test_build_from_a_mapping_and_the_models_route():
    with FakeChatServer() as server:
        adapter = build_adapter({"name": "openai", "model": "fake-model", "base_url": server.base_url})
        assert adapter.answer(["hi"])[0].text == "echo: hi"
        assert adapter._client.models.list().data[0].id == "fake-model"
        adapter.close()
