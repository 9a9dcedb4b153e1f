"""The ``hf`` adapter: a local Hugging Face causal LM, loaded from a folder, answering greedily.

``transformers`` is an optional extra (``pip install 'bayesian-windtunnel[hf]'``), imported only
when an adapter is built. Nothing is downloaded: the path must be a folder holding ``config.json``
(a hub id would make transformers reach for the network, so it is refused before loading), and
loading passes ``local_files_only=True``. Prompts go through the tokenizer's chat template when it
has one (``use_chat_template``), batched with left padding so each prompt ends where generation
starts; greedy decoding makes the answer a function of the prompt and the identity.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework.adapters.base import Adapter, AdapterConfig, AdapterError, Reply, one_line
from framework.errors import ConfigError, FrameworkError, require

_DTYPES = ("auto", "float32", "bfloat16", "float16")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class HFConfig(AdapterConfig):
    name: str = "hf"
    path: str = ""  # a local folder saved by save_pretrained (config.json, weights, tokenizer files)
    max_new_tokens: int = 64
    system_prompt: str = ""  # used only with a chat template ("" = no system message)
    use_chat_template: bool | None = None  # None = when the tokenizer has one
    batch_size: int = 8
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when available)
    dtype: str = "auto"  # "auto" = as saved
    tag: str = ""  # part of the identity, for what the files do not show

    def __post_init__(self) -> None:
        require(isinstance(self.path, str) and self.path != "", "path", "give the folder of a saved model")
        require(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "max_new_tokens",
                f"must be >= 1, got {self.max_new_tokens}")
        require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size",
                f"must be >= 1, got {self.batch_size}")
        require(self.dtype in _DTYPES, "dtype", f"expected one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        require(self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda", "mps"), "device",
                f"expected cpu, cuda[:N], mps or auto, got {self.device!r}")


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise FrameworkError("the hf adapter needs transformers: pip install 'bayesian-windtunnel[hf]'") from None
    return transformers


def _fingerprint(folder: Path) -> dict[str, Any]:
    """What identifies the saved model without reading gigabytes: config and tokenizer files hashed,
    weight files by name and size."""
    small, weights = {}, {}
    for f in sorted(folder.iterdir()):
        if not f.is_file():
            continue
        if f.suffix in _WEIGHT_SUFFIXES:
            weights[f.name] = f.stat().st_size
        elif f.suffix in (".json", ".txt", ".model", ".jinja"):
            small[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()[:16]
    return {"files": small, "weights": weights}


class HFAdapter(Adapter):
    name = "hf"

    def __init__(self, config: HFConfig):
        self.config = config
        folder = Path(config.path).expanduser()
        if not (folder / "config.json").is_file():
            raise ConfigError("path", f"{folder} is not a saved model folder (no config.json); "
                                      "hub ids are refused: nothing may be downloaded")
        self.folder = folder.resolve()
        transformers = _import_transformers()
        import torch

        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.folder, local_files_only=True)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(
                self.folder, local_files_only=True,
                dtype="auto" if config.dtype == "auto" else getattr(torch, config.dtype))
        except (OSError, ValueError, KeyError) as err:
            raise AdapterError(f"cannot load a causal LM from {self.folder}: {one_line(err)}") from None
        self.model.to(device).eval()
        self.device = device
        tok = self.tokenizer
        tok.padding_side = "left"  # generation continues from the right end of every row
        if tok.pad_token is None:
            if tok.eos_token is None:
                raise AdapterError(f"the tokenizer in {self.folder} has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token
        has_template = bool(getattr(tok, "chat_template", None))
        if config.use_chat_template and not has_template:
            raise ConfigError("use_chat_template", f"the tokenizer in {self.folder} has no chat template")
        self.chat = has_template if config.use_chat_template is None else config.use_chat_template
        self._fingerprint = _fingerprint(self.folder)

    @property
    def label(self) -> str:
        return self.folder.name

    @property
    def settings(self) -> dict[str, Any]:
        c = self.config
        return {"model": self._fingerprint, "max_new_tokens": c.max_new_tokens, "dtype": c.dtype,
                "chat_template": self.chat, "system_prompt": c.system_prompt if self.chat else "",
                "decoding": "greedy", "tag": c.tag}

    def format_prompt(self, prompt: str) -> str:
        """The text the model sees: the chat template applied, or the prompt as it is."""
        if not self.chat:
            return prompt
        system = [{"role": "system", "content": self.config.system_prompt}] if self.config.system_prompt else []
        return self.tokenizer.apply_chat_template(system + [{"role": "user", "content": prompt}],
                                                  add_generation_prompt=True, tokenize=False)

    def _encode(self, texts: Sequence[str]) -> Any:
        # A chat template writes its own special tokens; adding them again would double the BOS.
        return self.tokenizer(list(texts), return_tensors="pt", padding=True, add_special_tokens=not self.chat)

    def _too_long(self, text: str) -> str | None:
        context = getattr(self.model.config, "max_position_embeddings", None)
        n = len(self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"])
        if context is not None and n + self.config.max_new_tokens > context:
            return (f"prompt of {n} tokens + max_new_tokens={self.config.max_new_tokens} exceeds the model's "
                    f"context of {context}")
        return None

    def _generate(self, texts: Sequence[str]) -> list[str]:
        import torch

        enc = {k: v.to(self.device) for k, v in self._encode(texts).items()}
        with torch.inference_mode():
            out = self.model.generate(**enc, max_new_tokens=self.config.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]  # (B, new tokens): left padding puts every prompt end at one column
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def stream(self, prompts: Sequence[str]) -> Iterator[tuple[int, Reply]]:
        bs = self.config.batch_size
        for lo in range(0, len(prompts), bs):
            texts = [self.format_prompt(p) for p in prompts[lo:lo + bs]]
            errors = [self._too_long(t) for t in texts]
            todo = [j for j, e in enumerate(errors) if e is None]
            start = time.perf_counter()
            outputs: dict[int, str] = {}
            if todo:
                try:
                    outputs = dict(zip(todo, self._generate([texts[j] for j in todo])))
                except (RuntimeError, IndexError, ValueError) as err:  # out of memory and the like: the batch fails
                    errors = [e or one_line(err) for e in errors]
            latency = (time.perf_counter() - start) / max(1, len(todo))
            for j, error in enumerate(errors):
                yield lo + j, Reply(None if error else outputs[j], error, latency_s=latency)
