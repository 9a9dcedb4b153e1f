"""The training loop, its settings and schedule."""
from framework.training.config import TrainConfig
from framework.training.loop import TrainResult, pick_device, train

__all__ = ["TrainConfig", "TrainResult", "pick_device", "train"]
