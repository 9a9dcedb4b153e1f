"""The bnlearn networks bundled in the pgmpy 1.1.2 wheel, loaded offline from the wheel's own files.

pgmpy ships the discrete bnlearn repository (asia, cancer, earthquake, sachs, survey, alarm, barley,
child, insurance, mildew, water, hailfinder, hepar2, win95pts, andes, diabetes, link, munin*, pathfinder,
pigs) as ``pgmpy/utils/example_models/<name>.bif.gz``. ``pgmpy.example_models.load_model`` downloads
from a hub and fails offline, and ``get_example_model`` is deprecated (removed in 1.3), so we read the
BIF files with pgmpy's ``BIFReader`` (SPEC §5). Parsing is slow (about 1 s for alarm): results are cached.
"""
from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from framework.errors import ConfigError

SMALL = ("asia", "cancer", "earthquake", "sachs", "survey")
MEDIUM = ("alarm", "barley", "child", "insurance", "mildew", "water")


def _folder() -> Path:
    return Path(str(files("pgmpy"))) / "utils" / "example_models"


def available_networks() -> tuple[str, ...]:
    """Names of the discrete networks in the installed wheel, sorted."""
    return tuple(sorted(p.name[: -len(".bif.gz")] for p in _folder().glob("*.bif.gz")))


def network_path(name: str) -> Path:
    path = _folder() / f"{name}.bif.gz"
    if not path.is_file():
        raise ConfigError("network", f"unknown bundled network {name!r}; choose one of: {', '.join(available_networks())}")
    return path


@lru_cache(maxsize=None)
def _bif_text(name: str) -> str:
    with gzip.open(network_path(name), "rt", encoding="utf-8") as f:
        return f.read()


def load_bayesian_network(name: str):
    """A fresh pgmpy ``DiscreteBayesianNetwork`` of the bundled network (state names as strings)."""
    from pgmpy.readwrite import BIFReader

    return BIFReader(string=_bif_text(name)).get_model(state_name_type=str)


@lru_cache(maxsize=None)
def load_network(name: str, coupling: str = "independent"):
    """The bundled network as a ``DiscreteSCM`` with the given coupling (cached; SCMs are not mutated)."""
    from framework.causal.convert import from_pgmpy

    if coupling != "independent":
        return load_network(name).with_coupling(coupling)
    return from_pgmpy(load_bayesian_network(name), coupling=coupling, name=name)
