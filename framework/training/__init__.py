"""The training loop, its settings, schedule and checkpoints."""
from framework.training.config import TrainConfig
from framework.training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "train"]
