import json
import os
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

import bagofdims as bd
from bagofdims import stream
from bagofdims.errors import (AlreadyExists, InvalidArgument, InvalidType, NumericalError,
                              ResumeError, StoreError, UnknownSite)
from bagofdims.stream import ActivationStore, write_activations

import tiny

HERE = os.path.dirname(__file__)
TEXTS = [" ".join(f"w{(7 * i + j) % 90 + 3}" for j in range(3 + i % 5)) for i in range(13)]
SITES = ["resid.0", "k.2"]
KW = dict(batch_size=4, shard_tokens=16, dtype=torch.float32, progress=False)


@pytest.fixture(scope="module")
def llama():
    return tiny.make("llama"), tiny.tokenizer()


@pytest.fixture(scope="module")
def full(llama, tmp_path_factory):
    """An uninterrupted store (the same run the SIGKILL child makes)."""
    model, tok = llama
    return write_activations(model, tok, TEXTS, SITES, tmp_path_factory.mktemp("s") / "full", **KW)


@pytest.fixture
def copy(full, tmp_path):
    """A private copy of the full store, to damage."""
    return _copy_store(full, tmp_path / "copy")


def _copy_store(src, dst):
    shutil.copytree(src, dst)
    return dst


def _index(path):
    return json.loads((path / "index.json").read_text())


def _set_index(path, index):
    (path / "index.json").write_text(json.dumps(index))


def _direct(model, tok, site):
    rows = []
    for text in TEXTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad(), bd.Capture(model, [site]) as cap:
            model(ids)
        rows.append(cap[site][0])
    return torch.cat(rows)


def test_streamed_states_equal_direct_capture(llama, tmp_path):
    model, tok = llama
    out = write_activations(model, tok, TEXTS, ["resid.1", "k.2"], tmp_path / "acts", batch_size=4,
                            shard_tokens=16, dtype=torch.float32, progress=False)
    store = ActivationStore(out)
    assert store.sites == ["resid.1", "k.2"] and len(store.index["shards"]) > 2
    n_tokens = sum(len(t.split()) for t in TEXTS)
    assert store.n_tokens == n_tokens
    torch.testing.assert_close(store.load("resid.1"), _direct(model, tok, "resid.1"), atol=1e-5, rtol=0)
    docs = store.load("doc")
    assert docs.tolist() == sorted(docs.tolist()) and int(docs.max()) == len(TEXTS) - 1
    assert store.load("pos")[:3].tolist() == [0, 1, 2]
    assert bd.hook_count(model) == 0
    assert store.complete and store.n_docs == len(TEXTS)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_left_padded_texts_are_read_at_their_own_positions(family, tmp_path):
    # GPT-2's absolute position embeddings gave left-padded texts shifted states (max error 0.1)
    model, tok = tiny.make(family), tiny.tokenizer()
    tok.padding_side = "left"
    out = write_activations(model, tok, TEXTS, ["resid.1"], tmp_path / "s", **KW)
    torch.testing.assert_close(ActivationStore(out).load("resid.1"), _direct(model, tok, "resid.1"),
                               atol=1e-5, rtol=0)


def test_resume_after_interruption_gives_the_same_shards(llama, tmp_path):
    model, tok = llama
    kw = dict(batch_size=4, shard_tokens=16, dtype=torch.float32, progress=False)
    full = write_activations(model, tok, TEXTS, ["resid.0"], tmp_path / "full", **kw)
    part = write_activations(model, tok, TEXTS, ["resid.0"], tmp_path / "part", **kw)
    # simulate a kill after the first shard: drop the later shards from the index and disk
    index = json.loads((part / "index.json").read_text())
    for shard in index["shards"][1:]:
        (part / shard["file"]).unlink()
    index["shards"] = index["shards"][:1]
    index["complete"] = False
    (part / "index.json").write_text(json.dumps(index))
    write_activations(model, tok, TEXTS, ["resid.0"], part, **kw)
    for a, b in zip(sorted(full.glob("shard-*")), sorted(part.glob("shard-*"))):
        assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        write_activations(model, tok, TEXTS, ["resid.1"], part, **kw)
    with pytest.raises(FileNotFoundError, match="write_activations"):
        ActivationStore(tmp_path / "nowhere")


# -- 1. an interrupted store is refused unless its finished part is asked for -------------------
def test_interrupted_store_is_refused_unless_partial(llama, full, tmp_path, monkeypatch):
    model, tok = llama
    original, done = stream._flush, []

    def flush_twice(*args):
        if len(done) == 2:
            raise KeyboardInterrupt
        original(*args)
        done.append(1)

    monkeypatch.setattr(stream, "_flush", flush_twice)
    with pytest.raises(KeyboardInterrupt):
        write_activations(model, tok, TEXTS, SITES, tmp_path / "part", **KW)
    with pytest.raises(StoreError, match="interrupted; rerun write_activations with the same texts"):
        ActivationStore(tmp_path / "part")
    part, ref = ActivationStore(tmp_path / "part", allow_partial=True), ActivationStore(full)
    assert not part.complete and part.n_shards == 2 and part.n_docs == 8
    n = part.n_tokens
    assert 0 < n < ref.n_tokens
    assert torch.equal(part.load("k.2"), ref.load("k.2")[:n])


# -- 2. a resume refuses any other setting, naming it ------------------------------------------
@pytest.mark.parametrize("change, setting", [
    (dict(texts=TEXTS[:12] + ["w5 w6 w7"]), "texts differ"),
    (dict(texts=TEXTS + ["w5"]), "number of texts"),
    (dict(max_length=4), "max_length"),
    (dict(batch_size=3), "batch_size"),
    (dict(dtype=torch.float16), "dtype"),
    (dict(sites=["resid.0"]), "sites"),
    (dict(model=1), "weights differ"),
    (dict(tokenizer="left"), "padding_side"),
])
def test_resume_with_other_settings_names_the_setting(llama, full, tmp_path, change, setting):
    model, tok = llama
    out = _copy_store(full, tmp_path / "s")
    args = dict(model=model, tokenizer=tok, texts=TEXTS, sites=SITES, **KW)
    args.update(change)
    if change.get("model") == 1:
        args["model"] = tiny.make("llama", seed=1)
    if change.get("tokenizer") == "left":
        args["tokenizer"] = tiny.tokenizer()
        args["tokenizer"].padding_side = "left"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ResumeError, match=setting) as err:
        write_activations(out=out, **args)
    assert "overwrite=True" in str(err.value) and "another directory" in str(err.value)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != ".lock"} == \
        {k: v for k, v in before.items() if k != ".lock"}
    # overwrite=True replaces the store, leaving no shard of the old one
    write_activations(out=out, overwrite=True, **args)
    store = ActivationStore(out)
    assert store.n_docs == len(args["texts"])
    assert sorted(p.name for p in out.glob("shard-*")) == [s["file"] for s in store.index["shards"]]


def test_index_records_every_setting_and_checksums(full):
    index = _index(full)
    s = index["settings"]
    assert index["complete"] is True and index["format"] == stream.FORMAT
    assert s["texts_sha256"] == stream.texts_sha256(TEXTS) != stream.texts_sha256(["ab", "c"])
    assert stream.texts_sha256(["ab", "c"]) != stream.texts_sha256(["a", "bc"])
    assert s["weights"] == bd.models.weight_fingerprint(tiny.make("llama"))
    assert {"model", "tokenizer", "start_token", "sites", "max_length", "batch_size", "dtype"} <= set(s)
    for shard in index["shards"]:
        assert shard["sha256"] == bd.storage.sha256(full / shard["file"])
        assert shard["bytes"] == (full / shard["file"]).stat().st_size


# -- 3. checksums ------------------------------------------------------------------------------
def test_flipped_byte_is_caught_naming_the_shard(copy):
    path = copy / "shard-00001.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))
    store = ActivationStore(copy)  # construction only stats the files
    with pytest.raises(StoreError, match="shard-00001.safetensors does not match its sha256"):
        store.load("resid.0")
    with pytest.raises(StoreError, match="shard-00001"):
        ActivationStore(copy).check()
    # verify=False keeps reads lazy: the header is still checked, the data is not hashed
    assert ActivationStore(copy, verify=False).load("resid.0").shape[0] == store.n_tokens


def test_shard_from_another_store_or_truncated_is_caught(llama, full, copy, tmp_path):
    model, tok = llama
    # same texts and sizes, other weights: only the checksum tells the shards apart
    other = write_activations(tiny.make("llama", seed=1), tok, TEXTS, SITES, tmp_path / "o", **KW)
    shutil.copy(other / "shard-00000.safetensors", copy / "shard-00000.safetensors")
    with pytest.raises(StoreError, match="shard-00000.safetensors does not match its sha256"):
        ActivationStore(copy).load("doc")
    shutil.copy(full / "shard-00000.safetensors", copy / "shard-00000.safetensors")
    path = copy / "shard-00002.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(StoreError, match="shard-00002.safetensors has .* bytes"):
        ActivationStore(copy)
    path.unlink()
    with pytest.raises(StoreError, match="shard-00002.safetensors is missing"):
        ActivationStore(copy)


# -- 5. bad inputs (bad indexes and shard headers: test_stream_index.py) ---------------------------------------------
@pytest.mark.parametrize("change, error, match", [
    (dict(texts=[""]), InvalidArgument, r"texts\[0\] is empty"),
    (dict(texts=[]), InvalidArgument, "texts is empty"),
    (dict(texts="w3 w4"), InvalidType, "list of str"),
    (dict(texts=(t for t in TEXTS)), InvalidType, "generator"),
    (dict(texts=["w3", 4]), InvalidType, r"texts\[1\] is a int"),
    (dict(texts=["w3", b"w4"]), InvalidType, r"texts\[1\] is a bytes"),
    (dict(batch_size=0), InvalidArgument, "batch_size must be positive"),
    (dict(batch_size=-2), InvalidArgument, "batch_size must be positive"),
    (dict(batch_size=2.0), InvalidType, "batch_size must be an int"),
    (dict(max_length=0), InvalidArgument, "max_length must be positive"),
    (dict(shard_tokens=-1), InvalidArgument, "shard_tokens must be positive"),
    (dict(sites=["resid.9"]), UnknownSite, "resid.9"),
    (dict(sites=[]), UnknownSite, "No sites"),
    (dict(dtype=torch.bfloat16), InvalidArgument, "float16 or torch.float32"),
])
def test_bad_arguments_are_refused_before_writing(llama, tmp_path, change, error, match):
    model, tok = llama
    args = dict(texts=TEXTS, sites=SITES, **KW)
    args.update(change)
    with pytest.raises(error, match=match):
        write_activations(model, tok, out=tmp_path / "x", **args)
    assert not (tmp_path / "x").exists()


def test_texts_without_tokens_and_overflow_are_clear_errors(llama, tmp_path):
    model, tok = llama
    with pytest.raises(InvalidArgument, match="give no tokens"):
        write_activations(model, tok, ["  ", " "], SITES, tmp_path / "blank", **KW)
    loud = tiny.make("llama")
    with torch.no_grad():
        loud.model.embed_tokens.weight.mul_(1e9)
    with pytest.raises(NumericalError, match="float16's range: pass dtype=torch.float32"):
        write_activations(loud, tok, TEXTS, ["embed"], tmp_path / "loud", progress=False)
    no_pad = tiny.tokenizer()
    no_pad.pad_token = None
    with pytest.raises(InvalidArgument, match="pad token"):
        write_activations(model, no_pad, TEXTS, SITES, tmp_path / "nopad", **KW)


def test_a_directory_of_other_files_or_a_second_writer_is_refused(llama, tmp_path):
    model, tok = llama
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(AlreadyExists, match="notes.txt"):
        write_activations(model, tok, TEXTS, SITES, tmp_path / "mine", **KW)
    fcntl = pytest.importorskip("fcntl")
    (tmp_path / "busy").mkdir()
    with open(tmp_path / "busy" / ".lock", "wb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(StoreError, match="being written by another process"):
            write_activations(model, tok, TEXTS, SITES, tmp_path / "busy", **KW)


def test_partial_store_with_no_finished_shard_reads_empty(llama, tmp_path, monkeypatch):
    model, tok = llama

    def interrupt(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(stream, "_flush", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_activations(model, tok, TEXTS, SITES, tmp_path / "s", **KW)
    store = ActivationStore(tmp_path / "s", allow_partial=True)
    assert store.n_tokens == 0 and store.load("doc").shape == (0,)
    assert store.load("resid.0").shape[0] == 0


# -- 6. a kill at any point, then resume: byte-identical ---------------------------------------
def _child(out, texts_path, n):
    return subprocess.run([sys.executable, os.path.join(HERE, "_stream_child.py"), str(out),
                           str(texts_path), str(n)], capture_output=True, text=True)


class Killed(BaseException):
    """Stands in for SIGKILL in-process: nothing on disk is cleaned up after it."""


def _kill_in_process(monkeypatch, point, n):
    """Patch the writer to raise Killed with shard ``n`` half-written under its temporary name
    ("tmp"), renamed into place but unlisted ("renamed"), or just listed ("indexed")."""
    if point == "tmp":
        calls, save = [], stream.save_file

        def save_then_die(data, path):
            save(data, path)
            calls.append(path)
            if len(calls) == n:
                with open(path, "r+b") as f:
                    f.truncate(os.path.getsize(path) // 2)
                raise Killed

        monkeypatch.setattr(stream, "save_file", save_then_die)
    else:
        write = stream.write_json

        def write_then_die(path, index):
            if point == "renamed" and len(index["shards"]) == n:
                raise Killed
            write(path, index)
            if point == "indexed" and len(index["shards"]) == n:
                raise Killed

        monkeypatch.setattr(stream, "write_json", write_then_die)


def _check_killed_then_resumed(model, tok, full, out, listed):
    with pytest.raises(StoreError, match="interrupted"):
        ActivationStore(out)
    part = ActivationStore(out, allow_partial=True)
    assert part.n_shards == listed
    for i in range(listed):
        name = f"shard-{i:05d}.safetensors"
        assert (out / name).read_bytes() == (full / name).read_bytes()
    write_activations(model, tok, TEXTS, SITES, out, **KW)
    assert _index(out) == _index(full)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in full.iterdir())
    for p in full.glob("shard-*"):
        assert (out / p.name).read_bytes() == p.read_bytes()
    ActivationStore(out).check()


def test_sigkill_then_resume_is_byte_identical(llama, full, tmp_path):
    # killed after shard 2 is renamed into place, before the index lists it
    texts_path = tmp_path / "texts.json"
    texts_path.write_text(json.dumps(TEXTS))
    killed = _child(tmp_path / "run", texts_path, 2)
    assert killed.returncode == -9, killed.stderr  # SIGKILL
    assert (tmp_path / "run" / "shard-00001.safetensors").exists()  # written but not listed
    _check_killed_then_resumed(*llama, full, tmp_path / "run", listed=1)


@pytest.mark.parametrize("point, listed", [("tmp", 1), ("renamed", 1), ("indexed", 2)])
def test_kill_at_each_write_step_then_resume_is_byte_identical(llama, full, tmp_path, monkeypatch,
                                                                point, listed):
    model, tok = llama
    _kill_in_process(monkeypatch, point, 2)
    with pytest.raises(Killed):
        write_activations(model, tok, TEXTS, SITES, tmp_path / "run", **KW)
    monkeypatch.undo()
    if point == "tmp":
        assert any(p.name.startswith(".shard-00001") for p in (tmp_path / "run").iterdir())
    _check_killed_then_resumed(model, tok, full, tmp_path / "run", listed)


# -- 7. reads from several threads ---------------------------------------------------------------
def test_concurrent_reads_match_a_single_threaded_read(full):
    expected = ActivationStore(full)
    want = {(i, k): np.array(expected.shard(i)[k]) for i in range(expected.n_shards)
            for k in SITES + ["doc"]}
    store = ActivationStore(full)  # fresh: the first reads also race on verification
    jobs = list(enumerate(key for key in want for _ in range(3)))
    barrier = threading.Barrier(8)

    def read(job):
        n, (i, k) = job
        if n < 8:  # the first eight reads start together
            barrier.wait(timeout=60)
        key = (i, k)
        return key, np.array(store.shard(i)[k]), store.load(k)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(read, jobs))
    for key, got, whole in results:
        assert np.array_equal(got, want[key])
        assert torch.equal(whole, expected.load(key[1]))
