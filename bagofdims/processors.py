"""Which preprocessor a model comes with: tokenizer, image processor, feature extractor or a
multimodal processor, picked by the files its directory (or hub repo) holds.

- ``processor_config.json``, or a preprocessor config beside tokenizer files:
  ``AutoProcessor`` (e.g. ``WhisperProcessor``, ``CLIPProcessor``);
- ``preprocessor_config.json`` naming an image processor: ``AutoImageProcessor`` (ViT, DINOv2,
  CLIP vision);
- ``preprocessor_config.json`` otherwise: ``AutoFeatureExtractor`` (audio encoders);
- tokenizer files only: ``AutoTokenizer``.

A model class that is always used with its processor (``WhisperForConditionalGeneration``) gets
``AutoProcessor`` whatever the files say, so a missing part is an error, not a silent tokenizer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bagofdims.errors import ModelNotAvailable

log = logging.getLogger(__name__)

__all__ = ["PROCESSOR_CLASSES", "is_tokenizer", "load_preprocessor", "preprocessor_kind"]

PROCESSOR_CLASSES = {"WhisperForConditionalGeneration"}  # returned with their processor
PREPROCESSOR = "preprocessor_config.json"
PROCESSOR = "processor_config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                   "tokenizer.model", "spiece.model", "sentencepiece.bpe.model")


def is_tokenizer(obj) -> bool:
    from transformers import PreTrainedTokenizerBase

    return isinstance(obj, PreTrainedTokenizerBase)


def _local(source: Path | str) -> Path | None:
    return source if isinstance(source, Path) else None


def _has_file(source: Path | str, name: str, local_only: bool) -> Path | None:
    """The file's local path when ``source`` (a directory or hub id) has it, else None."""
    local = _local(source)
    if local is not None:
        return local / name if (local / name).is_file() else None
    from transformers.utils import cached_file

    try:
        found = cached_file(source, name, local_files_only=local_only,
                            _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except OSError:
        return None
    return Path(found) if found else None


def preprocessor_kind(source: Path | str, local_only: bool = True,
                      auto_class: str | None = None) -> str:
    """``"processor"``, ``"image_processor"``, ``"feature_extractor"`` or ``"tokenizer"``
    (see the module docstring). A hub id whose files cannot be listed reads as ``"tokenizer"``."""
    if auto_class in PROCESSOR_CLASSES:
        return "processor"
    if _has_file(source, PROCESSOR, local_only):
        return "processor"
    pre = _has_file(source, PREPROCESSOR, local_only)
    if pre is None:
        return "tokenizer"
    if any(_has_file(source, f, local_only) for f in TOKENIZER_FILES):
        return "processor"
    try:
        body = json.loads(pre.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelNotAvailable(f"'{pre}' is not valid JSON ({err}); save the image processor or "
                                "feature extractor again with save_pretrained.") from None
    image = "image_processor_type" in body or "crop_size" in body or "do_resize" in body
    return "image_processor" if image else "feature_extractor"


def load_preprocessor(source: Path | str, local_only: bool, auto_class: str | None = None):
    """The tokenizer, image processor, feature extractor or processor of a model (an
    ``OSError`` from ``from_pretrained`` propagates, as for a model's weights)."""
    import transformers

    kind = preprocessor_kind(source, local_only, auto_class)
    loader = {"processor": transformers.AutoProcessor,
              "image_processor": transformers.AutoImageProcessor,
              "feature_extractor": transformers.AutoFeatureExtractor,
              "tokenizer": transformers.AutoTokenizer}[kind]
    log.debug("loading the %s of %s", kind, source)
    return loader.from_pretrained(source, local_files_only=local_only)
