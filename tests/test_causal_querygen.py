"""The causal query generator: every answer recomputed by brute force from the numbers the prompt prints,
byte-identical query sets, schema validation naming the bad line, and CLadder import."""
from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from framework.causal import DAG, DiscreteSCM, load_network, marginal
from framework.causal.querygen import QueryGenSettings, generate_queries, generate_query, generate_queryset, valid_adjustment
from framework.causal.queryset import (QUERY_TYPES, CausalQuery, import_cladder, import_cladder_file, load_queryset,
                                       write_queryset)
from framework.causal.reference import brute_force, exogenous_size
from framework.causal.render import COUPLING_TEXT, STORIES
from framework.causal.worlds import ValueIn, query
from framework.errors import ConfigError

SMALL = QueryGenSettings(count=240, seed=3, weights=(0.7, 0.0, 0.3), networks=())  # families and random DAGs: binary, parseable


@pytest.fixture(scope="module")
def small_set():
    return generate_queries(SMALL)


# ================================================================ answers from the printed numbers

SENTENCE = re.compile(r"(?:For those with (?P<cond>.+?), t|T)he probability that (?P<v>.+?) = yes is (?P<p>[\d.]+)%\.")


def scm_from_prompt(q: CausalQuery) -> DiscreteSCM:
    """Parse given_info (binary wording) back into CPDs over the printed nodes: the model the text describes."""
    node_of = {name: v for v, name in q.variables.items()}
    rows: dict[str, dict[tuple, float]] = {}
    for m in SENTENCE.finditer(q.given_info):
        values = {}
        if m["cond"]:
            for part in re.split(r", | and ", m["cond"]):
                name, state = part.rsplit(" = ", 1)
                values[node_of[name]] = ("no", "yes").index(state)
        rows.setdefault(node_of[m["v"]], {})[tuple(sorted(values.items()))] = float(m["p"]) / 100
    shown = [v for v in q.nodes if v in rows]
    edges = [(a, b) for a, b in q.edges if b in rows]
    assert all(a in rows for a, _ in edges), "the prompt must print every parent of a printed node"
    dag = DAG(tuple(shown), tuple(edges), frozenset(set(q.latent) & set(shown)))
    cpds = {}
    for v in shown:
        parents = dag.parents(v)
        table = np.zeros((2,) * len(parents) + (2,))
        for idx in np.ndindex(*(2,) * len(parents)):
            p = rows[v][tuple(sorted(zip(parents, idx)))]
            table[idx] = [1 - p, p]
        cpds[v] = table
    return DiscreteSCM(dag, cpds, coupling=q.coupling or "independent")


def brute_value(q: CausalQuery, scm: DiscreteSCM, asked_number: bool) -> float:
    """The quantity behind the record, by enumerating the exogenous joint (framework.causal.reference)."""
    x, y, m = q.treatment, q.outcome, q.meta

    small = 0 < exogenous_size(scm) <= 100_000  # else the engine (still on the numbers parsed from the text)

    def bf(worlds, target_world, evidence=None) -> float:
        solver = brute_force if small else query
        return float(solver(scm, worlds, [(target_world, y)], evidence or {})[1])

    kind = q.query_type
    if kind == "marginal":
        return bf([{}], 0)
    if kind == "correlation":
        p1 = bf([{}], 0, {(0, x): 1})
        return p1 if asked_number else p1 - bf([{}], 0, {(0, x): 0})
    if kind == "exp_away":
        k = m["collider"]
        p1 = bf([{}], 0, {(0, x): 1, (0, k): 1})
        return p1 if asked_number else p1 - bf([{}], 0, {(0, x): 0, (0, k): 1})
    if kind in ("ate", "collider_bias"):
        return bf([{x: 1}], 0) - bf([{x: 0}], 0)
    if kind == "ett":
        return bf([{}, {x: 1}], 1, {(0, x): 1}) - bf([{}, {x: 0}], 1, {(0, x): 1})
    if kind == "nde":
        return bf([{x: 0}, {x: 1, **{v: ValueIn(0) for v in m["mediators"]}}], 1) - bf([{x: 0}], 0)
    if kind == "nie":
        return bf([{x: 1}, {x: 0, **{v: ValueIn(0) for v in m["mediators"]}}], 1) - bf([{x: 0}], 0)
    if kind == "det-counterfactual":
        evidence = {(0, v): int(s) for v, s in m["evidence"].items()}
        return bf([{}, {x: int(m["counterfactual"])}], 1, evidence)
    if kind == "pn":
        return 1 - bf([{}, {x: 0}], 1, {(0, x): 1, (0, y): 1})
    if kind == "ps":
        return bf([{}, {x: 1}], 1, {(0, x): 0, (0, y): 0})
    raise AssertionError(kind)


def test_every_answer_follows_from_the_printed_numbers_by_brute_force(small_set):
    checked = Counter()
    for q in small_set:
        if q.query_type == "backadj":
            dag = DAG(q.nodes, q.edges, frozenset(q.latent))
            chosen = q.answer if q.answer_kind == "set" else q.meta["candidate"]
            assert valid_adjustment(dag, q.treatment, q.outcome, chosen) == (True if q.answer_kind == "set" else q.answer)
            checked[q.query_type] += 1
            continue
        value = brute_value(q, scm_from_prompt(q), q.answer_kind == "number")
        assert value == pytest.approx(q.value, abs=1e-9), (q.query_type, q.formal)
        if q.answer_kind == "number":
            assert q.answer == q.value
        elif q.query_type == "collider_bias":
            assert q.answer is False and q.value == 0.0  # no causal path from X to Y
        elif q.query_type in ("det-counterfactual", "pn", "ps"):
            assert q.answer == (value > 0.5)
        else:
            shift = 0.5 if q.query_type == "marginal" else 0.0
            assert q.answer == ((value - shift > 1e-12) if q.meta["polarity"] == "more" else (value - shift < -1e-12))
        checked[q.query_type] += 1
    assert set(checked) == set(QUERY_TYPES), f"not every query type was generated: {checked}"


def test_records_carry_rung_type_coupling_identifiability_and_names(small_set):
    for q in small_set:
        assert q.rung == QUERY_TYPES[q.query_type]
        assert (q.coupling in ("independent", "monotone")) == (q.rung == 3) and (q.coupling is None) == (q.rung < 3)
        assert isinstance(q.identifiable, bool) and q.identification
        assert q.prompt.startswith(q.background) and q.question.endswith(("Answer yes or no.", "Answer with a number.",
                                                                          "Answer with the list of variables, or 'none'."))
        assert set(q.variables) == set(q.nodes) and len(set(q.variables.values())) == len(q.nodes)
        if q.coupling:
            assert q.given_info.endswith(COUPLING_TEXT[q.coupling])  # the prompt states the coupling
        if q.source == "random":
            assert q.names == "nonsense"
    by = {(q.graph, q.query_type): q for q in small_set if q.source == "family"}
    assert Counter(q.names for q in small_set) .keys() == {"real", "anticommonsense", "nonsense"}
    # identification flags from framework.causal.identify
    if ("iv", "ate") in by:
        assert by[("iv", "ate")].identifiable is False and by[("iv", "ate")].identification == "iv"
    if ("frontdoor", "ate") in by:
        assert by[("frontdoor", "ate")].identification == "frontdoor"
    assert any(q.identification == "scm" and not q.identifiable for q in small_set if q.rung == 3)
    assert any(q.identification == "cpds" and q.identifiable for q in small_set if q.rung == 3)
    # deterministic counterfactuals on fully observed graphs are 0 or 1
    det = [q for q in small_set if q.query_type == "det-counterfactual" and not q.latent]
    assert det and all(q.value in (0.0, 1.0) for q in det)


def test_name_variants():
    for q in generate_queries(QueryGenSettings(count=60, seed=4, weights=(1, 0, 0), query_types=("ate",))):
        if q.names == "nonsense":
            assert all(re.fullmatch(r"[a-z]{4}", n) for n in q.variables.values())
            continue
        real = next(s for s in STORIES[q.graph] if set(s.values()) == set(q.variables.values()))
        if q.names == "real":
            assert q.variables == real
        elif q.names == "anticommonsense":  # the ends of the X -> Y path swapped: the graph contradicts the story
            assert q.variables["X"] == real["Y"] and q.variables["Y"] == real["X"]
        else:
            assert q.names == "anticommonsense"
        assert all(name in q.background for name in q.variables.values())


@pytest.mark.slow  # parsing a BIF file with pgmpy takes seconds on a busy machine
def test_network_queries_use_the_networks_numbers():
    settings = QueryGenSettings(count=40, seed=5, weights=(0, 1, 0), networks=("cancer",),
                                query_types=("marginal", "ate", "correlation", "ett", "pn"))
    queries = generate_queries(settings)
    scm = load_network("cancer")  # the unrounded network: answers agree to the 1e-4 rounding of the CPDs
    for q in queries:
        assert q.source == "network" and q.graph == "cancer" and q.value is not None
        assert q.identifiable is (q.rung < 3 or q.identification == "cpds")
        if q.query_type == "marginal":
            exact = float(marginal(scm, q.outcome)[scm.states[q.outcome].index(q.meta["outcome_state"])])
            assert q.value == pytest.approx(exact, abs=1e-3)
    assert {q.query_type for q in queries} == set(settings.query_types)


# ================================================================ the versioned JSONL set


def test_same_settings_same_bytes_and_any_query_regenerates(tmp_path):
    settings = QueryGenSettings(count=50, seed=7, weights=(0.7, 0.0, 0.3), networks=())
    a, b = generate_queryset(tmp_path / "a.jsonl", settings), generate_queryset(tmp_path / "b.jsonl", settings, workers=2)
    assert a.read_bytes() == b.read_bytes()
    c = generate_queryset(tmp_path / "c.jsonl", QueryGenSettings(count=50, seed=8, weights=(0.7, 0.0, 0.3)))
    assert c.read_bytes() != a.read_bytes()
    loaded = load_queryset(a)
    assert len(loaded) == 50 and loaded.header["count"] == 50 and loaded.header["schema_version"] == 1
    assert loaded.header["settings"] == settings.to_dict() and loaded.header["generator_version"] == "1"
    assert loaded.queries[17] == generate_query(settings, 17)
    assert len({q.id for q in loaded}) == 50
    # writing what was loaded gives the same file
    again = write_queryset(tmp_path / "again.jsonl", loaded.queries, loaded.header["settings"], "1")
    assert again.read_bytes() == a.read_bytes()


def _lines(path):
    return path.read_text().split("\n")[:-1]


def _rewrite(path, lines):
    path.write_text("\n".join(lines) + "\n")


def test_loading_names_the_bad_line(tmp_path):
    path = generate_queryset(tmp_path / "set.jsonl", QueryGenSettings(count=5, seed=1, weights=(1, 0, 0)))
    good = _lines(path)

    def fails(lines, where, message):
        _rewrite(path, lines)
        with pytest.raises(ConfigError) as info:
            load_queryset(path)
        assert info.value.field == f"{path}:{where}" and message in info.value.message, info.value
        assert "\n" not in str(info.value)

    fails(good[:3] + ["{not json"] + good[4:], 4, "not valid JSON")
    record = json.loads(good[2])
    for key, value, message in [("rung", "2", "'rung' must be 1, 2 or 3"), ("query_type", "why", "'query_type' must be"),
                                ("answer_kind", "maybe", "'answer_kind'"), ("nodes", "X", "'nodes' must be a list")]:
        broken = dict(record, **{key: value})
        fails(good[:2] + [json.dumps(broken)] + good[3:], 3, message)
    missing = {k: v for k, v in record.items() if k != "given_info"}
    fails(good[:2] + [json.dumps(missing)] + good[3:], 3, "missing field(s) given_info")
    fails(good[:2] + [json.dumps({**record, "extra": 1})] + good[3:], 3, "unknown field(s) extra")
    edited = {**record, "answer": not record["answer"]} if record["answer_kind"] == "yes_no" else {**record, "answer": 0.123}
    fails(good[:2] + [json.dumps(edited)] + good[3:], 3, "does not match the record's hash")
    fails(good[:5] + good[6:], 1, "header count 5 but the file has 4")
    header = json.loads(good[0])
    fails([json.dumps({**header, "count": 4})] + good[1:5], 1, "content_hash does not match")
    fails([json.dumps({**header, "schema_version": 99})] + good[1:], 1, "schema_version 99")
    fails(good[:3] + [good[2]] + good[4:], 4, "repeats query")
    fails([json.dumps({"format": "other"})] + good[1:], 1, "not a causal query set")
    _rewrite(path, good)
    assert len(load_queryset(path)) == 5


def test_bad_settings_name_the_field():
    for kwargs, field in [({"families": ("loop",)}, "families"), ({"query_types": ("why",)}, "query_types"),
                          ({"couplings": ("shared",)}, "couplings"), ({"names": ("funny",)}, "names"),
                          ({"number_fraction": 2.0}, "number_fraction"), ({"weights": (0, 0, 0)}, "weights"),
                          ({"random_nodes": (5, 3)}, "random_nodes"), ({"count": -1}, "count")]:
        with pytest.raises(ConfigError) as info:
            QueryGenSettings(**kwargs)
        assert info.value.field == field


# ================================================================ CLadder's released format

CLADDER = [
    {"question_id": 16825, "desc_id": "college_wage-IV-ate-model1-spec2-q1",
     "given_info": "For people living far from a college, the probability of high salary is 35%.",
     "question": "Will college degree or higher decrease the chance of high salary?", "answer": "no",
     "reasoning": {"step0": "Let V2 = proximity to a college; V1 = unobserved confounders; X = education; Y = salary."},
     "meta": {"story_id": "college_wage", "graph_id": "IV", "query_type": "ate", "rung": 2, "model_id": 4017,
              "groundtruth": 0.55, "polarity": False, "formal_form": "E[Y | do(X = 1)] - E[Y | do(X = 0)]"}},
    {"question_id": 2, "given_info": "The overall probability of kwox is 60%.", "question": "Is kwox more likely than not?",
     "answer": "yes", "meta": {"story_id": "nonsense3", "graph_id": "collision", "query_type": "marginal", "rung": 1,
                               "model_id": 7, "groundtruth": 0.6}},
    {"question_id": 3, "given_info": "...", "question": "For smokers, would the chance of cancer be lower without smoking?",
     "answer": "yes", "meta": {"story_id": "smoking", "graph_id": "mediation", "query_type": "ett", "rung": 3,
                               "model_id": 9, "groundtruth": -0.12}},
]


def test_cladder_json_and_jsonl_import(tmp_path):
    src = tmp_path / "cladder-v1-q-easy.json"
    src.write_text(json.dumps(CLADDER))
    models = tmp_path / "cladder-v1-meta-models.json"
    models.write_text(json.dumps([{"model_id": 4017, "background": "Imagine a world: V1 affects X and Y."}]))
    a, b, c = import_cladder(src, models)
    assert (a.rung, a.query_type, a.graph, a.answer_kind, a.answer, a.value) == (2, "ate", "iv", "yes_no", False, 0.55)
    assert (a.identifiable, a.identification, a.source, a.coupling) == (False, "iv", "cladder", None)
    assert a.background.startswith("Imagine a world") and a.formal.startswith("E[Y")
    assert a.meta["question_id"] == 16825 and a.meta["model_id"] == 4017 and a.meta["story_id"] == "college_wage"
    assert a.nodes == ("V1", "V2", "X", "Y") and a.latent == ("V1",)
    assert (b.graph, b.answer, b.names, b.identifiable) == ("collider", True, "nonsense", True)
    assert (c.rung, c.coupling, c.identifiable, c.identification) == (3, "unspecified", None, "unknown")
    out = import_cladder_file(src, tmp_path / "cladder.jsonl", models)
    loaded = load_queryset(out)
    assert list(loaded.queries) == [a, b, c] and loaded.header["settings"]["imported_from"] == src.name
    lines = tmp_path / "q.jsonl"
    lines.write_text("\n".join(json.dumps(r) for r in CLADDER) + "\n")
    assert [q.answer for q in import_cladder(lines)] == [False, True, True]


def test_cladder_csv_import_and_bad_records(tmp_path):
    hf = tmp_path / "full_v1.5_default.csv"
    hf.write_text('id,prompt,label,reasoning,rung,query_type,graph_id,story_id,question_property,formal_form\n'
                  '1,"Imagine a world. Is kwox more likely than not?",yes,,1,marginal,chain,nonsense1,,P(Y)\n'
                  '2,"Imagine a world. Does X cause Y?",no,,2,ate,fork,smoking,,E[Y|do(X=1)]\n')
    one, two = import_cladder(hf)
    assert one.question.startswith("Imagine") and one.answer is True and one.meta["id"] == "1"
    assert (two.rung, two.graph, two.answer, two.identification) == (2, "fork", False, "backdoor")
    flat = tmp_path / "flat.csv"
    flat.write_text("question_id,given_info,question,answer,rung,query_type,graph_id\n"
                    "5,P is 30%.,Is it?,maybe,1,marginal,chain\n")
    with pytest.raises(ConfigError) as info:
        import_cladder(flat)
    assert info.value.field == f"{flat}:2" and "yes or no" in info.value.message
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([CLADDER[0], {**CLADDER[1], "meta": {**CLADDER[1]["meta"], "query_type": "vibes"}}]))
    with pytest.raises(ConfigError) as info:
        import_cladder(bad)
    assert info.value.field == f"{bad}[1]" and "unknown query_type 'vibes'" in info.value.message
