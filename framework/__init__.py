"""Bayesian wind tunnels: measure, in exact bits, whether learning machines do Bayesian inference in context.

Tasks (``framework.tasks``) sample sequences with an exact posterior at every scored position;
models (``framework.models``) map tokens to causal logits; ``framework.training`` trains one on the
other; ``framework.metrics`` scores the result in bits. Each kind of experiment is a runner
(``framework.runners``), and ``framework.experiment.run`` drives any of them behind the
``windtunnel`` command.
"""

__version__ = "0.1.0"
