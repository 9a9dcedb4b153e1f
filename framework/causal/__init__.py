"""Causal capability: DAGs, discrete and continuous SCMs, exact rung 1-3 oracles, a brute-force reference.

Layers, each small: ``graphs`` (DAG, CLadder families, random DAGs) -> ``noise`` (couplings: exogenous
noise + mechanisms) -> ``scm`` (DiscreteSCM, random SCMs) -> ``factors`` + ``worlds`` (the exact
multi-world engine) -> ``queries`` (named rung 1-3 queries) and ``identify`` (identifiability flags);
``reference`` is the brute-force check; ``networks`` loads the bnlearn networks bundled in pgmpy;
``querygen`` (CLadder-style query sets) -> ``queryset`` (versioned JSONL, CLadder import) -> ``render``
(the text); ``continuous`` holds linear-Gaussian and additive-noise SCMs; ``convert`` talks to pgmpy and DoWhy.
"""
from framework.causal.continuous import AdditiveNoiseSCM, LinearGaussianSCM
from framework.causal.convert import from_pgmpy, to_dowhy, to_pgmpy
from framework.causal.graphs import DAG, FAMILIES, family, random_dag
from framework.causal.identify import Identification, backdoor_set, frontdoor_set, identify_effect, identify_query, instruments
from framework.causal.networks import available_networks, load_bayesian_network, load_network
from framework.causal.noise import COUPLINGS, IndependentNoise, MonotoneNoise, Noise, ResponseNoise
from framework.causal.querygen import QueryGenSettings, generate_queries, generate_queryset
from framework.causal.queryset import CausalQuery, QuerySet, import_cladder, load_queryset, write_queryset
from framework.causal.queries import ate, counterfactual, ett, interventional, marginal, nde, nie, pn, pns, ps
from framework.causal.reference import brute_force
from framework.causal.scm import DiscreteSCM, random_cpds, random_scm
from framework.causal.worlds import MultiWorld, Solution, ValueIn, query, solve

__all__ = [
    "AdditiveNoiseSCM", "COUPLINGS", "CausalQuery", "DAG", "DiscreteSCM", "FAMILIES", "Identification",
    "IndependentNoise", "LinearGaussianSCM", "MonotoneNoise", "MultiWorld", "Noise", "QueryGenSettings", "QuerySet",
    "ResponseNoise", "Solution", "ValueIn", "ate", "available_networks", "backdoor_set", "brute_force",
    "counterfactual", "ett", "family", "from_pgmpy", "frontdoor_set", "generate_queries", "generate_queryset",
    "identify_effect", "identify_query", "import_cladder", "instruments", "interventional", "load_bayesian_network",
    "load_network", "load_queryset", "marginal", "nde", "nie", "pn", "pns", "ps", "query", "random_cpds",
    "random_dag", "random_scm", "solve", "to_dowhy", "to_pgmpy", "write_queryset",
]
