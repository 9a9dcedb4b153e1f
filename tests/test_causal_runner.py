"""The causal runner end to end: generate a query set, score adapters on it, mode B's association gap.

Everything goes through ``framework.experiment.run`` on composed configs, at tiny sizes.
"""
from __future__ import annotations

import json
import math
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from framework.adapters.fakeserver import FakeChatServer
from framework.adapters.base import EndpointUnreachable
from framework.causal.querygen import QueryGenSettings, generate_queries
from framework.causal.queryset import load_queryset, write_queryset
from framework.cli import check_overrides
from framework.errors import ConfigError
from framework.experiment import run
from framework.runners.causal.job import JobAdapter, JobConfig
from framework.runners.causal.scoring import parse_set
from framework.runners.causal.tunnel import gap_scores

ROOT = Path(__file__).resolve().parent.parent
FAST = ["queries.networks=[asia]", "runtime.progress=false"]  # one small network: parsing each costs seconds


@pytest.fixture(scope="module")
def queryset(tmp_path_factory):
    """60 queries over the families, asia and random DAGs, written as a query-set file."""
    path = tmp_path_factory.mktemp("qs") / "queries.jsonl"
    write_queryset(path, generate_queries(QueryGenSettings(count=60, seed=5, networks=("asia",))), {"test": 1}, "1")
    return path


@pytest.fixture(scope="module")
def mechanisms_job(tmp_path_factory):
    """A causal_mechanisms transformer trained for a few steps (its answers are poor; its encoding is exact)."""
    from hydra import compose, initialize_config_dir

    from framework.config import CONFIG_DIR

    out = tmp_path_factory.mktemp("mech")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=causal/mechanisms", "train.steps=3", "train.eval_every=3",
                                           "train.val_sequences=16", "report=false",
                                           "models.transformer.d_model=16", "models.transformer.d_ff=32",
                                           "runtime.progress=false"])
    run(cfg, out)
    return out / "causal_mechanisms_transformer"


def _all(metrics):
    return next(r for r in metrics["runs"] if r["by"] == "all")


def test_generate_then_score_end_to_end(compose, tmp_path):
    gen = run(compose(["experiment=causal/generate", "queries.count=30", "queries.seed=3", *FAST]), tmp_path / "gen")
    entry = gen["runs"][0]
    assert entry["count"] == 30 and entry["generation_seconds"] > 0
    path = tmp_path / "gen" / "queries.jsonl"
    assert load_queryset(path).header["content_hash"] == entry["content_hash"]
    assert "30 queries" in (tmp_path / "gen" / "report.md").read_text()

    score = run(compose(["experiment=causal/score", f"queries={path}", "runtime.progress=false"]), tmp_path / "score")
    top = _all(score)
    assert top["n"] == top["asked"] == 30 and top["parse_failures"] == top["call_failures"] == 0
    assert 0 <= top["accuracy"] <= 1 and top["accuracy_stderr"] > 0
    assert {r["by"] for r in score["runs"]} == {"all", "rung", "query_type", "source", "graph", "names", "answer_kind"}
    for name in ("report.md", "accuracy.png", "answers.jsonl", "scores.jsonl", "metrics.json"):
        assert (tmp_path / "score" / name).exists(), name
    assert len((tmp_path / "score" / "scores.jsonl").read_text().splitlines()) == 30

    # the same set generated in place (queries given as settings) scores the same
    inline = run(compose(["experiment=causal/score", "queries.count=30", "queries.seed=3", *FAST]), tmp_path / "inline")
    assert inline["scoring"]["content_hash"] == entry["content_hash"]
    assert _all(inline)["accuracy"] == top["accuracy"]

    oracle = run(compose(["experiment=causal/score", "adapter=oracle", "adapter.flip=0", "adapter.noise=0",
                          f"queries={path}", "runtime.progress=false"]), tmp_path / "oracle")
    assert _all(oracle)["accuracy"] == 1.0 and _all(oracle)["abs_error"] == 0.0


QUIRKY = '''
def answer(prompt):
    """yes/no: "Yes" when the prompt's length is even, a hedge when it is divisible by 3; numbers: 0.5;
    sets: none; and a crash for prompts whose length is divisible by 7."""
    n = len(prompt)
    if n % 7 == 0:
        raise RuntimeError("boom")
    if prompt.endswith("Answer with a number."):
        return "0.5"
    if "Answer with the list" in prompt:
        return "none"
    if n % 3 == 0:
        return "it depends"
    return "Yes" if n % 2 == 0 else "No"
'''


def test_per_stratum_metrics_match_a_hand_count(compose, tmp_path, monkeypatch, queryset):
    (tmp_path / "quirky_baseline.py").write_text(QUIRKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    metrics = run(compose(["experiment=causal/score", f"queries={queryset}", "adapter.function=quirky_baseline:answer",
                           "runtime.progress=false"]), tmp_path / "run")
    queries = list(load_queryset(queryset))

    def hand(q):  # (status, correct, abs error) counted here, apart from the scorer
        n = len(q.prompt)
        if n % 7 == 0:
            return "call", False, None
        if q.answer_kind == "number":
            return "ok", abs(0.5 - q.answer) <= 0.01 + 1e-12, abs(0.5 - q.answer)
        if q.answer_kind == "set":
            return "ok", q.answer == (), None  # "none" meets the backdoor criterion iff the minimal set is empty
        if n % 3 == 0:
            return "parse", False, None
        return "ok", (n % 2 == 0) == q.answer, None

    for row in metrics["runs"]:
        group = [q for q in queries if row["by"] == "all" or str(getattr(q, row["by"])) == row["stratum"]]
        counted = [hand(q) for q in group]
        assert row["n"] == row["asked"] == len(group)
        assert row["call_failures"] == sum(s == "call" for s, _, _ in counted)
        assert row["parse_failures"] == sum(s == "parse" for s, _, _ in counted)
        assert row["correct"] == sum(c for _, c, _ in counted)
        p = row["correct"] / len(group)
        assert row["accuracy"] == pytest.approx(p)
        if len(group) > 1:
            assert row["accuracy_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / (len(group) - 1)))
        errors = [e for _, _, e in counted if e is not None]
        assert row["n_numbers"] == len(errors)
        if errors:
            assert row["abs_error"] == pytest.approx(sum(errors) / len(errors))
    top = _all(metrics)
    assert top["call_failures"] > 0 and top["parse_failures"] > 0  # the set exercises both
    assert "call failures (after retries)" in (tmp_path / "run" / "report.md").read_text()


def test_parse_set_names_variables_or_none():
    q = next(q for q in generate_queries(QueryGenSettings(count=40, seed=1, weights=(1, 0, 0), query_types=("backadj",),
                                                          number_fraction=1.0)) if q.answer)
    names = [q.variables[v] for v in q.answer]
    assert parse_set("Answer: " + " and ".join(names).upper(), q) == q.answer
    assert parse_set("none", q) == () and parse_set("{}", q) == ()
    assert isinstance(parse_set("the moon", q), str)


def _openai(server, n_queries_path, *extra):
    return ["experiment=causal/score", "adapter=openai", "adapter.model=fake-model", f"adapter.base_url={server.base_url}",
            "adapter.backoff_s=0", "adapter.concurrency=1", f"queries={n_queries_path}", "runtime.progress=false", *extra]


def test_endpoint_dies_halfway_and_the_rerun_asks_only_what_is_missing(compose, tmp_path, queryset):
    n = len(load_queryset(queryset))
    served = []

    def fault(prompt, k):  # 12 answers, then the server refuses every request (401 stops the run)
        served.append(prompt)
        return 401 if len(served) > 12 else None

    with FakeChatServer(lambda p: "Yes", fault=fault) as server:
        with pytest.raises(Exception, match="unauthorised"):
            run(compose(_openai(server, queryset)), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.json").exists()
    stored = [json.loads(line) for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines()]
    assert sum(r["ok"] for r in stored) == 12
    with FakeChatServer(lambda p: "Yes") as server:
        with pytest.raises(ConfigError, match="resume=true"):  # without resume the stored answers are not reused silently
            run(compose(_openai(server, queryset)), tmp_path / "run")
        metrics = run(compose(_openai(server, queryset, "resume=true")), tmp_path / "run")
        assert len(server.prompts()) == n - 12
        assert metrics["scoring"]["asked_now"] == n - 12 and metrics["scoring"]["from_store"] == 12
        assert _all(metrics)["call_failures"] == 0
        again = run(compose(_openai(server, queryset, "resume=true")), tmp_path / "run")  # complete: nothing asked
        assert len(server.prompts()) == n - 12 and again == metrics


def test_failed_calls_are_retried_then_recorded_and_reported(compose, tmp_path, queryset):
    prompts = [q.prompt for q in load_queryset(queryset)]
    flaky, dead = set(prompts[:5]), prompts[5]

    def fault(prompt, k):  # five prompts fail once (retried, then answered); one always fails
        return 500 if prompt == dead or (prompt in flaky and k == 1) else None

    with FakeChatServer(lambda p: "No", fault=fault) as server:
        metrics = run(compose(_openai(server, queryset, "adapter.retries=2")), tmp_path / "run")
        assert server.prompts().count(dead) == 3 and all(server.prompts().count(p) == 2 for p in flaky)
    top = _all(metrics)
    assert top["call_failures"] == 1 and top["asked"] == len(prompts)
    outcome = next(json.loads(line) for line in (tmp_path / "run" / "scores.jsonl").read_text().splitlines()
                   if json.loads(line)["status"] == "call_failed")
    assert "HTTP 500" in outcome["reason"] and outcome["correct"] is False


@pytest.mark.slow
def test_killed_scoring_process_resumes_asking_only_the_missing(compose, tmp_path, queryset):
    """SIGKILL the real CLI mid-run, then rerun with resume=true: the server sees each prompt once."""
    n = len(load_queryset(queryset))
    with FakeChatServer(lambda p: "No", delay_s=0.05) as server:
        args = [sys.executable, "-m", "framework.cli", *_openai(server, queryset), f"hydra.run.dir={tmp_path / 'run'}"]
        proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while len(server.prompts()) < 15 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        first = len(server.prompts())
        assert 15 <= first < n
        stored = sum(1 for line in (tmp_path / "run" / "answers.jsonl").read_text().splitlines() if line.endswith("}"))
        run(compose(_openai(server, queryset, "resume=true")), tmp_path / "run")
        asked_again = server.prompts()[first:]
        assert len(asked_again) == n - stored and not set(asked_again) & set(server.prompts()[:stored])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("overrides, error, match", [
    (["adapter.name=foo"], ConfigError, "adapter.name: unknown adapter 'foo'"),
    (["adapter=job", "adapter.path=/nonexistent/job"], ConfigError, "adapter.path: no checkpoint at"),
    (["adapter=job"], ConfigError, "adapter.path: give the job folder"),
    (["adapter=openai", "adapter.model=m", "adapter.base_url=http://127.0.0.1:{port}/v1"], EndpointUnreachable,
     "cannot be reached"),
    (["adapter.function=nosuchmodule:f"], ConfigError, "adapter.function: cannot import module"),
    (["queries.count=-1"], ConfigError, "queries.count: must be >= 0"),
    (["+queries.colour=red"], ConfigError, "queries.colour: not a query-set setting"),
])
def test_bad_input_is_one_line_and_writes_nothing(compose, tmp_path, overrides, error, match):
    overrides = [o.format(port=_free_port()) for o in overrides]
    with pytest.raises(error, match=match) as info:
        run(compose(["experiment=causal/score", *overrides]), tmp_path / "run")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "run").exists()


def test_a_query_file_with_a_bad_line_is_named(compose, tmp_path, queryset):
    lines = queryset.read_text().splitlines()
    lines[3] = lines[3].replace('"rung":', '"rung":"two","x":')
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"{bad}:4"):
        run(compose(["experiment=causal/score", f"queries={bad}"]), tmp_path / "run")
    with pytest.raises(ConfigError, match="no such query-set file"):
        run(compose(["experiment=causal/score", f"queries={tmp_path / 'none.jsonl'}"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_unknown_adapter_option_on_the_command_line():
    with pytest.raises(ConfigError, match="adapter: no option 'foo'"):
        check_overrides(["experiment=causal/score", "adapter=foo"])


def test_job_adapter_encoding_is_exact_and_refusals_are_counted(compose, tmp_path, mechanisms_job, queryset):
    settings = QueryGenSettings(count=120, seed=2, families=("confounding",), weights=(1, 0, 0),
                                query_types=("ate", "pn", "ps", "ett"), number_fraction=1.0)
    queries = generate_queries(settings)
    adapter = JobAdapter(JobConfig(path=str(mechanisms_job)))
    exact = JobAdapter(JobConfig(path=str(mechanisms_job)), predict=adapter.task.posterior)
    encoded = [(q, exact.encode(q)) for q in queries]
    ok = [(q, e) for q, e in encoded if not isinstance(e, str)]
    assert {q.query_type for q, _ in ok} == {"ate", "pn", "ps"}
    assert all("ett" in e for q, e in encoded if isinstance(e, str))
    for q, e in ok:  # the task's own oracle on the encoded tokens gives the query's exact answer
        value = e.combine(exact.probabilities(e.tokens).tolist())
        assert value == pytest.approx(q.answer, abs=1e-9)

    metrics = run(compose(["experiment=causal/score", "adapter=job", f"adapter.path={mechanisms_job}",
                           f"queries={queryset}", "runtime.progress=false"]), tmp_path / "run")
    top = _all(metrics)
    assert top["n"] == 60 and top["not_answerable"] == 60 - top["asked"] and top["not_answerable"] > 0
    assert sum(metrics["scoring"]["not_answerable_reasons"].values()) == top["not_answerable"]
    assert "not answerable" in (tmp_path / "run" / "report.md").read_text()


def test_gap_score_is_zero_at_the_association_and_one_at_the_intervention():
    p_obs = torch.tensor([[0.7, 0.3], [0.5, 0.5], [0.2, 0.8]], dtype=torch.float64)
    p_do = torch.tensor([[0.4, 0.6], [0.5, 0.5], [0.6, 0.4]], dtype=torch.float64)
    assert gap_scores(p_obs, p_do, p_obs, 0.05)[[0, 2]].tolist() == [0.0, 0.0]
    assert gap_scores(p_do, p_do, p_obs, 0.05)[[0, 2]].tolist() == [1.0, 1.0]
    halfway = gap_scores((p_obs + p_do) / 2, p_do, p_obs, 0.05)
    assert halfway[0].item() == pytest.approx(0.5) and math.isnan(halfway[1].item())  # no gap: not scored
    assert gap_scores(2 * p_do - p_obs, p_do, p_obs, 0.05)[0].item() == 1.0  # beyond the intervention: clipped


def test_tunnel_scores_mode_b_jobs(compose, tmp_path, mechanisms_job):
    train = run(compose(["experiment=causal/samples", "~models.lstm", "train.steps=3", "train.eval_every=3",
                         "train.val_sequences=16", "report=false", "runtime.progress=false",
                         "models.transformer.d_model=16", "models.transformer.d_ff=32"]), tmp_path / "train")
    assert train["runs"]
    metrics = run(compose(["experiment=causal/tunnel", f"tunnel.jobs=[{tmp_path / 'train'}]", "tunnel.eval_sequences=64",
                           "runtime.progress=false"]), tmp_path / "tunnel")
    top = _all(metrics)
    assert top["kl_bits"] > 0 and 0 <= top["association_gap"] <= 1 and top["gap_positions"] > 0
    curve = [r for r in metrics["runs"] if r["by"] == "samples_seen"]
    assert [int(r["stratum"]) for r in curve] == list(range(0, 33, 4))
    assert curve[0]["gap_positions"] == 0  # before any sample both answers are the prior's
    assert (tmp_path / "tunnel" / "tunnel.png").exists()
    with pytest.raises(ConfigError, match="holds a causal_mechanisms model"):  # mode A has no samples
        run(compose(["experiment=causal/tunnel", f"tunnel.jobs=[{mechanisms_job}]"]), tmp_path / "bad")
    with pytest.raises(ConfigError, match="adapter.path: job .* holds a causal_samples model"):
        run(compose(["experiment=causal/score", "adapter=job", f"adapter.path={tmp_path / 'train'}/causal_samples_transformer"]),
            tmp_path / "bad")
    with pytest.raises(ConfigError, match="tunnel.jobs: no trained job"):
        run(compose(["experiment=causal/tunnel", f"tunnel.jobs=[{tmp_path / 'nothing'}]"]), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_a_local_hugging_face_model_is_scored(compose, tmp_path):
    """A tiny randomly initialised GPT-2 built here (nothing downloaded): its babble is unparseable, and counted."""
    transformers = pytest.importorskip("transformers")
    tokenizers = pytest.importorskip("tokenizers")
    words = "yes no the answer is 0 1 2 3 4 5 6 7 8 9 . %".split()
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.decoder = tokenizers.decoders.WordPiece()
    folder = tmp_path / "tiny-gpt2"
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>",
                                        eos_token="<eos>").save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(vocab), n_positions=1024, n_embd=32, n_layer=1, n_head=2,
                                     bos_token_id=2, eos_token_id=2, pad_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    metrics = run(compose(["experiment=causal/score", "adapter=hf", f"adapter.path={folder}", "adapter.max_new_tokens=3",
                           "queries.count=12", "queries.weights=[1,0,0]", "runtime.progress=false"]), tmp_path / "run")
    top = _all(metrics)
    assert top["n"] == top["asked"] == 12 and top["not_answerable"] == 0
    stored = (tmp_path / "run" / "answers.jsonl").read_text().splitlines()
    assert len(stored) == len({q["prompt"] for q in map(json.loads, stored)}) <= 12  # each prompt asked once
    assert metrics["scoring"]["adapter_identity"].startswith("hf/tiny-gpt2@")
