"""SIGKILL at chosen points of a save over an existing cache or catalog: afterwards the old or
the new one loads whole (never neither, never a mix) and the leftovers are cleaned."""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import bagofdims as bd
import tiny

HERE = os.path.dirname(__file__)


def _run(kind, target, point, seed):
    return subprocess.run([sys.executable, os.path.join(HERE, "_kill_child.py"), kind, str(target),
                           point, str(seed)], capture_output=True, text=True)


def _load(kind, path):
    if kind == "cache":
        return bd.SignCache.load(path)
    return bd.Catalog.load(path)


def _content(kind, obj):
    if kind == "cache":
        return obj.packed("resid.1").clone(), obj.meta.weights
    return [f.dims.tolist() for f in obj.features], obj.meta.weights


@pytest.fixture(scope="module", params=["cache", "catalog"])
def saved(request, tmp_path_factory):
    """An existing directory (seed 0) and the content a save of seed 1 gives."""
    kind = request.param
    root = tmp_path_factory.mktemp(kind)
    assert _run(kind, root / "old", "none", 0).returncode == 0
    assert _run(kind, root / "new", "none", 1).returncode == 0
    return kind, root / "old", _content(kind, _load(kind, root / "old")), \
        _content(kind, _load(kind, root / "new"))


@pytest.mark.parametrize("point, expect", [("fill", "old"), ("between", "old"),
                                           ("exchanged", "new")])
def test_killed_replacement_leaves_old_or_new_whole(tmp_path, saved, point, expect):
    kind, template, old, new = saved
    target = tmp_path / kind
    shutil.copytree(template, target)
    assert old[1] != new[1]

    killed = _run(kind, target, point, 1)
    assert killed.returncode == -9, killed.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{kind}.")]
    assert leftovers, "the kill should leave a temp or old directory behind"

    got = _content(kind, _load(kind, target))  # load completes or cleans what the kill left
    want = old if expect == "old" else new
    assert got[1] == want[1]
    if kind == "cache":
        assert torch.equal(got[0], want[0])
    else:
        assert got[0] == want[0]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{kind}.")]


def test_stale_temp_of_a_dead_writer_is_cleaned_but_a_live_ones_is_kept(tmp_path):
    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], progress=False)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    stale = tmp_path / f".c.tmp-{int(dead.stdout)}"
    stale.mkdir()
    (stale / "signs.safetensors").write_bytes(b"x" * 100)
    live = tmp_path / f".c.tmp-{os.getppid()}"  # a live process: a writer still at work
    live.mkdir()
    cache.save(tmp_path / "c")
    assert not stale.exists() and live.exists()
