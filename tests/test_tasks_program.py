"""Program identification: the fast oracle against enumeration over all p^2 programs, the degenerate
prefixes, the program-hypothesis posterior against its closed form, the exact joint of the mixture
(conditioned on the held-out split), both encodings, the loss horizon, enumeration of every
sequence, the sampler's labels distributed as the oracle says, and every bad setting."""
from __future__ import annotations

import itertools
import math
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.errors import ConfigError
from framework.tasks import Batch, ProgramConfig, ProgramTask, build_task
from framework.tasks.base import MAX_ENUMERATED
from framework.tasks.program import LABEL0, ORD, SEP, prefix_bucket
from task_checks import SEEDS, assert_calibrated, check_batch, entropy_bits, gen

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def encode(task: ProgramTask, x: list[list[int]], sigma: list[list[int]] | None = None) -> torch.Tensor:
    """Residue sequences -> tokens; opaque: header ORD sigma(0) .. sigma(p-1) SEP, then the labels."""
    if not task.opaque:
        return torch.tensor(x)
    sigma = sigma or [list(range(task.p))[::-1]] * len(x)
    return torch.tensor([[ORD, *(LABEL0 + l for l in s), SEP, *(LABEL0 + s[r] for r in row)]
                         for row, s in zip(x, sigma)])


def program_run(a: int, b: int, x0: int, p: int, n: int) -> list[int]:
    run = [x0]
    while len(run) < n:
        run.append((a * run[-1] + b) % p)
    return run


def closed_form_w(x: list[int], t: int, p: int, pi: float) -> float:
    """P(program | x_0..x_t) from SPEC's Bayes factor count * p^(k-3), count found by its cases."""
    k, prefix = t + 1, x[: t + 1]
    if k == 1:
        count = p * p
    elif k == 2:
        count = p
    elif prefix[0] == prefix[1]:
        count = p if len(set(prefix)) == 1 else 0
    else:
        a = (prefix[2] - prefix[1]) * pow(prefix[1] - prefix[0], -1, p) % p
        b = (prefix[1] - a * prefix[0]) % p
        count = int(prefix == program_run(a, b, prefix[0], p, k))
    factor = Fraction(count) * Fraction(p) ** (k - 3)
    return float(pi * factor / (pi * factor + (1 - pi)))


# ================================================================ the oracle against enumeration


@st.composite
def program_configs(draw) -> ProgramConfig:
    p = draw(st.sampled_from([2, 3, 5, 5, 7, 7, 11]))
    length = draw(st.integers(3, 8))
    buckets = draw(st.integers(2, min(8, p**3)))
    split = draw(st.sampled_from(["all", "all", "train", "heldout"]))
    heldout = draw(st.integers(0, buckets - 1)) if split != "all" or draw(st.booleans()) else None
    cfg = dict(p=p, length=length, pi=draw(st.sampled_from([0.5, 0.5, 0.1, 0.9]) | st.floats(0.01, 0.99)),
               encoding=draw(st.sampled_from(["integer", "opaque"])), buckets=buckets, heldout_bucket=heldout,
               split=split, loss_horizon=draw(st.none() | st.integers(1, length)))
    try:
        return ProgramConfig(**cfg)
    except ConfigError as err:  # a split that keeps no prefix (tiny p^3, many buckets) is refused
        assert err.field == "heldout_bucket"
        return ProgramConfig(**{**cfg, "split": "all"})


@settings(max_examples=120, deadline=None)
@given(cfg=program_configs(), seed=SEEDS, B=st.integers(1, 4))
def test_oracle_matches_enumeration_over_all_programs(cfg, seed, B):
    task = build_task(cfg)
    batch = task.sample(B, gen(seed))
    check_batch(task, batch, B)
    torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    w = task.program_posterior(batch.tokens)
    assert w.shape == (B, task.scored) and w.dtype == torch.float64
    torch.testing.assert_close(w, task.program_posterior_reference(batch.tokens), rtol=0, atol=1e-9)
    x = task.residues(batch.tokens)
    for row, seq in enumerate(x.tolist()):
        for t in range(task.scored):
            assert float(w[row, t]) == pytest.approx(closed_form_w(seq, t, cfg.p, cfg.pi), abs=1e-12)
    # Layout: the label at position t is the next residue (its label, opaque), the next token where shown.
    P = task.scored
    assert torch.equal(batch.positions, task.header + torch.arange(P))
    shown = min(P, cfg.length - 1)
    next_tokens = batch.tokens[:, task.header + 1 : task.header + 1 + shown]
    assert torch.equal(batch.labels[:, :shown], next_tokens - (LABEL0 if task.opaque else 0))
    if task.opaque:
        header = batch.tokens[:, : task.header]
        assert bool((header[:, 0] == ORD).all()) and bool((header[:, -1] == SEP).all())
        assert torch.equal(header[:, 1:-1].sort(-1).values - LABEL0, torch.arange(cfg.p).expand(B, -1))
    if cfg.split != "all":
        bucket = prefix_bucket(x[:, 0], x[:, 1], x[:, 2], cfg.p, cfg.buckets)
        assert bool(((bucket == cfg.heldout_bucket) == (cfg.split == "heldout")).all())


def test_oracle_at_paper_size_matches_enumeration_for_both_encodings():
    for encoding in ("integer", "opaque"):
        task = build_task(ProgramConfig(encoding=encoding))
        batch = task.sample(6, gen(1))
        torch.testing.assert_close(batch.posterior, task.posterior_reference(batch.tokens), rtol=0, atol=1e-9)


@pytest.mark.parametrize("encoding", ["integer", "opaque"])
def test_degenerate_prefixes(encoding):
    p, pi = 7, 0.5
    task = build_task(ProgramConfig(p=p, length=7, encoding=encoding))
    x = [
        [3] * 7,  # constant (x_0 = x_1): p programs, the jump comes at the 3rd token
        [3, 3, 4, 0, 1, 2, 5],  # x_0 = x_1 != x_2: no program from the 3rd token
        program_run(0, 5, 2, p, 7),  # a = 0: x_0, b, b, b, ... with x_0 != b is generic (one program)
        program_run(0, 2, 2, p, 7),  # a = 0 with x_0 = b: constant
        program_run(1, 3, 6, p, 7),  # a = 1: x_0 + t b
        program_run(3, 1, 4, p, 7),  # generic
        program_run(3, 1, 4, p, 5) + [6, 6],  # follows a program, then breaks at x_5
    ]
    sigma = [list(torch.randperm(p, generator=gen(i)).tolist()) for i in range(len(x))]
    tokens = encode(task, x, sigma)
    post, w = task.posterior(tokens), task.program_posterior(tokens)
    torch.testing.assert_close(post, task.posterior_reference(tokens), rtol=0, atol=1e-12)
    torch.testing.assert_close(w, task.program_posterior_reference(tokens), rtol=0, atol=1e-12)
    jump = lambda e: pi * p**e / (pi * p**e + 1 - pi)  # noqa: E731
    expected = [
        [pi, pi] + [jump(t - 1) for t in range(2, 7)],
        [pi, pi] + [0.0] * 5,
        [pi, pi, pi] + [jump(t - 2) for t in range(3, 7)],
        [pi, pi] + [jump(t - 1) for t in range(2, 7)],
        [pi, pi, pi] + [jump(t - 2) for t in range(3, 7)],
        [pi, pi, pi] + [jump(t - 2) for t in range(3, 7)],
        [pi, pi, pi, jump(1), jump(2), 0.0, 0.0],
    ]
    torch.testing.assert_close(w, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    # The predictive over residues: (1 - w)/p everywhere plus w on the program's next residue from t = 2
    # (t = 1 for a constant start), and exactly uniform at t = 0.
    residue = post.gather(2, torch.tensor(sigma)[:, None, :].expand(-1, 7, -1)) if task.opaque else post
    torch.testing.assert_close(residue[:, 0], torch.full((7, p), 1 / p, dtype=torch.float64), rtol=0, atol=1e-15)
    program = [(1, 0), (1, 0), (0, 5), (0, 2), (1, 3), (3, 1), (3, 1)]  # an (a, b) each row follows
    for row, (seq, (a, b)) in enumerate(zip(x, program)):
        for t in range(1, 7):
            point = t >= 2 or seq[0] == seq[1]
            nxt = (a * seq[t] + b) % p
            want = torch.full((p,), (1 - w[row, t].item() * point) / p, dtype=torch.float64)
            if point and w[row, t] > 0:
                want[nxt] += w[row, t]
            torch.testing.assert_close(residue[row, t], want, rtol=0, atol=1e-15)


def test_program_posterior_is_pi_until_the_fourth_token_then_jumps():
    task = build_task(ProgramConfig())  # p = 17, pi = 1/2
    batch = task.sample(4000, gen(2))
    w, x = task.program_posterior(batch.tokens), batch.tokens
    constant3 = (x[:, 0] == x[:, 1]) & (x[:, 1] == x[:, 2])
    assert bool((w[:, :2] == 0.5).all())
    broken = (x[:, 0] == x[:, 1]) & (x[:, 1] != x[:, 2])  # x_0 = x_1 != x_2: no program explains it
    generic = ~constant3 & ~broken
    assert bool((w[generic, 2] == 0.5).all()) and bool((w[broken, 2:] == 0).all())
    assert int(constant3.sum()) > 0 and int(broken.sum()) > 0
    torch.testing.assert_close(w[constant3, 2], torch.full((int(constant3.sum()),), 17 / 18, dtype=torch.float64))
    # At the 4th token (t = 3) the non-constant prefixes that follow a program reach exactly p/(p+1), the rest 0.
    fourth = w[generic, 3]
    alive = fourth > 0
    torch.testing.assert_close(fourth[alive], torch.full((int(alive.sum()),), 17 / 18, dtype=torch.float64),
                               rtol=0, atol=1e-15)
    # About half the sequences are programs, and about 1/p of the noise ones fit a program by luck at t = 3.
    assert abs(float(alive.double().mean()) - (0.5 + 0.5 / 17)) < 0.03  # (nearly: generic excludes a few)
    still = (w[generic, 4] > 0) & alive  # ... and those still fitting at the 5th token reach p^2/(p^2+1)
    torch.testing.assert_close(w[generic, 4][still], w.new_full((int(still.sum()),), 17**2 / (17**2 + 1)),
                               rtol=0, atol=1e-15)
    assert bool((w[generic, 4][~alive] == 0).all())  # ruled out stays out
    # Entropy of the predictive: log2 17 at t = 0, 1 (generic); near 0 late for programs, log2 17 for noise.
    H = entropy_bits(batch.posterior)
    torch.testing.assert_close(H[:, 0], torch.full((4000,), math.log2(17), dtype=torch.float64), rtol=0, atol=1e-12)
    late = H[:, -1]
    assert float((late < 1e-6).double().mean()) == pytest.approx(0.5, abs=0.03)
    assert float(((late - math.log2(17)).abs() < 1e-9).double().mean()) == pytest.approx(0.5, abs=0.03)


# ================================================================ the mixture's exact joint (Fractions)


def exact_predictive(cfg: ProgramConfig, restricted: bool) -> dict[tuple[int, ...], list[Fraction]]:
    """prefix x_0..x_t -> [P(x_{t+1} = y | prefix)], from the joint of whole sequences x_0..x_L.

    P(x_0..x_L) = pi #{(a, b) generating it} / p^3 + (1 - pi) p^-(L+1): the generative story itself,
    not the count formula. ``restricted`` conditions the mixture on the split's buckets."""
    p, L, pi = cfg.p, cfg.length, Fraction(cfg.pi)
    mass: dict[tuple[int, ...], list[Fraction]] = {}
    for seq in itertools.product(range(p), repeat=L + 1):
        if restricted and cfg.split != "all":
            inside = prefix_bucket(seq[0], seq[1], seq[2], p, cfg.buckets) == cfg.heldout_bucket
            if inside != (cfg.split == "heldout"):
                continue
        fit = sum(all(seq[j + 1] == (a * seq[j] + b) % p for j in range(L)) for a in range(p) for b in range(p))
        joint = pi * Fraction(fit, p**3) + (1 - pi) * Fraction(1, p ** (L + 1))
        for t in range(L):
            mass.setdefault(seq[: t + 1], [Fraction(0)] * p)[seq[t + 1]] += joint
    return {prefix: [m / sum(ms) for m in ms] for prefix, ms in mass.items()}


@pytest.mark.parametrize("cfg", [ProgramConfig(p=2, length=4, pi=0.3), ProgramConfig(p=3, length=4),
                                 ProgramConfig(p=3, length=3, pi=0.8, encoding="opaque")])
def test_oracle_is_the_predictive_of_the_generative_joint_on_every_sequence(cfg):
    task = build_task(cfg)
    every = task.all_sequences()
    exact = exact_predictive(cfg, restricted=False)
    post = task.posterior(every)
    x = task.residues(every).tolist()
    for row, seq in enumerate(x):
        sigma = every[row, 1 : 1 + cfg.p] - LABEL0 if task.opaque else torch.arange(cfg.p)
        for t in range(cfg.length):
            want = [float(f) for f in exact[tuple(seq[: t + 1])]]
            torch.testing.assert_close(post[row, t, sigma], torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)


def test_split_target_is_the_unrestricted_rule_which_the_restricted_mixture_matches_from_t2():
    cfg = ProgramConfig(p=3, length=4, buckets=3, heldout_bucket=1, split="train")
    task = build_task(cfg)
    restricted = exact_predictive(cfg, restricted=True)
    every = task.all_sequences()
    post = task.posterior(every)
    differs_early = 0
    for row, seq in enumerate(every.tolist()):
        for t in range(cfg.length):
            want = torch.tensor([float(f) for f in restricted[tuple(seq[: t + 1])]], dtype=torch.float64)
            if t >= 2:
                torch.testing.assert_close(post[row, t], want, rtol=0, atol=1e-12)
            else:
                differs_early += not torch.allclose(post[row, t], want, rtol=0, atol=1e-9)
    assert differs_early > 0  # the documented choice: the target ignores the split where it would matter


@pytest.mark.parametrize("split,heldout", [("all", None), ("train", 0), ("heldout", 0), ("heldout", 2)])
def test_sampler_draws_whole_sequences_from_the_exact_joint(split, heldout):
    # x_0..x_L (the shown tokens and the last label) against the mixture's exact joint, conditioned on the split.
    cfg = ProgramConfig(p=3, length=3, pi=0.4, buckets=3, heldout_bucket=heldout, split=split)
    task = build_task(cfg)
    N = 30000
    batch = task.sample(N, gen(3))
    full = torch.cat([batch.tokens, batch.labels[:, -1:]], 1)  # (N, 4)
    seqs = list(itertools.product(range(3), repeat=4))
    joint = []
    for seq in seqs:
        inside = prefix_bucket(seq[0], seq[1], seq[2], 3, 3) == heldout if heldout is not None else False
        kept = split == "all" or inside == (split == "heldout")
        fit = sum(all(seq[j + 1] == (a * seq[j] + b) % 3 for j in range(3)) for a in range(3) for b in range(3))
        joint.append(kept * (0.4 * fit / 27 + 0.6 / 81))
    expect = torch.tensor(joint, dtype=torch.float64) / sum(joint) * N
    index = (full * torch.tensor([27, 9, 3, 1])).sum(1)
    seen = torch.bincount(index, minlength=81).double()
    assert bool((seen[expect == 0] == 0).all())
    live = expect > 0
    chi2 = float(((seen[live] - expect[live]) ** 2 / expect[live]).sum())
    df = int(live.sum()) - 1
    assert chi2 < df + 6 * math.sqrt(2 * df), (chi2, df)


# ================================================================ calibration of the sampler against the oracle


def next_is_program_groups(task: ProgramTask, batch: Batch) -> torch.Tensor:
    """(B, P, C): 1 for the class a x_t + b would give under the (a, b) fitted to x_0..x_2, from t = 2 on
    (read off the visible tokens; before t = 2 that fit would use the very token being predicted)."""
    x = task.residues(batch.tokens)
    p = task.p
    d = (x[:, 1] - x[:, 0]) % p
    inv = torch.tensor([pow(int(r), -1, p) if r else 0 for r in range(p)])
    a = (x[:, 2] - x[:, 1]) % p * inv[d] % p
    nxt = (a[:, None] * x + (x[:, 1] - a * x[:, 0])[:, None]) % p  # (B, L)
    nxt = nxt[:, : task.scored]
    if task.opaque:
        nxt = (batch.tokens[:, 1 : 1 + p] - LABEL0).gather(1, nxt)
    groups = torch.nn.functional.one_hot(nxt, p)
    groups[:, :2] = 0
    return groups


@pytest.mark.parametrize("encoding", ["integer", "opaque"])
def test_labels_are_calibrated(encoding):
    task = build_task(ProgramConfig(p=5, length=6, encoding=encoding))
    batch = task.sample(6000, gen(4))
    check_batch(task, batch, 6000)
    assert_calibrated(batch, next_is_program_groups(task, batch))


def test_split_labels_are_calibrated_from_the_third_token():
    task = build_task(ProgramConfig(p=5, length=6, buckets=4, heldout_bucket=2, split="train", pi=0.3))
    batch = task.sample(6000, gen(5))
    check_batch(task, batch, 6000)
    late = Batch(batch.tokens, batch.positions[2:], batch.posterior[:, 2:], batch.labels[:, 2:])
    assert_calibrated(late, next_is_program_groups(task, batch)[:, 2:])


def test_calibration_check_detects_a_wrong_program_oracle():
    # The oracle of a different prior: the check must fail, otherwise passing it proves nothing.
    batch = build_task(ProgramConfig(p=5, length=6, pi=0.5)).sample(6000, gen(6))
    wrong = build_task(ProgramConfig(p=5, length=6, pi=0.3)).posterior(batch.tokens)
    with pytest.raises(AssertionError, match="disagree"):
        assert_calibrated(Batch(batch.tokens, batch.positions, wrong, batch.labels))


# ================================================================ layout, horizon, enumeration


def test_layouts_at_paper_size():
    integer, opaque = build_task(ProgramConfig()), build_task(ProgramConfig(encoding="opaque"))
    assert (integer.vocab_size, integer.n_classes, integer.seq_len) == (17, 17, 16)
    assert torch.equal(integer.positions(), torch.arange(16))
    assert (opaque.vocab_size, opaque.n_classes, opaque.seq_len) == (19, 17, 35)
    assert torch.equal(opaque.positions(), torch.arange(19, 35))
    # The same seed draws the same residues in both encodings; only the relabelling differs per sequence.
    a, b = integer.sample(64, gen(7)), opaque.sample(64, gen(7))
    assert torch.equal(opaque.residues(b.tokens), a.tokens)
    sigma = b.tokens[:, 1:18] - LABEL0
    assert len({tuple(s) for s in sigma.tolist()}) == 64
    assert torch.equal(sigma.gather(1, a.labels), b.labels)
    torch.testing.assert_close(b.posterior, a.posterior.gather(2, sigma.argsort(-1)[:, None, :].expand(-1, 16, -1)),
                               rtol=0, atol=0)


def test_loss_horizon_scores_the_first_positions_of_the_same_sequences():
    full, short = build_task(ProgramConfig()), build_task(ProgramConfig(loss_horizon=5))
    assert (short.vocab_size, short.n_classes, short.seq_len) == (full.vocab_size, full.n_classes, full.seq_len)
    assert torch.equal(short.positions(), torch.arange(5))
    a, b = full.sample(32, gen(8)), short.sample(32, gen(8))
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(b.posterior, a.posterior[:, :5]) and torch.equal(b.labels, a.labels[:, :5])
    assert torch.equal(short.program_posterior(b.tokens), full.program_posterior(a.tokens)[:, :5])
    opaque = build_task(ProgramConfig(encoding="opaque", loss_horizon=3))
    assert torch.equal(opaque.positions(), torch.tensor([19, 20, 21]))


def test_buckets_split_the_prefixes_evenly_and_the_splits_partition_them():
    sizes = torch.bincount(prefix_bucket(*torch.cartesian_prod(*[torch.arange(17)] * 3).T, 17, 8), minlength=8)
    assert int(sizes.sum()) == 17**3 and int(sizes.max() - sizes.min()) <= 3
    assert prefix_bucket(1, 2, 3, 17, 8) == prefix_bucket(torch.tensor(1), 2, 3, 17, 8).item()
    cfg = dict(p=3, length=4, buckets=4, heldout_bucket=3)
    train, held = (build_task(ProgramConfig(**cfg, split=s)).all_sequences() for s in ("train", "heldout"))
    every = build_task(ProgramConfig(**cfg)).all_sequences()
    assert len(train) + len(held) == len(every) == 81
    assert set(map(tuple, train.tolist())) | set(map(tuple, held.tolist())) == set(map(tuple, every.tolist()))


@pytest.mark.parametrize(
    "cfg,count",
    [
        (ProgramConfig(p=3, length=3), 27),
        (ProgramConfig(p=2, length=5, pi=0.2), 32),
        (ProgramConfig(p=3, length=3, encoding="opaque"), 6 * 27),
        (ProgramConfig(p=3, length=3, buckets=3, heldout_bucket=0, split="heldout"), None),
        (ProgramConfig(p=3, length=4, buckets=3, heldout_bucket=0, split="train", encoding="opaque"), None),
    ],
)
def test_enumeration_is_complete_and_distinct(cfg, count):
    task = build_task(cfg)
    every = task.all_sequences()
    listed = set(map(tuple, every.tolist()))
    if count is None:  # the split's prefixes times every continuation (times every header)
        kept = sum((prefix_bucket(*pre, cfg.p, cfg.buckets) == cfg.heldout_bucket) == (cfg.split == "heldout")
                   for pre in itertools.product(range(cfg.p), repeat=3))
        count = kept * cfg.p ** (cfg.length - 3) * (math.factorial(cfg.p) if task.opaque else 1)
    assert every.shape == (count, task.seq_len) and len(listed) == count == task.count_sequences()
    sampled = set(map(tuple, task.sample(40 * count, gen(9)).tokens.tolist()))
    assert sampled == listed  # the list is exactly the support
    post = task.posterior(every)
    check_batch(task, Batch(every, task.positions(), post, post.argmax(-1)), count)


def test_enumeration_refuses_large_configs():
    with pytest.raises(ValueError, match=r"program p=17, length=16.*enumerates at most 200,000"):
        build_task(ProgramConfig()).all_sequences()
    assert build_task(ProgramConfig(p=5, length=4, encoding="opaque")).count_sequences() == 120 * 625


# ================================================================ configs, registry, determinism, devices


def test_bad_configs_name_the_field():
    cases = [
        (dict(p=15), "p", "must be a prime <= 1021, got 15"),
        (dict(p=1), "p", "got 1"),
        (dict(p=1031), "p", "got 1031"),
        (dict(length=2), "length", "must be >= 3"),
        (dict(pi=0.0), "pi", "must be in (0, 1), got 0.0"),
        (dict(pi=1.0), "pi", "got 1.0"),
        (dict(pi=float("nan")), "pi", "got nan"),
        (dict(encoding="letters"), "encoding", "integer, opaque; got 'letters'"),
        (dict(buckets=1), "buckets", "got 1"),
        (dict(p=2, buckets=9), "buckets", "[2, p^3=8]"),
        (dict(heldout_bucket=8), "heldout_bucket", "must be in [0, buckets-1=7], got 8"),
        (dict(heldout_bucket=-1), "heldout_bucket", "got -1"),
        (dict(split="test"), "split", "all, train, heldout; got 'test'"),
        (dict(split="train"), "split", "needs heldout_bucket"),
        (dict(split="heldout"), "split", "needs heldout_bucket"),
        (dict(p=131, split="train", heldout_bucket=0), "split", "p must be <= 127"),
        (dict(p=2, buckets=8, heldout_bucket=0, split="heldout"), None, None),  # filled in below
        (dict(loss_horizon=17), "loss_horizon", "must be in [1, length=16]"),
        (dict(loss_horizon=0), "loss_horizon", "got 0"),
        (dict(length=4, loss_horizon=5), "loss_horizon", "length=4"),
    ]
    # With 8 buckets over p^3 = 8 prefixes some bucket is empty; find it for the "keeps no prefix" case.
    used = {prefix_bucket(*pre, 2, 8) for pre in itertools.product(range(2), repeat=3)}
    empty = [h for h in range(8) if h not in used]
    assert empty
    cases[16] = (dict(p=2, buckets=8, heldout_bucket=empty[0], split="heldout"), "heldout_bucket", "keeps no prefix")
    for values, field, message in cases:
        with pytest.raises(ConfigError) as info:
            ProgramConfig(**values)
        assert info.value.field == field and message in info.value.message, (values, info.value)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_task({"name": "program", "modulus": 5})
    assert info.value.field == "modulus"
    # Legal corners build.
    assert build_task(ProgramConfig(p=2, length=3, loss_horizon=3, buckets=8)).seq_len == 3
    everything = build_task(ProgramConfig(p=2, buckets=8, heldout_bucket=empty[0], split="train"))
    assert everything.sample(4, gen(0)).tokens.shape == (4, 16) and everything.count_sequences() == 2**16
    assert build_task(ProgramConfig(heldout_bucket=7)).config.split == "all"  # a bucket may be named and unused


def test_registry_and_the_hydra_config_file():
    omegaconf = pytest.importorskip("omegaconf")
    assert isinstance(build_task({"name": "program"}), ProgramTask)
    task = build_task(omegaconf.OmegaConf.structured(ProgramConfig(p=5, encoding="opaque")))
    assert isinstance(task, ProgramTask) and task.vocab_size == 7
    with pytest.raises(ConfigError) as info:
        build_task(omegaconf.OmegaConf.create({"name": "program", "p": 9}))
    assert info.value.field == "p"
    # configs/task/program.yaml: every key is a schema field, and it builds the paper's task.
    node = omegaconf.OmegaConf.load(CONFIG_DIR / "task" / "program.yaml")
    assert list(node.pop("defaults")) == ["program_schema", "_self_"]
    merged = omegaconf.OmegaConf.merge(omegaconf.OmegaConf.structured(ProgramConfig), node)
    assert omegaconf.OmegaConf.to_object(merged) == ProgramConfig()


def test_same_seed_same_batch_different_seed_different_batch():
    for cfg in (ProgramConfig(), ProgramConfig(encoding="opaque", heldout_bucket=3, split="heldout")):
        task = build_task(cfg)
        a, b, c = task.sample(8, gen(10)), task.sample(8, gen(10)), task.sample(8, gen(11))
        for x, y in zip((a.tokens, a.labels, a.posterior), (b.tokens, b.labels, b.posterior)):
            assert torch.equal(x, y)
        assert not torch.equal(a.tokens, c.tokens)


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cfg", [ProgramConfig(p=5, length=6, encoding="opaque"),
                                 ProgramConfig(p=5, length=6, buckets=4, heldout_bucket=1, split="train")])
def test_sampling_on_the_generator_device(cfg, device):
    task = build_task(cfg)
    batch = task.sample(8, torch.Generator(device).manual_seed(12))
    for t in (batch.tokens, batch.positions, batch.posterior, batch.labels):
        assert t.device.type == device
    check_batch(task, batch.to("cpu"), 8)
    torch.testing.assert_close(batch.posterior.cpu(), task.posterior_reference(batch.tokens.cpu()), rtol=0, atol=1e-9)
    assert task.program_posterior(batch.tokens).device.type == device
