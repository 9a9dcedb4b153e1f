"""The Einstein test (SPEC §6): held-out-theory worlds, learners behind one interface, and scores.

Train a learner on data from the regime of an old law plus a few anomalies, then ask it where a new
law differs by >= 10 noise sds: does it follow the old law (t = 0) or find the new one (t = 1)?

* :mod:`~framework.einstein.worlds`: W1..W5, each an old law, a new law with exact answers, and an
  instance sampler (log-uniform constants, renamed variables, well-posedness by description length);
* :mod:`~framework.einstein.learners`: reference (old theory, oracle), correlational (poly, spline,
  knn, mlp), symbolic (mdl, gplearn) learners, each declaring what it may see;
* :mod:`~framework.einstein.scores`: theory preference, nMSE, in-regime fit, symbolic recovery
  (SRBench rule), description length;
* :func:`run_einstein` (the protocol) and :func:`plot_world`.
"""
from framework.einstein.learners import LEARNERS, FitData, Learner, LearnerConfig, build_learner
from framework.einstein.plots import plot_world
from framework.einstein.protocol import plan, run_einstein
from framework.einstein.worlds import WORLDS, Instance, World, WorldConfig, build_world

__all__ = [
    "LEARNERS",
    "WORLDS",
    "FitData",
    "Instance",
    "Learner",
    "LearnerConfig",
    "World",
    "WorldConfig",
    "build_learner",
    "build_world",
    "plan",
    "plot_world",
    "run_einstein",
]
