"""Continual learning on Avalanche 0.6.0: streams of wind-tunnel experiences, strategies trained on
the exact posterior, plasticity methods as plugins, and metrics in bits (SPEC §4).

A run, as the continual runner does it (``joint``: ``strategy.train(stream.train_stream)`` once)::

    stream = build_stream({"name": "prior_shift", "n_experiences": 4, "hmm": {"K": 8}})

    def make_model():  # a freshly initialised model, masked to each task's classes where needed
        model = build_model(TransformerConfig(), stream.vocab_size, stream.n_classes, stream.seq_len)
        return stream.prepare_model(model)

    config = StrategyConfig(name="ewc")
    recorder = ContinualRecorder(stream)  # R, FWT's baseline row, features and weights along the stream
    strategy = build_strategy(config, make_model(), plugins=[build_plasticity({"name": "cbp"}), recorder])
    for experience in stream.train_stream:
        strategy.train(experience)
    summary = recorder.summary(fresh=fresh_baseline(make_model, config, stream))  # + plasticity ratios

Checkpoint with :func:`strategy_state` / :func:`load_strategy_state` (framework.continual.state: the
model, optimizer, clock, RNGs and every plugin's state as tensors and plain containers, loadable with
``weights_only=True``): Avalanche's save_checkpoint pickles the whole strategy with dill and fails
with torch 2.14.
"""
from framework.continual.data import CHUNK, ExperienceTask, SeededSequences, derive_seed, experience_dataset
from framework.continual.hmm_prior import PRIORS, HMMPriorConfig, PriorHMMTask
from framework.continual.metrics import (
    SIGN,
    ContinualRecorder,
    approximate_rank,
    average_error,
    bwt,
    dormant_fraction,
    effective_rank,
    experience_bits,
    features_at_scored,
    forgetting,
    forgetting_first_last,
    forgetting_per_experience,
    fresh_baseline,
    fwt,
    intransigence,
    plasticity_ratios,
    stable_rank,
    stream_row,
    summarise,
    weight_stats,
)
from framework.continual.plasticity import (
    PLASTICITY,
    ContinualBackpropConfig,
    ContinualBackpropPlugin,
    L2InitConfig,
    L2InitPlugin,
    ReDoConfig,
    ReDoPlugin,
    ShrinkPerturbConfig,
    ShrinkPerturbPlugin,
    build_plasticity,
)
from framework.continual.strategies import (
    STRATEGIES,
    PosteriorLoss,
    PosteriorStrategy,
    StrategyConfig,
    build_strategy,
    strategy_config,
)
from framework.continual.streams import (
    STREAMS,
    TINY_STREAMS,
    ClassMasked,
    PermutedTokensConfig,
    PriorShiftConfig,
    StreamConfig,
    TaskSequenceConfig,
    VocabShiftConfig,
    WindTunnelStream,
    build_stream,
    stream_config,
)
from framework.continual.state import load_strategy_state, strategy_state
from framework.continual.units import UnitGroup, find_units, reset_units

__all__ = [
    "CHUNK", "ExperienceTask", "SeededSequences", "derive_seed", "experience_dataset",
    "PRIORS", "HMMPriorConfig", "PriorHMMTask",
    "SIGN", "ContinualRecorder", "approximate_rank", "average_error", "bwt", "dormant_fraction", "effective_rank",
    "experience_bits", "features_at_scored", "forgetting", "forgetting_first_last", "forgetting_per_experience",
    "fresh_baseline", "fwt", "intransigence", "plasticity_ratios", "stable_rank", "stream_row", "summarise", "weight_stats",
    "PLASTICITY", "ContinualBackpropConfig", "ContinualBackpropPlugin", "L2InitConfig", "L2InitPlugin",
    "ReDoConfig", "ReDoPlugin", "ShrinkPerturbConfig", "ShrinkPerturbPlugin", "build_plasticity",
    "STRATEGIES", "PosteriorLoss", "PosteriorStrategy", "StrategyConfig", "build_strategy", "strategy_config",
    "STREAMS", "TINY_STREAMS", "ClassMasked", "PermutedTokensConfig", "PriorShiftConfig", "StreamConfig", "TaskSequenceConfig",
    "VocabShiftConfig", "WindTunnelStream", "build_stream", "stream_config",
    "load_strategy_state", "strategy_state",
    "UnitGroup", "find_units", "reset_units",
]
