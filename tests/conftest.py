"""Shared fixtures: Hydra's compose API over the project's configs, output under tmp_path."""
from __future__ import annotations

import pytest
import torch
from hydra import compose as hydra_compose
from hydra import initialize_config_dir

from framework.config import CONFIG_DIR
from framework.runners import register_schemas

register_schemas()
# One thread: the suite's models are tiny, and on a busy 2-core machine a second thread mostly
# spins (measured 10x slower under load).
torch.set_num_threads(1)


@pytest.fixture
def compose():
    def _compose(overrides: list[str] | None = None):
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return hydra_compose("config", overrides=overrides or [])

    return _compose
