"""The adapter interface, registry and configs, the callable adapter, ``ask``, and the pacing helpers."""
from __future__ import annotations

import random

import pytest

from framework.adapters import (ADAPTERS, AnswerStore, CallableAdapter, CallableConfig, HFConfig, OpenAIConfig,
                                ask, build_adapter, summarize)
from framework.adapters.limits import Backoff, RateLimiter
from framework.errors import ConfigError, FrameworkError


def shout(prompt: str) -> str:
    return prompt.upper()


def picky(prompt: str) -> str:
    if "bad" in prompt:
        raise ValueError(f"cannot answer {prompt!r}")
    if "num" in prompt:
        return 42  # type: ignore[return-value]  # not a string: a failure, not an answer
    return "fine"


class Counter:
    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __call__(self, prompt):
        self.calls.append(prompt)
        return self.fn(prompt)


def test_registry_and_config_validation():
    assert set(ADAPTERS) == {"callable", "hf", "openai"}
    adapter = build_adapter({"name": "callable", "function": f"{__name__}:shout"})
    assert adapter.answer(["hi"])[0].text == "HI"
    cases = [
        ({"name": "gpt"}, "name"),
        ({"name": "callable", "function": "no_colon"}, "function"),
        ({"name": "callable", "function": "math:nope"}, "function"),
        ({"name": "callable", "function": "no_such_module_xyz:f"}, "function"),
        ({"name": "callable", "function": "math:pi"}, "function"),
        ({"name": "callable", "function": "math:sqrt", "temprature": 1}, "temprature"),
        ({"name": "openai"}, "model"),
        ({"name": "openai", "model": "m", "base_url": "127.0.0.1:8000"}, "base_url"),
        ({"name": "openai", "model": "m", "concurrency": 0}, "concurrency"),
        ({"name": "openai", "model": "m", "requests_per_second": 0}, "requests_per_second"),
        ({"name": "openai", "model": "m", "retries": -1}, "retries"),
        ({"name": "openai", "model": "m", "timeout_s": 0}, "timeout_s"),
        ({"name": "openai", "model": "m", "temperature": -0.5}, "temperature"),
        ({"name": "openai", "model": "m", "api_key_env": "WINDTUNNEL_TEST_UNSET_KEY"}, "api_key_env"),
        ({"name": "hf"}, "path"),
        ({"name": "hf", "path": "/x", "dtype": "float8"}, "dtype"),
        ({"name": "hf", "path": "/x", "device": "tpu"}, "device"),
        ({"name": "hf", "path": "gpt2"}, "path"),  # a hub id: refused, nothing downloads
    ]
    for config, field in cases:
        with pytest.raises(ConfigError) as err:
            build_adapter(config)
        assert err.value.field == field, (config, err.value)
        assert "\n" not in str(err.value)


def test_identity_names_what_changes_answers():
    a = CallableAdapter(CallableConfig(function=f"{__name__}:shout"))
    assert a.identity == CallableAdapter(CallableConfig(function=f"{__name__}:shout")).identity
    assert a.identity.startswith(f"callable/{__name__}:shout@")
    assert a.identity != CallableAdapter(CallableConfig(function=f"{__name__}:shout", tag="v2")).identity
    assert a.identity != CallableAdapter(CallableConfig(function=f"{__name__}:picky")).identity
    # The same function given directly is the same adapter.
    assert CallableAdapter(fn=shout).identity == a.identity
    with pytest.raises(ConfigError, match="tag"):
        CallableAdapter(fn=lambda p: p)  # no importable name: two lambdas could collide
    assert CallableAdapter(fn=lambda p: p, tag="echo").identity != CallableAdapter(fn=lambda p: p, tag="echo2").identity


def test_callable_failures_are_replies_not_exceptions():
    replies = CallableAdapter(fn=picky).answer(["ok", "bad one", "num"])
    assert [r.ok for r in replies] == [True, False, False]
    assert replies[1].error == "ValueError: cannot answer 'bad one'"
    assert "returned int" in replies[2].error


def test_ask_stores_resumes_and_retries_failures(tmp_path):
    path = tmp_path / "answers.jsonl"
    flaky = {"bad": 1}

    def sometimes(prompt):
        if prompt in flaky and flaky[prompt] > 0:
            flaky[prompt] -= 1
            raise RuntimeError("transient")
        return prompt[::-1]

    counter = Counter(sometimes)
    adapter = CallableAdapter(fn=counter, tag="rev")
    prompts = ["abc", "bad", "xyz", "abc"]  # a repeated prompt is asked once
    first = ask(adapter, prompts, path, progress=False)
    assert [a.text for a in first] == ["cba", None, "zyx", "cba"]
    assert not first[1].ok and "transient" in first[1].error and first[1].attempts == 1
    assert counter.calls == ["abc", "bad", "xyz"]
    assert summarize(first) == {"n": 4, "ok": 3, "failed": 1, "cached": 0, "asked": 4}

    with AnswerStore(path) as store:  # the failure is on disk, as a failure
        assert store.summary() == {"answers": 3, "ok": 2, "failed": 1}
        kept = ask(adapter, prompts, store, progress=False, retry_failed=False)
    assert counter.calls == ["abc", "bad", "xyz"] and not kept[1].ok and all(a.cached for a in kept)

    second = ask(adapter, prompts + ["new"], path, progress=False)
    assert counter.calls == ["abc", "bad", "xyz", "bad", "new"]  # only the failed and the new prompt
    assert [a.text for a in second] == ["cba", "dab", "zyx", "cba", "wen"]
    assert [a.cached for a in second] == [True, False, True, True, False]
    with AnswerStore(path) as store:
        assert store.summary() == {"answers": 4, "ok": 4, "failed": 0}

    other = CallableAdapter(fn=counter, tag="rev2")  # another identity: nothing reused
    ask(other, ["abc"], path, progress=False)
    assert counter.calls[-1] == "abc"


def test_ask_keeps_what_arrived_when_interrupted(tmp_path):
    path = tmp_path / "answers.jsonl"
    asked, die_at = [], [6]

    def dies(prompt):
        asked.append(prompt)
        if len(asked) == die_at[0]:
            raise KeyboardInterrupt  # not an Exception: stops the run, like Ctrl-C
        return "ans " + prompt

    adapter = CallableAdapter(fn=dies, tag="t")
    prompts = [f"q{i}" for i in range(10)]
    with pytest.raises(KeyboardInterrupt):
        ask(adapter, prompts, path, progress=False)
    asked.clear()
    die_at[0] = -1
    answers = ask(adapter, prompts, path, progress=False)
    assert asked == prompts[5:]  # only what the first run did not answer
    assert [a.cached for a in answers] == [True] * 5 + [False] * 5
    assert all(a.ok for a in answers)


def test_ask_progress_bar_and_arguments(tmp_path, capsys):
    answers = ask(CallableAdapter(fn=shout), ["a", "b"], None, progress=True, desc="shouting")
    assert [a.text for a in answers] == ["A", "B"]
    assert "shouting" in capsys.readouterr().err
    with pytest.raises(TypeError, match="one string"):
        ask(CallableAdapter(fn=shout), "abc", None, progress=False)
    with pytest.raises(TypeError, match="strings"):
        ask(CallableAdapter(fn=shout), ["a", 3], None, progress=False)


def test_errors_are_framework_errors():
    with pytest.raises(FrameworkError):
        OpenAIConfig(model="")
    with pytest.raises(FrameworkError):
        HFConfig(path="")


# -- pacing -----------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        assert s >= 0
        self.t += s


def test_rate_limiter_spaces_starts_exactly():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(9):
        limiter.acquire()
        starts.append(clock.t)
    assert starts == pytest.approx([100.0 + 0.25 * k for k in range(9)])
    clock.t += 10.0  # idle time is not saved up as a burst
    limiter.acquire()
    assert limiter.acquire() == pytest.approx(0.25)


def test_rate_limiter_takes_the_stricter_limit():
    assert RateLimiter.per(10.0, 60.0).interval == pytest.approx(1.0)
    assert RateLimiter.per(0.5, 600.0).interval == pytest.approx(2.0)
    assert RateLimiter.per(None, None).interval == 0.0 and RateLimiter.per().acquire() == 0.0
    with pytest.raises(ValueError):
        RateLimiter(0.0)


def test_backoff_doubles_is_capped_and_honours_retry_after():
    rng = random.Random(0)
    b = Backoff(base_s=0.5, max_s=4.0, jitter=0.1)
    for retry, floor in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        d = b.delay(retry, rng=rng)
        assert floor <= d <= min(4.0, floor * 1.1) + 1e-12
    assert b.delay(1, retry_after=3.0, rng=rng) == 3.0
    assert b.delay(1, retry_after=60.0, rng=rng) == 4.0  # a server cannot stall us past max_s
    assert Backoff(0.5, 4.0, jitter=0.0).delay(2) == 1.0


def test_a_missing_optional_library_is_one_clear_error(tmp_path, monkeypatch):
    import sys

    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(FrameworkError, match=r"needs transformers: pip install 'bayesian-windtunnel\[hf\]'"):
        build_adapter({"name": "hf", "path": str(tmp_path)})
    monkeypatch.setitem(sys.modules, "openai", None)
    with pytest.raises(FrameworkError, match="needs the openai package"):
        build_adapter({"name": "openai", "model": "m"})
