"""The ``windtunnel`` command: ``windtunnel experiment=<name> [hydra overrides]``.

A thin Hydra shell around :func:`framework.experiment.run`, for every runner. Before Hydra creates a
run folder, every job's overrides (each point of a ``-m`` sweep too) are composed and planned by
their runner; a bad one exits with status 2 and one line naming the field and what is allowed, and
leaves nothing behind. Any :class:`framework.errors.FrameworkError` during the run exits the same way.
"""
from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

if "-m" in sys.argv[1:] or "--multirun" in sys.argv[1:]:
    # A sweep runs jobs side by side on shared cores, where idle OpenMP threads that spin steal the
    # cores their siblings wait for (a 2-thread step measured 31x slower under load; benchmarks/README.md).
    # A lone run keeps the default, faster on idle cores (1.17x at batch 128, 2.3x at batch 32, 2 threads).
    # Read when torch loads: set first.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import MissingConfigException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from framework.config import CONFIG_DIR
from framework.errors import ConfigError, FrameworkError
from framework.experiment import plan
from framework.runners import RUNNERS, get_runner, register_schemas
from framework.runtime import threads_per_job

# Hydra's own flags: with any of these the command is not a run, and Hydra handles it.
_HYDRA_FLAGS_NOT_RUNS = ("--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--resolve", "--shell-completion",
                         "-sc", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--package", "-p")


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The override list of every job of a sweep (``a=1,2 b=3`` -> two jobs); one job without sweeps."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    choices = [[f"{o.get_key_element()}={value}" for value in o.sweep_string_iterator()] if o.is_sweep_override()
               else [raw] for o, raw in zip(parsed, overrides)]
    return [list(job) for job in itertools.product(*choices)]


def _describe(err: Exception) -> ConfigError:
    """One line, naming the field, from Hydra's and OmegaConf's multi-line composition errors."""
    if isinstance(err, MissingConfigException):
        missing = str(err).split("Could not find '", 1)[-1].split("'", 1)[0]  # e.g. experiment/nonexistent
        group, _, option = missing.rpartition("/")
        options = [o for o in (err.options or []) if not o.endswith("_schema")]
        return ConfigError(group or missing, f"no option '{option}'; choose one of: {', '.join(options)}")
    cause = err
    while cause is not None and not (isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None)):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return ConfigError("overrides", str(err).splitlines()[0])
    message = str(cause).splitlines()[0]
    if "not in" in message:  # an unknown key: say which keys exist there
        parent = getattr(cause, "object_type", None)
        fields = getattr(parent, "__dataclass_fields__", None)
        if fields:
            message += f"; fields: {', '.join(fields)}"
        hints = {key: hint for runner in RUNNERS.values() for key, hint in runner.hints.items()}
        if cause.full_key in hints:
            message += f"; {hints[cause.full_key]}"
    return ConfigError(cause.full_key, message)


def check_overrides(overrides: list[str]) -> None:
    """Compose and validate every job; raises ConfigError (one line) at the first bad one."""
    for job in sweep_jobs(overrides):
        try:
            with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
                cfg = compose("config", overrides=job)
        except Exception as err:  # Hydra raises several unrelated types for bad overrides
            raise _describe(err) from None
        plan(cfg)


def _fail(err: FrameworkError) -> None:
    """The one place a user-facing error leaves the program: one line, exit status 2."""
    kind = "invalid setting: " if isinstance(err, ConfigError) else ""
    print(f"windtunnel: {kind}{err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    from framework.experiment import run

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        # A sweep job's folder is named by its config hash, so what is there is this job's own work.
        cfg.resume = True
        n_jobs = hydra_cfg.launcher.get("n_jobs") if "Joblib" in str(hydra_cfg.launcher.get("_target_")) else None
        if n_jobs is not None and n_jobs < 1:  # joblib's -1: one job per core
            n_jobs = os.cpu_count() or 1
        if n_jobs and cfg.runtime.threads == 0:
            # Parallel local jobs share the cores: without this each would start one thread per core.
            cfg.runtime.threads = threads_per_job(n_jobs)
    try:
        metrics = run(cfg, run_dir)
    except FrameworkError as err:
        _fail(err)
    print(f"wrote {run_dir / 'metrics.json'}")
    runner = get_runner(metrics["runner"])
    for entry in metrics["runs"]:
        print(f"  {runner.summary(entry)}")


def main() -> None:
    args = sys.argv[1:]
    try:
        register_schemas()  # imports plugins: a broken one is refused in one line
    except FrameworkError as err:
        _fail(err)
    if not any(a.split("=")[0] in _HYDRA_FLAGS_NOT_RUNS for a in args):
        overrides = [a for a in args if a not in ("-m", "--multirun")]
        try:
            check_overrides(overrides)
        except FrameworkError as err:
            _fail(err)
    _app()


if __name__ == "__main__":
    main()
