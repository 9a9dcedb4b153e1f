"""Versioned causal query sets: one record per query, JSONL on disk, validated line by line; CLadder import.

File format (``SCHEMA_VERSION`` 1), UTF-8, one JSON object per line, keys sorted, no spaces:

* line 1, the header: ``{"format": "windtunnel-causal-queries", "schema_version": 1, "generator_version": ...,
  "settings": {...} | null, "count": N, "content_hash": sha256 of the N query lines joined by "\\n"}``;
* lines 2 .. N+1: one :class:`CausalQuery` each, whose ``id`` is the hash of the record's other fields.

The canonical form (sorted keys, compact separators, numbers rounded to 12 significant digits by the
generator) makes the file a function of its contents: the same settings and seed give the same bytes
on every machine. Loading checks every line against the schema, every id, the count and the content
hash, and a bad line is one ConfigError whose field is ``<path>:<line>``.

``import_cladder`` reads CLadder's released question records (Jin et al. 2023, causalNLP/cladder:
a JSON list or JSONL of ``{"question_id", "desc_id", "given_info", "question", "answer": "yes"|"no",
"reasoning", "meta": {"rung", "query_type", "graph_id", "story_id", "model_id", "groundtruth", ...}}``,
or a CSV with those columns flattened, or the Hugging Face CSV ``id, prompt, label, rung, query_type,
graph_id, story_id, formal_form``) into the same records, so a user with that data set can score on it.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from framework.causal.graphs import FAMILIES, family
from framework.causal.identify import identify_effect
from framework.errors import ConfigError
from framework.io import write_text

FORMAT = "windtunnel-causal-queries"
SCHEMA_VERSION = 1

QUERY_TYPES: dict[str, int] = {  # CLadder's query types (its codes) and ours, with their rungs
    "marginal": 1, "correlation": 1, "exp_away": 1,
    "ate": 2, "backadj": 2, "collider_bias": 2,
    "ett": 3, "nde": 3, "nie": 3, "det-counterfactual": 3, "pn": 3, "ps": 3,
}
SOURCES = ("family", "network", "random", "cladder")
ANSWER_KINDS = ("yes_no", "number", "set")
NAME_VARIANTS = ("real", "anticommonsense", "nonsense", "cladder")
COUPLINGS = ("independent", "monotone", "unspecified")  # unspecified: imported rung-3 records
CLADDER_GRAPHS = {"IV": "iv", "collision": "collider"}  # CLadder graph ids that differ from our family names


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def query_hash(record: Mapping[str, Any]) -> str:
    """The stable id of a record: sha256 of its canonical JSON without ``id``, 16 hex digits."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "id"}).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CausalQuery:
    """One causal question with its exact answer.

    ``answer`` is a bool (``answer_kind`` yes_no), a float (number) or a tuple of node names (set);
    ``value`` is the exact quantity behind it (the effect a yes/no question is about; None for sets and
    where unknown). Node names (``nodes``, ``treatment``, ``formal``, set answers) are the graph's own;
    ``variables`` maps them to the names the text uses. ``coupling`` is set for rung 3 only.
    ``identifiable`` says whether the answer follows from the observational distribution and the graph
    (``framework.causal.identify``), ``identification`` how; the prompt itself always gives the full model.
    """

    id: str
    rung: int
    query_type: str
    source: str  # family | network | random | cladder
    graph: str  # family or network name; "random" for random DAGs; CLadder's graph id, mapped
    nodes: tuple[str, ...]
    edges: tuple[tuple[str, str], ...]
    latent: tuple[str, ...]
    treatment: str | None
    outcome: str | None
    formal: str
    answer_kind: str
    answer: bool | float | tuple[str, ...]
    value: float | None
    coupling: str | None
    identifiable: bool | None
    identification: str
    names: str
    variables: dict[str, str]
    background: str
    given_info: str
    question: str
    seed: int | None
    meta: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return "\n\n".join(part for part in (self.background, self.given_info, self.question) if part)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["nodes"], out["latent"] = list(self.nodes), list(self.latent)
        out["edges"] = [list(e) for e in self.edges]
        if isinstance(self.answer, tuple):
            out["answer"] = list(self.answer)
        elif self.answer_kind == "number" and not isinstance(self.answer, bool):
            out["answer"] = float(self.answer)  # 1 and 1.0 would hash differently
        if isinstance(self.value, (int, float)) and not isinstance(self.value, bool):
            out["value"] = float(self.value)
        return out

    @staticmethod
    def build(check: bool = True, **values: Any) -> "CausalQuery":
        """A record from its fields, ``id`` computed; ``check`` validates it like a loaded one (the
        generator, whose records are well formed by construction, skips that for speed)."""
        values = dict(values)
        values.pop("id", None)
        draft = CausalQuery(id="", **values).to_json()
        draft["id"] = query_hash(draft)
        if check:
            return CausalQuery.from_json(draft, "query")
        return dataclasses.replace(CausalQuery(id="", **values), id=draft["id"])

    @staticmethod
    def from_json(obj: Any, where: str) -> "CausalQuery":
        """Validate a decoded record; any problem is one ConfigError with field ``where``."""

        def bad(message: str) -> ConfigError:
            return ConfigError(where, message)

        if not isinstance(obj, dict):
            raise bad(f"expected a JSON object, got {type(obj).__name__}")
        names = [f.name for f in fields(CausalQuery)]
        missing = [k for k in names if k not in obj]
        if missing:
            raise bad(f"missing field(s) {', '.join(missing)}")
        extra = sorted(set(obj) - set(names))
        if extra:
            raise bad(f"unknown field(s) {', '.join(extra)}")

        def check(key: str, ok: bool, expected: str) -> None:
            if not ok:
                raise bad(f"field {key!r} must be {expected}, got {obj[key]!r}"[:300])

        is_str = lambda v: isinstance(v, str)  # noqa: E731
        is_strs = lambda v: isinstance(v, list) and all(map(is_str, v))  # noqa: E731
        is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        for key in ("id", "query_type", "source", "graph", "formal", "answer_kind", "identification", "names",
                    "background", "given_info", "question"):
            check(key, is_str(obj[key]), "a string")
        check("rung", obj["rung"] in (1, 2, 3) and not isinstance(obj["rung"], bool), "1, 2 or 3")
        check("query_type", obj["query_type"] in QUERY_TYPES, f"one of {', '.join(QUERY_TYPES)}")
        check("rung", QUERY_TYPES[obj["query_type"]] == obj["rung"], f"{QUERY_TYPES[obj['query_type']]} for a "
              f"{obj['query_type']} query")
        check("source", obj["source"] in SOURCES, f"one of {', '.join(SOURCES)}")
        check("answer_kind", obj["answer_kind"] in ANSWER_KINDS, f"one of {', '.join(ANSWER_KINDS)}")
        check("names", obj["names"] in NAME_VARIANTS, f"one of {', '.join(NAME_VARIANTS)}")
        check("nodes", is_strs(obj["nodes"]), "a list of strings")
        check("latent", is_strs(obj["latent"]) and set(obj["latent"]) <= set(obj["nodes"]), "a list of nodes")
        check("edges", isinstance(obj["edges"], list) and all(is_strs(e) and len(e) == 2 and set(e) <= set(obj["nodes"])
                                                               for e in obj["edges"]), "a list of [parent, child] nodes")
        for key in ("treatment", "outcome"):
            check(key, obj[key] is None or obj[key] in obj["nodes"], "null or a node")
        kind, answer = obj["answer_kind"], obj["answer"]
        if kind == "yes_no":
            check("answer", isinstance(answer, bool), "true or false for a yes_no query")
        elif kind == "number":
            check("answer", is_num(answer), "a finite number for a number query")
        else:
            check("answer", is_strs(answer) and set(answer) <= set(obj["nodes"]), "a list of nodes for a set query")
        check("value", obj["value"] is None or is_num(obj["value"]), "null or a finite number")
        if obj["rung"] == 3:
            check("coupling", obj["coupling"] in COUPLINGS, f"one of {', '.join(COUPLINGS)} for a rung-3 query")
        else:
            check("coupling", obj["coupling"] is None, "null below rung 3")
        check("identifiable", obj["identifiable"] is None or isinstance(obj["identifiable"], bool), "true, false or null")
        check("variables", isinstance(obj["variables"], dict) and all(map(is_str, obj["variables"].values()))
              and set(obj["variables"]) <= set(obj["nodes"]), "an object mapping nodes to names")
        check("seed", obj["seed"] is None or (isinstance(obj["seed"], int) and not isinstance(obj["seed"], bool)),
              "null or an integer")
        check("meta", isinstance(obj["meta"], dict), "an object")
        if obj["id"] != query_hash(obj):
            raise bad(f"id {obj['id']!r} does not match the record's hash {query_hash(obj)!r} (edited or corrupt)")
        values = dict(obj)
        values["nodes"], values["latent"] = tuple(obj["nodes"]), tuple(obj["latent"])
        values["edges"] = tuple(tuple(e) for e in obj["edges"])
        if kind == "set":
            values["answer"] = tuple(answer)
        elif kind == "number":
            values["answer"] = float(answer)
        return CausalQuery(**values)


@dataclass(frozen=True)
class QuerySet:
    header: dict[str, Any]
    queries: tuple[CausalQuery, ...]

    def __len__(self) -> int:
        return len(self.queries)

    def __iter__(self):
        return iter(self.queries)


def content_hash(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def dumps(queries: Iterable[CausalQuery], settings: Mapping[str, Any] | None, generator_version: str) -> str:
    """The file's text: header line, then one canonical line per query."""
    lines = [canonical(q.to_json()) for q in queries]
    header = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "generator_version": generator_version,
              "settings": None if settings is None else dict(settings), "count": len(lines),
              "content_hash": content_hash(lines)}
    return "\n".join([canonical(header), *lines]) + "\n"


def write_queryset(path: str | Path, queries: Iterable[CausalQuery], settings: Mapping[str, Any] | None = None,
                   generator_version: str = "import") -> Path:
    """Write atomically (framework.io): a reader never sees half a query set."""
    path = Path(path)
    write_text(path, dumps(queries, settings, generator_version))
    return path


def load_queryset(path: str | Path) -> QuerySet:
    """Read and validate a query set; the first problem is a ConfigError naming ``<path>:<line>``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such query-set file")
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise ConfigError(f"{path}:1", "empty file: expected a header line")
    header = _parse(lines[0], f"{path}:1")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ConfigError(f"{path}:1", f"not a causal query set: the header must have format {FORMAT!r}")
    for key in ("schema_version", "generator_version", "settings", "count", "content_hash"):
        if key not in header:
            raise ConfigError(f"{path}:1", f"header has no {key!r}")
    if header["schema_version"] != SCHEMA_VERSION:
        raise ConfigError(f"{path}:1", f"schema_version {header['schema_version']!r} is not supported "
                          f"(this framework reads {SCHEMA_VERSION})")
    queries, seen = [], {}
    for n, line in enumerate(lines[1:], start=2):
        where = f"{path}:{n}"
        query = CausalQuery.from_json(_parse(line, where), where)
        if query.id in seen:
            raise ConfigError(where, f"repeats query {query.id} of line {seen[query.id]}")
        seen[query.id] = n
        queries.append(query)
    if header["count"] != len(queries):
        raise ConfigError(f"{path}:1", f"header count {header['count']!r} but the file has {len(queries)} queries")
    if header["content_hash"] != content_hash(lines[1:]):
        raise ConfigError(f"{path}:1", "content_hash does not match the query lines (edited, reordered or truncated)")
    return QuerySet(header, tuple(queries))


def _parse(line: str, where: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as err:
        raise ConfigError(where, f"not valid JSON: {err.msg} at column {err.colno}") from None


# ------------------------------------------------------------------ CLadder import


def _cladder_records(path: Path) -> list[tuple[str, dict]]:
    """(where, record) pairs from a CLadder JSON list, JSONL or CSV file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        return [(f"{path}:{i}", row) for i, row in enumerate(rows, start=2)]  # line 1 holds the column names
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}", f"not valid JSON: {err.msg}") from None
        return [(f"{path}[{i}]", r) for i, r in enumerate(data)]
    return [(f"{path}:{n}", _parse(line, f"{path}:{n}")) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _yes_no(value: Any, where: str) -> bool:
    text = str(value).strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    raise ConfigError(where, f"answer must be yes or no, got {value!r}")


def import_cladder(path: str | Path, models_path: str | Path | None = None) -> list[CausalQuery]:
    """CLadder question records -> CausalQuery records (``source`` "cladder").

    ``models_path`` (CLadder's ``cladder-v1-meta-models.json``) supplies each model's ``background``
    text by ``model_id``; without it the background is the record's own ``background`` field, if any.
    A graph id that names one of our families brings its nodes, edges and latent nodes, and with them
    the identifiability flag of rung-1 and rung-2 questions (rung 3: unknown, the coupling is unstated).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such CLadder file")
    backgrounds: dict[str, str] = {}
    if models_path is not None:
        models = json.loads(Path(models_path).read_text(encoding="utf-8"))
        backgrounds = {str(m.get("model_id")): str(m.get("background", "")) for m in models if isinstance(m, dict)}
    out = []
    for where, rec in _cladder_records(path):
        if not isinstance(rec, dict):
            raise ConfigError(where, f"expected an object, got {type(rec).__name__}")
        meta = dict(rec.get("meta") or {})
        get = lambda key, default=None: meta.get(key, rec.get(key, default))  # noqa: E731 - meta or flat column
        query_type, rung = get("query_type"), get("rung")
        if query_type not in QUERY_TYPES:
            raise ConfigError(where, f"unknown query_type {query_type!r}; CLadder's are {', '.join(QUERY_TYPES)}")
        try:
            rung = int(rung)
        except (TypeError, ValueError):
            raise ConfigError(where, f"rung must be 1, 2 or 3, got {rung!r}") from None
        if "answer" in rec or "label" in rec:
            answer = _yes_no(rec.get("answer", rec.get("label")), where)
        else:
            raise ConfigError(where, "has no answer (or label) field")
        graph_id = str(get("graph_id", ""))
        graph = CLADDER_GRAPHS.get(graph_id, graph_id)
        nodes, edges, latent = FAMILIES.get(graph, ((), (), frozenset()))
        identifiable, method = None, "unknown"
        if graph in FAMILIES and rung == 1:
            identifiable, method = True, "observational"
        elif graph in FAMILIES and rung == 2:
            ident = identify_effect(family(graph), "X", "Y")
            identifiable, method = ident.identifiable, ident.method
        truth = get("groundtruth")
        value = float(truth) if isinstance(truth, (int, float)) and not isinstance(truth, bool) and math.isfinite(truth) else None
        if "prompt" in rec and "question" not in rec:  # the Hugging Face CSV: one prompt column
            given, question = "", str(rec["prompt"])
        else:
            given, question = str(rec.get("given_info", "")), str(rec.get("question", ""))
        story = str(get("story_id", ""))
        keep = {k: v for k, v in meta.items() if k not in ("query_type", "rung", "graph_id", "groundtruth")}
        for key in ("question_id", "desc_id", "id", "story_id", "model_id", "polarity", "formal_form"):
            if key in rec and key not in keep:
                keep[key] = rec[key]
        keep = json.loads(json.dumps(keep, default=str))
        out.append(CausalQuery.build(
            rung=rung, query_type=query_type, source="cladder", graph=graph, nodes=tuple(nodes), edges=tuple(edges),
            latent=tuple(sorted(latent)), treatment="X" if "X" in nodes else None, outcome="Y" if "Y" in nodes else None,
            formal=str(get("formal_form", "") or ""), answer_kind="yes_no", answer=answer, value=value,
            coupling="unspecified" if rung == 3 else None, identifiable=identifiable, identification=method,
            names="nonsense" if story.startswith("nonsense") else "cladder", variables={},
            background=backgrounds.get(str(get("model_id")), str(rec.get("background", ""))), given_info=given,
            question=question, seed=None, meta=keep))
    return out


def import_cladder_file(path: str | Path, out: str | Path, models_path: str | Path | None = None) -> Path:
    """Import a CLadder file and write it as a query set (settings: the source file and its sha256)."""
    path = Path(path)
    queries = import_cladder(path, models_path)
    source = {"imported_from": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return write_queryset(out, queries, source, generator_version="import")
