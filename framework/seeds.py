"""Stable seeds and digests: the same parts give the same number in every process and on every machine
(Python's ``hash()`` is salted per process, so it is never used for either)."""
from __future__ import annotations

import hashlib
import json
from typing import Any


def derive_seed(*parts: Any) -> int:
    """A 32-bit seed from any parts: ``derive_seed(seed, "bijection", "val")``."""
    raw = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(raw[:4], "little")


def digest(data: Any, length: int = 12) -> str:
    """A short, stable hash of JSON-able settings (key order does not matter)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:length]
