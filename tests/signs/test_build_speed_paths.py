"""The sign-cache build's fast paths and memory-aware batching (bagofdims.signs.forward).

Packing through numpy, one cheap finite check, a cached tokenizer fingerprint, the start token's
key/values once per build, batch halving on out-of-memory, the bfloat16 autocast build, and the
meta fields that record them.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch

import bagofdims as bd
import bagofdims.inputs as inputs_mod
from bagofdims.errors import (CacheError, InvalidArgument, NumericalError, OutOfMemory,
                              ResumeError)
from bagofdims.inputs import SingleTokenInputs, vocab_id
from bagofdims.models import tokenizer_fingerprint
from bagofdims.signs import bits
from bagofdims.signs.forward import TokenForward, is_out_of_memory

import tiny

SITES = ["resid.*", "final"]


@pytest.fixture(scope="module")
def llama():
    return tiny.make("llama"), tiny.tokenizer()


@pytest.fixture(scope="module")
def reference(llama):
    model, tok = llama
    return bd.SignCache.build(model, tok, sites=SITES, batch_size=32, progress=False)


def _same_bytes(a: bd.SignCache, b: bd.SignCache) -> None:
    assert a.sites == b.sites
    for site in a.sites + ["_token_ids"]:
        assert np.array_equal(np.asarray(a._signs[site]), np.asarray(b._signs[site])), site


# -- packing ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16,
                                   torch.int8, torch.int64, torch.bool])
@pytest.mark.parametrize("d", [1, 7, 8, 13, 576])
def test_cpu_packing_gives_the_device_paths_bytes(dtype, d):
    g = torch.Generator().manual_seed(d)
    x = torch.randn(6, 3, d, generator=g)
    x[0, 0, : min(d, 3)] = 0.0  # zero is not positive
    x = (x > 0) if dtype == torch.bool else (x * 3).to(dtype)
    want = np.packbits((x.float() > 0).numpy(), axis=-1, bitorder="little")
    got = bits.pack_signs(x)
    assert got.dtype == torch.uint8 and got.shape == (6, 3, bits.packed_width(d))
    assert np.array_equal(got.numpy(), want)
    assert torch.equal(bits._pack_on_device(x > 0), got)  # the torch path GPUs take
    strided = x.transpose(0, 1)  # non-contiguous input
    assert torch.equal(bits.pack_signs(strided), bits._pack_on_device(strided > 0))


def test_pack_check_and_nan_detection():
    x = torch.tensor([[0.5, float("nan"), -1.0]])
    with pytest.raises(InvalidArgument, match="NaN"):
        bits.pack_signs(x)
    assert bits.pack_signs(x, check=False).tolist() == [[1]]  # the caller checked: NaN packs as 0
    assert bits.has_nan(x) and not bits.has_nan(torch.tensor([float("inf"), -1.0]))
    huge = torch.full((4, 8), 3e38)  # finite values whose sum overflows: the exact scan decides
    assert not bits.has_nan(huge) and not bits.has_nan(torch.tensor([float("inf"), float("-inf")]))
    assert bits.pack_signs(torch.zeros(0, 5)).shape == (0, 1)


def test_finite_check_names_the_first_bad_site_and_passes_large_finite_values(llama):
    model, _ = llama
    fwd = TokenForward(model, ["resid.0", "resid.1"], None, 8, "cpu")
    fwd._check_finite([torch.full((2, 4), 3e38), torch.ones(2, 4)])  # sum overflows, values finite
    for bad in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(NumericalError, match="site resid.1"):
            fwd._check_finite([torch.ones(2, 4), torch.tensor([[1.0, bad], [0.0, 0.0]])])


# -- per-build costs --------------------------------------------------------------------------
def test_tokenizer_fingerprint_cached_and_refreshed_on_change():
    tok = tiny.tokenizer()
    fresh = tokenizer_fingerprint(tok, refresh=True)
    assert tokenizer_fingerprint(tok) == fresh == tokenizer_fingerprint(tiny.tokenizer())
    tok.add_tokens(["newword"])
    grown = tokenizer_fingerprint(tok)
    assert grown != fresh and grown == tokenizer_fingerprint(tok, refresh=True)
    tok.pad_token = "<unk>"  # same vocabulary, another special id
    assert tokenizer_fingerprint(tok) not in (fresh, grown)


def test_vocab_id_never_answers_the_unknown_token():
    tok = tiny.tokenizer()
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 0  # the <unk> id, not a match
    assert vocab_id(tok, "<|endoftext|>") is None
    assert vocab_id(tok, "w17") == 17 and vocab_id(tok, "<unk>") == 0


def test_start_token_key_values_once_per_build_and_equal_to_the_lms(llama, reference, monkeypatch):
    model, tok = llama
    calls = []
    real = inputs_mod._bos_cache

    def counted(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(inputs_mod, "_bos_cache", counted)
    cache = bd.SignCache.build(model, tok, sites=SITES, batch_size=8, chunk_size=16, progress=False)
    assert calls == [cache.meta.bos_id] and len(range(0, tiny.VOCAB, 16)) == 6  # 6 chunks, 1 call
    _same_bytes(cache, reference)
    body = SingleTokenInputs(model, 1).prefix  # computed without the LM head
    with torch.inference_mode():
        full = model(input_ids=torch.tensor([[1]]), use_cache=True).past_key_values
    for a, b in zip(body.layers, full.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


# -- memory-aware batching --------------------------------------------------------------------
def _oom_above(model, limit: int, make_error):
    """Make the first block fail like an allocator for batches larger than ``limit``."""
    def hook(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[0] > limit:
            raise make_error()
    return model.model.layers[0].register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("make_error", [
    lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't "
                         "allocate memory: you tried to allocate 123456789 bytes."),
])
def test_out_of_memory_halves_the_batch_and_the_result_is_byte_identical(llama, reference,
                                                                        make_error, tmp_path):
    model, tok = llama
    handle = _oom_above(model, 9, make_error)
    try:
        cache = bd.SignCache.build(model, tok, sites=SITES, batch_size=32, progress=False)
    finally:
        handle.remove()
    _same_bytes(cache, reference)
    assert cache.meta.batch_size == 32 and cache.meta.batch_size_used == 8  # 32 -> 16 -> 8
    assert reference.meta.batch_size_used == 32
    cache.save(tmp_path / "c")
    saved = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert saved["batch_size_used"] == 8 and saved["peak_memory"] > 0
    assert bd.SignCache.load(tmp_path / "c").meta.batch_size_used == 8


def test_out_of_memory_at_one_token_is_a_clear_error_and_others_pass_through(llama):
    model, tok = llama

    def after_start(module, args, kwargs):  # fails the token passes, not the start token's
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:
            raise torch.OutOfMemoryError("CUDA out of memory.")

    handle = model.model.layers[0].register_forward_pre_hook(after_start, with_kwargs=True)
    try:
        with pytest.raises(OutOfMemory, match="even with one token per forward pass"):
            bd.SignCache.build(model, tok, sites=SITES, batch_size=4, progress=False)
    finally:
        handle.remove()
    handle = _oom_above(model, 0, lambda: torch.OutOfMemoryError("CUDA out of memory."))
    try:
        with pytest.raises(OutOfMemory, match="computing the start token alone"):
            bd.SignCache.build(model, tok, sites=SITES, batch_size=4, progress=False)
    finally:
        handle.remove()
    handle = _oom_above(model, 0, lambda: RuntimeError("shape mismatch"))
    try:
        with pytest.raises(RuntimeError, match="shape mismatch"):
            bd.SignCache.build(model, tok, sites=SITES, batch_size=4, progress=False)
    finally:
        handle.remove()
    assert not is_out_of_memory(ValueError("out of memory")) and \
        is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))


def test_peak_memory_recorded_and_meta_fields_validated(reference):
    meta = reference.meta
    assert meta.peak_memory > 2**20 and meta.peak_memory_measure.startswith("process peak RSS")
    for bad in (dict(autocast="float8"), dict(batch_size_used=meta.batch_size + 1),
                dict(batch_size_used=0), dict(peak_memory=None), dict(peak_memory=-1)):
        with pytest.raises(CacheError):
            dataclasses.replace(meta, **bad).validate()


# -- bfloat16 ---------------------------------------------------------------------------------
def test_bf16_build_is_recorded_close_to_float32_and_not_resumed_as_float32(llama, reference,
                                                                           tmp_path):
    model, tok = llama
    cache = bd.SignCache.build(model, tok, sites=SITES, batch_size=32, progress=False,
                               dtype="bf16", checkpoint=tmp_path / "ck")
    assert cache.meta.autocast == "bfloat16" and cache.meta.dtype == "float32"
    assert reference.meta.autocast is None
    assert next(model.parameters()).dtype == torch.float32  # the model is not changed
    for site in cache.sites:
        same = (cache.signs(site) == reference.signs(site)).float().mean().item()
        assert same > 0.95, (site, same)
    with pytest.raises(ResumeError, match="autocast"):
        bd.SignCache.build(model, tok, sites=SITES, batch_size=32, progress=False,
                           checkpoint=tmp_path / "ck")
    with pytest.raises(InvalidArgument, match="bfloat16"):
        bd.SignCache.build(model, tok, sites=SITES, progress=False, dtype="int8")


def test_cli_dtype_is_built_shown_and_kept_apart(llama, tmp_path):
    from bagofdims.cli.cache import CacheConfig, build_cache, summary
    from bagofdims.errors import AlreadyExists

    model, tok = llama
    out = str(tmp_path / "cache")
    cache = build_cache(CacheConfig(model="tiny", out=out, sites=SITES, dtype="bfloat16",
                                    device="cpu"), model, tok)
    text = summary(cache)
    assert "under bfloat16 autocast (model in float32)" in text
    assert "batches     512 tokens; peak memory" in text and "halved" not in text
    with pytest.raises(AlreadyExists, match=r"forward dtype bfloat16 \(asked: the model's own\)"):
        build_cache(CacheConfig(model="tiny", out=out, sites=SITES, device="cpu"), model, tok)
    with pytest.raises(InvalidArgument, match="bfloat16"):
        build_cache(CacheConfig(model="tiny", out=out, sites=SITES, dtype="fp8"), model, tok)
