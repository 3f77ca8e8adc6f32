import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import bagofdims as bd
from bagofdims.errors import ResumeError
from bagofdims.signs.cache import CacheError

import tiny

HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def llama():
    return tiny.make("llama"), tiny.tokenizer()


def test_build_matches_single_token_forward(llama):
    model, tok = llama
    cache = bd.SignCache.build(model, tok, sites=["resid.*", "final", "k.1"], batch_size=16,
                               bos=False, progress=False)
    assert len(cache) == tiny.VOCAB and cache.meta.bos is False and cache.meta.bos_id is None
    ids = torch.tensor([5, 17, 40])
    with torch.no_grad():
        hs = model(ids[:, None], output_hidden_states=True).hidden_states
    for layer in range(tiny.LAYERS - 1):
        expect = torch.where(hs[layer + 1][:, 0] > 0, 1, -1).to(torch.int8)
        assert torch.equal(cache.signs(f"resid.{layer}", tokens=ids), expect)
    assert torch.equal(cache.signs("final", tokens=ids), torch.where(hs[-1][:, 0] > 0, 1, -1).to(torch.int8))
    assert cache.packed("resid.0").shape == (tiny.VOCAB, 4) and cache.packed("resid.0").dtype == torch.uint8
    assert cache.width("k.1") == 16


def test_bos_prefix_and_token_subset(llama):
    model, tok = llama
    ids = torch.tensor([9, 3, 50])
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], bos=True, tokens=ids, progress=False)
    with torch.no_grad():
        hs = model(torch.stack([torch.full_like(ids, 1), ids], 1), output_hidden_states=True).hidden_states
    expect = torch.where(hs[2][:, -1] > 0, 1, -1).to(torch.int8)
    assert torch.equal(cache.signs("resid.1", tokens=[9, 3, 50]), expect)
    assert torch.equal(cache.signs("resid.1", tokens=[50]), expect[2:])
    with pytest.raises(IndexError, match="not in this cache"):
        cache.signs("resid.1", tokens=[4])
    with pytest.raises(KeyError, match="not in this cache"):
        cache.packed("resid.0")


def test_decoders_read_each_token_after_the_document_start_by_default(llama, tmp_path):
    model, tok = llama
    ids = torch.tensor([9, 3, 50])
    default = bd.SignCache.build(model, tok, sites=["resid.1"], tokens=ids, progress=False)
    assert default.meta.bos is True and default.meta.bos_id == 1
    assert default.meta.bos_token == "<bos>" and default.meta.bos_rule == "bos"
    explicit = bd.SignCache.build(model, tok, sites=["resid.1"], bos=True, tokens=ids, progress=False)
    alone = bd.SignCache.build(model, tok, sites=["resid.1"], bos=False, tokens=ids, progress=False)
    assert torch.equal(default.packed("resid.1"), explicit.packed("resid.1"))
    assert not torch.equal(default.packed("resid.1"), alone.packed("resid.1"))
    other = bd.SignCache.build(model, tok, sites=["resid.1"], bos_token="<eos>", tokens=ids,
                               progress=False)
    with torch.no_grad():
        hs = model(torch.stack([torch.full_like(ids, 2), ids], 1), output_hidden_states=True).hidden_states
    assert other.meta.bos_id == 2 and other.meta.bos_rule == "given"
    assert torch.equal(other.signs("resid.1"), torch.where(hs[2][:, -1] > 0, 1, -1).to(torch.int8))
    # a checkpoint left by a build with another start token is refused, not mixed in
    bd.SignCache.build(model, tok, sites=["resid.1"], tokens=ids, checkpoint=tmp_path / "ck",
                       progress=False)
    with pytest.raises(ResumeError, match="other settings"):
        bd.SignCache.build(model, tok, sites=["resid.1"], tokens=ids, bos_token="<eos>",
                           checkpoint=tmp_path / "ck", progress=False)
    encoder = bd.SignCache.build(tiny.make("bert"), tok, sites=["resid.0"], tokens=ids, progress=False)
    assert encoder.meta.bos is False and encoder.meta.bos_rule == "off"


def test_batch_size_does_not_change_signs(llama):
    model, tok = llama
    a = bd.SignCache.build(model, tok, sites=["resid.2"], batch_size=7, progress=False)
    b = bd.SignCache.build(model, tok, sites=["resid.2"], batch_size=64, progress=False)
    assert torch.equal(a.packed("resid.2"), b.packed("resid.2"))


def test_save_load_roundtrip_memory_mapped_and_checked(llama, tmp_path):
    model, tok = llama
    cache = bd.SignCache.build(model, tok, sites=["resid.*"], magnitudes=True, progress=False)
    path = cache.save(tmp_path / "c")
    assert sorted(os.listdir(path)) == ["magnitudes.safetensors", "meta.json", "signs.safetensors"]
    loaded = bd.SignCache.load(path, model=model, tokenizer=tok)
    assert isinstance(loaded._signs["resid.1"], np.memmap)
    assert torch.equal(loaded.packed("resid.1"), cache.packed("resid.1"))
    torch.testing.assert_close(loaded.magnitudes("resid.0"), cache.magnitudes("resid.0"))
    meta = json.loads((path / "meta.json").read_text())
    assert meta["bit_order"] == "little" and meta["sites"]["resid.0"] == tiny.D
    with pytest.raises(FileExistsError, match="overwrite"):
        cache.save(path)
    cache.save(path, overwrite=True)


def test_refuses_another_model_or_tokenizer(llama, tmp_path):
    model, tok = llama
    path = bd.SignCache.build(model, tok, sites=["resid.0"], progress=False).save(tmp_path / "c")
    other = tiny.make("llama", seed=1)
    with pytest.raises(CacheError, match="not from the model given"):
        bd.SignCache.load(path, model=other)
    with pytest.raises(CacheError, match="tokenizer"):
        bd.SignCache.load(path, tokenizer=tiny.tokenizer(vocab_size=tiny.VOCAB - 1))


def test_corrupt_or_truncated_files_fail_clearly(llama, tmp_path):
    model, tok = llama
    path = bd.SignCache.build(model, tok, sites=["resid.0"], progress=False).save(tmp_path / "c")
    signs = path / "signs.safetensors"
    data = bytearray(signs.read_bytes())
    data[-5] ^= 0xFF
    signs.write_bytes(bytes(data))
    with pytest.raises(CacheError, match="corrupt"):
        bd.SignCache.load(path)
    signs.write_bytes(bytes(data[:-40]))
    with pytest.raises(CacheError, match="truncated"):
        bd.SignCache.load(path, verify=False)
    (path / "meta.json").write_text("{not json")
    with pytest.raises(CacheError, match="corrupt"):
        bd.SignCache.load(path)
    with pytest.raises(CacheError, match="not a sign cache"):
        bd.SignCache.load(tmp_path / "nowhere")


def test_bad_inputs(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="empty"):
        bd.SignCache.build(model, tok, sites=["resid.0"], tokens=[], progress=False)
    with pytest.raises(IndexError):
        bd.SignCache.build(model, tok, sites=["resid.0"], tokens=[tiny.VOCAB + 3], progress=False)
    with pytest.raises(bd.UnknownSite):
        bd.SignCache.build(model, tok, sites=["resid.9"], progress=False)


def _child(out, ckpt, kill_after):
    return subprocess.run([sys.executable, os.path.join(HERE, "_build_cache_child.py"), str(out),
                           str(ckpt), str(kill_after)], capture_output=True, text=True)


def test_sigkill_then_resume_is_byte_identical(tmp_path):
    ref = _child(tmp_path / "ref", tmp_path / "ref.partial", 0)
    assert ref.returncode == 0, ref.stderr
    killed = _child(tmp_path / "run", tmp_path / "run.partial", 3)
    assert killed.returncode == -9  # SIGKILL
    done = sorted(os.listdir(tmp_path / "run.partial"))
    assert len([f for f in done if f.startswith("chunk-")]) == 3 and not (tmp_path / "run").exists()
    resumed = _child(tmp_path / "run", tmp_path / "run.partial", 0)
    assert resumed.returncode == 0, resumed.stderr
    for name in ("signs.safetensors", "magnitudes.safetensors"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    assert not (tmp_path / "run.partial").exists()  # the checkpoint is cleaned after save


def test_resume_with_other_sites_is_refused_by_name(llama, tmp_path):
    model, tok = llama
    ids = torch.arange(10)
    bd.SignCache.build(model, tok, sites=["resid.0"], tokens=ids, checkpoint=tmp_path / "ck",
                       progress=False)
    with pytest.raises(ResumeError, match="sites"):
        bd.SignCache.build(model, tok, sites=["resid.0", "final"], tokens=ids,
                           checkpoint=tmp_path / "ck", progress=False)
    # the same settings resume (nothing to recompute) and give the same signs
    again = bd.SignCache.build(model, tok, sites=["resid.0"], tokens=ids, checkpoint=tmp_path / "ck",
                               progress=False)
    fresh = bd.SignCache.build(model, tok, sites=["resid.0"], tokens=ids, progress=False)
    assert torch.equal(again.packed("resid.0"), fresh.packed("resid.0"))


def test_damaged_checkpoint_chunk_is_recomputed_not_trusted(llama, tmp_path):
    model, tok = llama
    kw = dict(sites=["resid.0"], tokens=torch.arange(40), batch_size=8, chunk_size=16,
              checkpoint=tmp_path / "ck", progress=False)
    ref = bd.SignCache.build(model, tok, **kw)
    chunk = tmp_path / "ck" / "chunk-000001.safetensors"
    data = bytearray(chunk.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit inside the packed signs: the file still parses
    chunk.write_bytes(bytes(data))
    again = bd.SignCache.build(model, tok, **kw)
    assert torch.equal(again.packed("resid.0"), ref.packed("resid.0"))


def test_a_second_build_into_a_checkpoint_in_use_is_refused(llama, tmp_path):
    """Another process (here: an open lock, as a second process would hold it) building into the
    same checkpoint directory is refused by name, not joined unannounced; once it is gone the
    build runs and equals a build without a checkpoint."""
    from bagofdims.signs.checkpoint import LOCK
    from bagofdims.storage import exclusive

    model, tok = llama
    kw = dict(sites=["resid.0"], tokens=torch.arange(20), chunk_size=8, progress=False)
    (tmp_path / "ck").mkdir()
    with exclusive(tmp_path / "ck" / LOCK, lambda: AssertionError("the test holds no lock yet")):
        with pytest.raises(ResumeError, match="being computed into by another"):
            bd.SignCache.build(model, tok, checkpoint=tmp_path / "ck", **kw)
        assert not list((tmp_path / "ck").glob("chunk-*"))  # it computed nothing
    built = bd.SignCache.build(model, tok, checkpoint=tmp_path / "ck", **kw)
    assert torch.equal(built.packed("resid.0"),
                       bd.SignCache.build(model, tok, **kw).packed("resid.0"))
