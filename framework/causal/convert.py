"""Converters between our models and pgmpy / DoWhy.

* ``to_pgmpy`` / ``from_pgmpy``: a ``DiscreteSCM`` and a pgmpy 1.1.2 ``DiscreteBayesianNetwork``
  (rungs 1 and 2 only: a Bayesian network has no mechanisms, so ``from_pgmpy`` takes a coupling).
  pgmpy's ``TabularCPD`` values are (card, configurations) with the first evidence variable varying
  slowest; ours are (*parent cards, card) in ``dag.parents`` order.
* ``to_dowhy``: a continuous additive-noise SCM as a DoWhy 0.14 ``gcm.InvertibleStructuralCausalModel``
  with our mechanisms fixed (nothing is fitted), for ``interventional_samples`` and
  ``counterfactual_samples`` cross-checks.
"""
from __future__ import annotations

import numpy as np

from framework.causal.graphs import DAG
from framework.causal.scm import DiscreteSCM


def to_pgmpy(scm: DiscreteSCM):
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    model = DiscreteBayesianNetwork()
    model.add_nodes_from(scm.variables)
    model.add_edges_from(scm.dag.edges)
    for v in scm.variables:
        parents = list(scm.parents(v))
        model.add_cpds(TabularCPD(v, scm.card(v), scm.rows(v).T, evidence=parents or None,
                                  evidence_card=[scm.card(p) for p in parents] or None,
                                  state_names={u: list(scm.states[u]) for u in (v, *parents)}))
    return model


def from_pgmpy(model, coupling: str = "independent", name: str = "pgmpy") -> DiscreteSCM:
    nodes = tuple(model.nodes())
    dag = DAG(nodes, tuple(model.edges()), frozenset(getattr(model, "latents", ()) or ()), name)
    cpds, states = {}, {}
    for v in nodes:
        cpd = model.get_cpds(v)
        evidence = list(cpd.variables[1:])
        values = cpd.get_values().reshape(cpd.cardinality[0], *cpd.cardinality[1:])  # (card, *evidence cards)
        order = [evidence.index(p) + 1 for p in dag.parents(v)]
        cpds[v] = np.transpose(values, (*order, 0))
        states[v] = [str(s) for s in cpd.state_names[v]]
    return DiscreteSCM(dag, cpds, states, coupling)


def to_dowhy(scm):
    """An ``InvertibleStructuralCausalModel`` running ``scm``'s mechanisms (an ``AdditiveNoiseSCM`` or a
    ``LinearGaussianSCM``)."""
    if hasattr(scm, "as_additive"):
        scm = scm.as_additive()
    import networkx as nx
    from dowhy import gcm
    from dowhy.gcm.causal_models import PARENTS_DURING_FIT
    from dowhy.gcm.ml.prediction_model import PredictionModel
    from dowhy.graph import get_ordered_predecessors

    class Fixed(PredictionModel):
        """f(parents) as given; DoWhy passes parents in sorted-name order, ours are in graph order."""

        def __init__(self, fn, ours, theirs):
            self.fn, self.perm = fn, [theirs.index(p) for p in ours]

        def fit(self, X, Y):
            pass

        def predict(self, X):
            return np.asarray(self.fn(np.asarray(X, dtype=np.float64)[:, self.perm]), dtype=np.float64).reshape(-1, 1)

        def clone(self):
            return self

    graph = nx.DiGraph()
    graph.add_nodes_from(scm.dag.nodes)
    graph.add_edges_from(scm.dag.edges)
    model = gcm.InvertibleStructuralCausalModel(graph)
    for v in scm.dag.nodes:
        dist, params = scm.noise_scipy(v)
        parents = scm.dag.parents(v)
        if not parents:  # a root's value is its noise in DoWhy: shift the distribution by f()
            shifted = dict(params, loc=params.get("loc", 0.0) + float(scm.root_value(v)))
            model.set_causal_mechanism(v, gcm.ScipyDistribution(dist, **shifted))
        else:
            model.set_causal_mechanism(v, gcm.AdditiveNoiseModel(
                Fixed(scm.functions[v], list(parents), sorted(parents)), gcm.ScipyDistribution(dist, **params)))
        # what gcm.fit would record: the mechanism is valid for exactly these (sorted) parents
        model.graph.nodes[v][PARENTS_DURING_FIT] = get_ordered_predecessors(model.graph, v)
    return model
