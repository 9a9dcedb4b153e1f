"""The ``openai`` adapter: an OpenAI-compatible chat-completions endpoint (vLLM, llama.cpp, ...).

It uses the official ``openai`` client with the client's own retries switched off
(``max_retries=0``), because retrying here lets one policy cover every case, count the attempts in
the answer store, and share the rate limit: connection errors, timeouts, 429 and 5xx are retried with
exponential backoff (honouring Retry-After); other 4xx fail that prompt at once; 401, 403 and 404, and
connection errors that outlast the retries, stop the run with one :class:`AdapterError` line, since
no other prompt could do better.

The API key is read from the environment variable ``api_key_env`` names and is never stored: the
identity hashes only what changes answers (model, system prompt, temperature, max tokens, seed, tag).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from framework.adapters.base import Adapter, AdapterConfig, AdapterError, EndpointUnreachable, Reply, one_line
from framework.adapters.limits import Backoff, RateLimiter
from framework.errors import ConfigError, FrameworkError, require

_FATAL_STATUS = {401: "unauthorised (check the API key)", 403: "forbidden", 404: "not found (check model and base_url)"}


@dataclass
class OpenAIConfig(AdapterConfig):
    name: str = "openai"
    model: str = ""  # as the server names it (vLLM: the served model name)
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key_env: str = ""  # name of the environment variable holding the key; "" = no key (local servers)
    system_prompt: str = ""  # "" = no system message
    temperature: float = 0.0
    max_tokens: int = 256
    seed: int | None = None  # sent when set; servers that support it sample reproducibly
    concurrency: int = 4  # requests in flight at once
    timeout_s: float = 60.0  # per request (per attempt)
    retries: int = 3  # further attempts after the first, on connection errors, timeouts, 429 and 5xx
    backoff_s: float = 0.5  # delay before the first retry; doubles each retry
    backoff_max_s: float = 30.0
    requests_per_second: float | None = None  # None = no limit; retries count
    requests_per_minute: float | None = None
    tag: str = ""  # part of the identity: bump it when the served weights change under the same name

    def __post_init__(self) -> None:
        require(isinstance(self.model, str) and self.model.strip() != "", "model",
                "give the model name the server serves")
        require(isinstance(self.base_url, str) and self.base_url.startswith(("http://", "https://")), "base_url",
                f"expected an http(s) URL such as http://127.0.0.1:8000/v1, got {self.base_url!r}")
        require(self.temperature >= 0, "temperature", f"must be >= 0, got {self.temperature}")
        for field in ("max_tokens", "concurrency"):
            value = getattr(self, field)
            require(isinstance(value, int) and value >= 1, field, f"must be an integer >= 1, got {value!r}")
        require(self.timeout_s > 0, "timeout_s", f"must be > 0, got {self.timeout_s}")
        require(isinstance(self.retries, int) and self.retries >= 0, "retries", f"must be >= 0, got {self.retries}")
        require(self.backoff_s >= 0, "backoff_s", f"must be >= 0, got {self.backoff_s}")
        require(self.backoff_max_s >= self.backoff_s, "backoff_max_s", "must be >= backoff_s")
        for field in ("requests_per_second", "requests_per_minute"):
            value = getattr(self, field)
            require(value is None or value > 0, field, f"must be > 0 or null, got {value}")


def _import_openai() -> Any:
    try:
        import openai
    except ImportError:
        raise FrameworkError("the openai adapter needs the openai package: pip install openai") from None
    return openai


def _retry_after(err: Any) -> float | None:
    try:
        return float(err.response.headers.get("retry-after"))
    except (AttributeError, TypeError, ValueError):
        return None


class OpenAIAdapter(Adapter):
    name = "openai"

    def __init__(self, config: OpenAIConfig):
        self.config = config
        self._openai = _import_openai()
        key = "EMPTY"  # local servers want some key and accept any
        if config.api_key_env:
            key = os.environ.get(config.api_key_env, "")
            if not key:
                raise ConfigError("api_key_env", f"environment variable {config.api_key_env} is not set")
        self._client = self._openai.OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout_s,
                                           max_retries=0)
        self._limiter = RateLimiter.per(config.requests_per_second, config.requests_per_minute)
        self._backoff = Backoff(config.backoff_s, config.backoff_max_s)
        self._stop = threading.Event()  # set when the stream ends early: sleeping retries give up

    @property
    def label(self) -> str:
        return self.config.model

    @property
    def settings(self) -> dict[str, Any]:
        c = self.config
        # float(): a YAML "temperature: 0" and the default 0.0 are the same setting, and one identity
        return {"model": c.model, "system_prompt": c.system_prompt, "temperature": float(c.temperature),
                "max_tokens": c.max_tokens, "seed": c.seed, "tag": c.tag}

    def messages(self, prompt: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        return system + [{"role": "user", "content": prompt}]

    def _create(self, prompt: str) -> Any:
        c = self.config
        extra = {} if c.seed is None else {"seed": c.seed}
        return self._client.chat.completions.create(model=c.model, messages=self.messages(prompt),
                                                    temperature=c.temperature, max_tokens=c.max_tokens, **extra)

    def request(self, prompt: str) -> Reply:
        """One prompt, retried by the policy above; never raises for what the endpoint does."""
        openai, c = self._openai, self.config
        attempt = 0
        while True:
            attempt += 1
            self._limiter.acquire()
            start = time.perf_counter()
            retry_after = None
            try:
                response = self._create(prompt)
            except openai.APITimeoutError:
                error, retryable, fatal = f"timed out after {c.timeout_s:g} s", True, False
            except openai.APIConnectionError as err:
                cause = one_line(err.__cause__) if err.__cause__ is not None else ""
                error, retryable, fatal = f"connection error{': ' + cause if cause else ''}", True, True
            except openai.APIStatusError as err:
                status = err.status_code
                retryable, fatal = status == 429 or status >= 500, status in _FATAL_STATUS
                body = err.body if isinstance(err.body, dict) else {}
                error = f"HTTP {status}: {_FATAL_STATUS.get(status) or one_line(str(body.get('message') or err))}"
                retry_after = _retry_after(err)
            except openai.OpenAIError as err:  # a malformed response and the like: this prompt only
                error, retryable, fatal = one_line(err), False, False
            else:
                latency = time.perf_counter() - start
                choice = response.choices[0] if response.choices else None
                text = choice.message.content if choice is not None else None
                if text is None:
                    return Reply(None, "empty response (no message content)", attempt, latency)
                return Reply(text, None, attempt, latency, choice.finish_reason)
            latency = time.perf_counter() - start
            if not retryable or attempt > c.retries or self._stop.is_set():
                # a connection error is fatal only once retries are spent; a timeout never is (one slow prompt)
                return Reply(None, f"{error} (after {attempt} attempt{'s' * (attempt > 1)})", attempt, latency,
                             fatal=fatal)
            if self._stop.wait(self._backoff.delay(attempt, retry_after)):
                return Reply(None, f"{error} (gave up: stream stopped)", attempt, latency)

    def stream(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        self._stop.clear()
        pool = ThreadPoolExecutor(max_workers=self.config.concurrency, thread_name_prefix="openai-adapter")
        # Submit a bounded window, not every prompt: a fatal error or Ctrl-C then leaves little queued.
        pending: dict[Future[Reply], int] = {}
        todo = iter(enumerate(prompts))
        try:
            while True:
                while len(pending) < 2 * self.config.concurrency:
                    nxt = next(todo, None)
                    if nxt is None:
                        break
                    pending[pool.submit(self.request, nxt[1])] = nxt[0]
                if not pending:
                    return
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    reply = future.result()
                    yield pending.pop(future), reply
                    if reply.fatal:
                        down = (reply.error or "").startswith("connection")
                        kind = EndpointUnreachable if down else AdapterError
                        raise kind(f"openai endpoint {self.config.base_url} (model {self.config.model!r}): "
                                   f"{reply.error}")
        finally:
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self._stop.set()
        self._client.close()
