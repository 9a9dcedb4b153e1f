"""A runner is one kind of experiment: a registered name, the schema of its config, and three steps.

    plan(cfg) -> plan          validate and size everything, before any compute or folder; the CLI
                               calls it for every point of a ``-m`` sweep before Hydra starts
    run(plan, run_dir) -> {"runs": [...], ...}    the work; one entry per trained or scored model
    report(metrics, run_dir)   report.md and the plots (when ``report=true``)

``framework.experiment.run`` drives the three steps and writes ``metrics.json`` as
``{"experiment", "runner", ..., "runs": [...]}``. A runner declares which keys of a run entry are
its metrics, each with its direction, and which keys name an entry (``labels``), so that
``windtunnel-report`` aggregates a sweep of any runner.

A new kind of experiment subclasses :class:`Runner`, registers it with :func:`register_runner`
and needs nothing else of the core: its schema is stored as ``configs/runner/<name>`` by
:func:`register_schemas`, so ``windtunnel runner=<name>`` composes it, and an experiment file picks
it with ``defaults: [override /runner: <name>]``. Runners outside this package are found through the
``windtunnel.runners`` entry-point group, or the modules named in ``$WINDTUNNEL_PLUGINS``
(comma-separated module names or .py files), imported by :func:`load_plugins`.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from importlib.metadata import entry_points
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore

from framework.config import CONFIG_DIR, RunConfig, to_config
from framework.errors import ConfigError, FrameworkError
from framework.seeds import digest

DIRECTIONS = ("lower", "higher")
PLUGINS_ENV = "WINDTUNNEL_PLUGINS"
ENTRY_POINTS = "windtunnel.runners"


class Runner:
    name: ClassVar[str]
    config: ClassVar[type[RunConfig]]  # the run's schema: RunConfig plus this runner's settings
    metrics: ClassVar[dict[str, str]] = {}  # run-entry key -> "lower" or "higher" (is better)
    labels: ClassVar[tuple[str, ...]] = ()  # run-entry keys that name an entry within a run
    # dotted key -> what a refusal of it adds ("it is a run-wide setting now: runtime.threads")
    hints: ClassVar[dict[str, str]] = {}

    def settings(self, cfg: Any) -> RunConfig:
        """The composed config as this runner's typed schema; a key it lacks is refused by path."""
        return to_config(self.config, cfg)

    def plan(self, settings: RunConfig) -> Any:
        """Validate and size everything for ``settings`` (from :meth:`settings`); raise a
        FrameworkError before any compute or folder. The plan is whatever :meth:`run` needs."""
        raise NotImplementedError

    def inputs(self, plan: Any) -> Any:
        """What the results depend on beyond the config (e.g. a checkpoint's contents), JSON-able, or
        None. A resumed run is complete only if both match."""
        return None

    def check_resume(self, plan: Any, run_dir) -> None:
        """With ``resume=true``, before anything is written: what ``run_dir`` holds can be continued."""

    def run(self, plan: Any, run_dir) -> dict:
        """The work; returns ``{"runs": [...], ...}`` (the driver adds experiment, runner and timing)."""
        raise NotImplementedError

    def report(self, metrics: dict, run_dir) -> None:
        """report.md and plots; a runner without one writes nothing."""

    def summary(self, entry: dict) -> str:
        """One line per run entry for the console."""
        names = " ".join(str(entry.get(k)) for k in self.labels)
        scores = "  ".join(f"{k}={entry[k]:.4g}" for k in self.metrics if isinstance(entry.get(k), (int, float)))
        return f"{names}  {scores}".strip()


RUNNERS: dict[str, Runner] = {}
_stored = False  # whether register_schemas has run: a runner registered after it is stored at once


def register_runner(cls: type[Runner]) -> type[Runner]:
    """Class decorator: make ``cls`` a runner under ``cls.name``."""
    for name, direction in cls.metrics.items():
        if direction not in DIRECTIONS:
            raise ValueError(f"runner {cls.name!r}: metric {name!r} has direction {direction!r}; use lower or higher")
    if cls.config.__dataclass_fields__["runner"].default != cls.name:  # what the driver dispatches on
        raise ValueError(f"runner {cls.name!r}: its config's `runner` field must default to {cls.name!r}")
    RUNNERS[cls.name] = cls()
    if _stored:
        store_schema(RUNNERS[cls.name])
    return cls


def get_runner(name: str) -> Runner:
    if name not in RUNNERS:
        raise ConfigError("runner", f"no runner '{name}'; runners: {', '.join(sorted(RUNNERS))}")
    return RUNNERS[name]


def load_plugins() -> None:
    """Import the runners of other packages: entry points, then ``$WINDTUNNEL_PLUGINS``.

    A plugin that cannot be imported is a ConfigError naming it (one line, before any compute).
    """
    for point in entry_points(group=ENTRY_POINTS):
        _import(point.value, point.load, f"entry point {point.name} ({ENTRY_POINTS})")
    for item in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        if item.endswith(".py"):
            _import(item, lambda item=item: _import_file(Path(item)), f"{PLUGINS_ENV} file {item}")
        else:
            _import(item, lambda item=item: importlib.import_module(item), f"{PLUGINS_ENV} module {item}")


def _import(name: str, load, what: str) -> None:
    try:
        load()
    except FrameworkError:
        raise
    except Exception as err:  # any import failure of someone else's code: say whose, in one line
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(PLUGINS_ENV, f"cannot import the {what}: {type(err).__name__}: {reason}") from None


def _import_file(path: Path) -> None:
    """A plugin file, imported once under a name of its own (its resolved path), whatever sys.path holds."""
    path = path.resolve()
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    name = f"windtunnel_plugin_{digest(str(path), 10)}_{path.stem}"
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def store_schema(runner: Runner) -> None:
    """``runner=<name>``: the runner's file in configs/runner/ where it has one (it adds config groups,
    such as /train), else its schema alone; and its default experiment (``experiment/<name>``), empty
    where configs/experiment/ has none."""
    cs = ConfigStore.instance()
    cs.store(group="runner", name=f"{runner.name}_schema", node=runner.config, package="_global_")
    if not (CONFIG_DIR / "runner" / f"{runner.name}.yaml").exists():
        cs.store(group="runner", name=runner.name, node=runner.config, package="_global_")
    if not (CONFIG_DIR / "experiment" / f"{runner.name}.yaml").exists():
        cs.store(group="experiment", name=runner.name, node={"experiment": runner.name}, package="_global_")


def mark_stored() -> None:
    global _stored
    _stored = True
