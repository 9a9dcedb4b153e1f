"""Natural-language rendering of causal queries, CLadder-style (Jin et al. 2023): variable names and the text.

Three name variants, as in CLadder (SPEC §5): ``real`` (meaningful names consistent with the graph:
a story per graph family, the bnlearn networks' own variables), ``anticommonsense`` (real words whose
commonsense relation contradicts the graph: the names at the two ends of one causal edge swapped, so
the graph says the effect causes the cause) and ``nonsense`` (random pronounceable four-letter words).
Every choice is drawn from the query's own random generator, so a query's text is a function of its seed.

A prompt is ``background`` (the graph in words, which nodes are unobserved), ``given_info`` (every CPD
entry the answer needs, as the exact numbers the engine used; for rung 3 also the coupling) and
``question`` (ending with the answer format). The stories and sentence templates are our own.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from framework.causal.graphs import DAG

UNIT = 10_000  # CPD entries are integers in units of 1/UNIT, so the printed numbers are the engine's numbers

STORIES: dict[str, tuple[dict[str, str], ...]] = {
    "chain": ({"X": "smoking", "V2": "tar deposits", "Y": "lung cancer"},
              {"X": "studying", "V2": "a high exam score", "Y": "college admission"}),
    "fork": ({"X": "fertiliser use", "V2": "rainfall", "Y": "a good harvest"},
             {"X": "exercise", "V2": "good genes", "Y": "heart health"}),
    "collider": ({"X": "talent", "Y": "good looks", "V3": "celebrity"},
                 {"X": "rain", "Y": "the sprinkler running", "V3": "wet grass"}),
    "confounding": ({"V1": "old age", "X": "taking the medication", "Y": "recovery"},
                    {"V1": "family wealth", "X": "private tutoring", "Y": "a high test score"}),
    "mediation": ({"X": "a college degree", "V2": "job skills", "Y": "a high salary"},
                  {"X": "exercise", "V2": "weight loss", "Y": "low blood pressure"}),
    "iv": ({"V1": "innate ability", "V2": "living near a college", "X": "a college degree", "Y": "a high salary"},
           {"V1": "lifestyle", "V2": "a cigarette tax", "X": "smoking", "Y": "poor lung health"}),
    "frontdoor": ({"V1": "a risk genotype", "X": "smoking", "V3": "tar deposits", "Y": "lung cancer"},
                  {"V1": "motivation", "X": "tutoring", "V3": "finished homework", "Y": "good grades"}),
    "diamond": ({"X": "a minimum-wage rise", "V2": "worker income", "V3": "higher prices", "Y": "consumer spending"},
                {"X": "a vaccination campaign", "V2": "vaccination", "V3": "public awareness", "Y": "avoiding infection"}),
    "diamondcut": ({"V1": "family income", "X": "private school", "V3": "books at home", "Y": "reading skill"},
                   {"V1": "hot weather", "X": "wearing sunscreen", "V3": "time outdoors", "Y": "sunburn"}),
    "arrowhead": ({"X": "a college degree", "V2": "family background", "V3": "an office job", "Y": "a high income"},
                  {"X": "maternal smoking", "V2": "a risk genotype", "V3": "low birth weight", "Y": "infant mortality"}),
}

NETWORK_NAMES: dict[str, dict[str, str]] = {  # bnlearn abbreviations spelled out
    "asia": {"asia": "a visit to Asia", "tub": "tuberculosis", "smoke": "smoking", "lung": "lung cancer",
             "bronc": "bronchitis", "either": "tuberculosis or lung cancer", "xray": "a positive X-ray",
             "dysp": "dyspnoea"},
    "survey": {"A": "age", "S": "sex", "E": "education", "O": "occupation", "R": "residence", "T": "means of travel"},
}

BINARY_STATES = ("no", "yes")
CONSONANTS, VOWELS = "bcdfghjklmnprstvwxz", "aeiou"


def nonsense_words(k: int, rng: np.random.Generator) -> list[str]:
    """k distinct pronounceable four-letter words (consonant-vowel-consonant-consonant or CVCV)."""
    out: list[str] = []
    while len(out) < k:
        c = rng.integers(len(CONSONANTS), size=3)
        v = rng.integers(len(VOWELS), size=2)
        if rng.random() < 0.5:
            word = CONSONANTS[c[0]] + VOWELS[v[0]] + CONSONANTS[c[1]] + CONSONANTS[c[2]]
        else:
            word = CONSONANTS[c[0]] + VOWELS[v[0]] + CONSONANTS[c[1]] + VOWELS[v[1]]
        if word not in out:
            out.append(word)
    return out


def _swap_edge(dag: DAG, names: dict[str, str], states: dict[str, tuple[str, ...]], rng: np.random.Generator,
               treatment: str | None, outcome: str | None) -> bool:
    """Swap the names at the ends of one causal edge (preferring treatment -> outcome); False if none fits."""
    if treatment is not None and outcome is not None and outcome in dag.descendants(treatment):
        pairs = [(treatment, outcome)]
    elif treatment is not None and dag.children(treatment):
        pairs = [(treatment, dag.children(treatment)[0])]
    else:
        pairs = [(a, b) for a, b in dag.edges if len(states[a]) == len(states[b])]
    pairs = [(a, b) for a, b in pairs if len(states[a]) == len(states[b])]
    if not pairs:
        return False
    a, b = pairs[int(rng.integers(len(pairs)))]
    names[a], names[b] = names[b], names[a]
    states[a], states[b] = states[b], states[a]
    return True


def choose_names(dag: DAG, source: str, graph: str, variant: str, states: Mapping[str, Sequence[str]],
                 rng: np.random.Generator, treatment: str | None = None, outcome: str | None = None
                 ) -> tuple[str, dict[str, str], dict[str, tuple[str, ...]]]:
    """(variant used, display name per node, display state labels per node).

    Random DAGs have no meaning to be consistent with, so they always get nonsense names; a network
    with no edge whose ends have the same number of states cannot be made anti-commonsense and keeps
    its real names. The variant actually used is returned and recorded.
    """
    labels = {v: tuple(BINARY_STATES if source != "network" and len(states[v]) == 2 else states[v]) for v in dag.nodes}
    if source == "random":
        variant = "nonsense"
    if variant == "nonsense":
        return variant, dict(zip(dag.nodes, nonsense_words(len(dag.nodes), rng))), labels
    if source == "family":
        stories = STORIES[graph]
        names = dict(stories[int(rng.integers(len(stories)))])
    else:
        spelled = NETWORK_NAMES.get(graph, {})
        names = {v: spelled.get(v, v) for v in dag.nodes}
    if variant == "anticommonsense" and not _swap_edge(dag, names, labels, rng, treatment, outcome):
        variant = "real"
    return variant, names, labels


# ------------------------------------------------------------------ text


def percent(units: int) -> str:
    """An exact CPD entry (in 1/UNIT) as a percentage: 3850 -> '38.5%'."""
    whole, frac = divmod(int(units), UNIT // 100)
    return f"{whole}.{frac:02d}".rstrip("0").rstrip(".") + "%"


def _join(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def assignment(names: Mapping[str, str], labels: Mapping[str, Sequence[str]], values: Mapping[str, int]) -> str:
    """'smoking = yes and tar deposits = no'."""
    return _join([f"{names[v]} = {labels[v][s]}" for v, s in values.items()])


def background(dag: DAG, names: Mapping[str, str]) -> str:
    parts = ["Imagine a self-contained world with only the following variables and causal relations, and no "
             "other causes or effects:"]
    for v in dag.topological_order():
        kids = dag.children(v)
        if kids:
            parts.append(f"{names[v]} has a direct effect on {_join([names[k] for k in kids])}.")
    if not dag.edges:
        parts.append(f"{_join([names[v] for v in dag.nodes])} do not affect each other.")
    hidden = [names[v] for v in dag.nodes if v in dag.latent]
    if hidden:
        parts.append(f"{_join(hidden)} {'is' if len(hidden) == 1 else 'are'} unobserved, but "
                     f"{'its' if len(hidden) == 1 else 'their'} probabilities are given below.")
    return " ".join(parts)


def given_info(dag: DAG, units: Mapping[str, np.ndarray], nodes: Sequence[str], names: Mapping[str, str],
               labels: Mapping[str, Sequence[str]]) -> str:
    """Every CPD row of ``nodes`` in words; ``units[v]`` is (C, card) integers in 1/UNIT, rows in C-order."""
    sentences = []
    for v in dag.topological_order():
        if v not in nodes:
            continue
        parents, table = dag.parents(v), units[v]
        cards = [len(labels[p]) for p in parents]
        for c, row in enumerate(table):
            if len(row) == 2:
                what = f"the probability that {names[v]} = {labels[v][1]} is {percent(row[1])}"
            else:
                what = f"{names[v]} is " + ", ".join(f"{labels[v][s]} with probability {percent(u)}" for s, u in enumerate(row))
            if parents:
                values = dict(zip(parents, np.unravel_index(c, cards)))
                sentences.append(f"For those with {assignment(names, labels, values)}, {what}.")
            else:
                sentences.append(what[0].upper() + what[1:] + ".")
    return " ".join(sentences)


COUPLING_TEXT = {
    "independent": "Each variable responds to each setting of its direct causes with its own, independent chance: "
                   "what a unit would do under one setting says nothing about what it would do under another.",
    "monotone": "Each variable is driven by one hidden uniform noise shared by all settings of its direct causes "
                "(higher states need more noise), so a unit's responses to different settings are as aligned as "
                "the probabilities allow.",
}

ANSWER_TEXT = {
    "yes_no": "Answer yes or no.",
    "number": "Answer with a number.",
    "set": "Answer with the list of variables, or 'none'.",
}
