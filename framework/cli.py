"""The ``windtunnel`` command: ``windtunnel experiment=<name> [hydra overrides]``.

A thin Hydra shell around :func:`framework.experiment.run`. A bad setting exits with status 2 and
one line naming the field, before any compute.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from framework.config import CONFIG_DIR, register_schemas
from framework.errors import ConfigError

register_schemas()


def _remove_if_empty(run_dir: Path) -> None:
    """Remove a run folder that holds nothing but what Hydra wrote on start: a rejected run leaves no trace."""
    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir)


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from framework.experiment import run

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, run_dir)
    except ConfigError as err:
        _remove_if_empty(run_dir)
        print(f"windtunnel: invalid setting: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {run_dir / 'metrics.json'}")
    for r in metrics["runs"]:
        print(f"  {r['task_key']:>12} {r['model_key']:>12}  params={r['params']:>9,}  "
              f"entropy_mae_bits={r['entropy_mae_bits']:.4g}  kl_bits={r['kl_bits']:.4g}")


def main() -> None:
    _app()


if __name__ == "__main__":
    main()
