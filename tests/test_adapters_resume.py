"""Kill a scoring run halfway (SIGKILL, a real subprocess), rerun it, and check at the server that the
second run asked exactly the prompts the first had not answered."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from framework.adapters import AnswerStore, OpenAIAdapter, OpenAIConfig, ask
from framework.adapters.fakeserver import FakeChatServer

pytest.importorskip("openai")

ROOT = Path(__file__).resolve().parents[1]
N, K, CONCURRENCY = 24, 10, 2  # prompts; requests answered before the server stalls; client threads

CLIENT = textwrap.dedent("""
    import sys
    from framework.adapters import OpenAIAdapter, OpenAIConfig, ask
    base_url, store, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    adapter = OpenAIAdapter(OpenAIConfig(model="fake-model", base_url=base_url, concurrency=int(sys.argv[4]),
                                         retries=0, timeout_s=30.0))
    ask(adapter, [f"question {i}: is X a cause of Y?" for i in range(n)], store, progress=False)
    print("finished")  # never printed: the test kills this process first
""")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_killed_run_resumes_asking_only_what_is_missing(tmp_path):
    prompts = [f"question {i}: is X a cause of Y?" for i in range(N)]
    store_path = tmp_path / "answers.jsonl"
    stalled, release = threading.Event(), threading.Event()
    lock, answered = threading.Lock(), [0]

    def fault(prompt, n):
        with lock:
            answered[0] += 1
            stall = answered[0] > K
        if stall and not release.is_set():
            stalled.set()
            release.wait(20.0)  # bounded; the test releases it once the client is dead
            return 503
        return None

    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FakeChatServer(reply=lambda p: "yes" if int(p.split()[1][:-1]) % 2 else "no", fault=fault) as server:
        proc = subprocess.Popen([sys.executable, str(script), server.base_url, str(store_path), str(N),
                                 str(CONCURRENCY)], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert stalled.wait(60.0), "the client never got halfway: " + proc.stderr.read1().decode()[-2000:]
            threading.Event().wait(0.3)  # let the client write what it has (a kill can land anywhere anyway)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            release.set()
        # The killed client's stalled requests log themselves as their handlers unwind; wait for them,
        # or a late one lands among the second run's requests (seen on a loaded machine).
        deadline = time.monotonic() + 20
        while server.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.returncode == -signal.SIGKILL and b"finished" not in out
        first_run = [r for r in server.log]

        # Killed mid-write as well: a torn last line.
        stored_before = [json.loads(line) for line in store_path.read_text().splitlines()]
        with store_path.open("ab") as f:
            f.write(b'{"v": 1, "key": "0123456789abcdef", "adapter": "openai/fake-mo')

        with AnswerStore(store_path) as store:
            assert store.torn == 1
            have = {a.prompt for a in store.answers()}
            assert all(a.ok for a in store.answers())
            n_logged = len(server.log)
            adapter = OpenAIAdapter(OpenAIConfig(model="fake-model", base_url=server.base_url,
                                                 concurrency=CONCURRENCY, retries=0))
            answers = ask(adapter, prompts, store, progress=False)
        second_run = server.prompts()[n_logged:]

    answered_first = {r.prompt for r in first_run if r.status == 200}
    assert have == {r["prompt"] for r in stored_before} and have <= answered_first
    assert K - CONCURRENCY <= len(have) <= K  # what arrived before the kill was kept
    assert sorted(second_run) == sorted(set(prompts) - have)  # each missing prompt asked once, nothing else
    assert all(a.ok for a in answers) and [a.text for a in answers] == ["yes" if i % 2 else "no" for i in range(N)]
    assert sum(a.cached for a in answers) == len(have)
    with AnswerStore(store_path) as store:
        assert store.torn == 0 and store.summary() == {"answers": N, "ok": N, "failed": 0}
    print(f"first run: {len(first_run)} requests, {len(have)} answers stored before SIGKILL; "
          f"second run asked {len(second_run)} of {N}")
