"""After a failure the model, its hooks and the files on disk are as before."""

import pytest
import torch

import bagofdims as bd
import tiny
from bagofdims.errors import NumericalError, OutOfRange
from bagofdims.features.feature import Feature
from bagofdims.steering.interventions import sign_flip


def test_failed_flip_leaves_the_model_as_it_was():
    model = tiny.make("llama")
    x = {"input_ids": torch.tensor([[5, 6, 7, 8]])}
    with torch.no_grad():
        clean = model(**x).logits
    with pytest.raises(OutOfRange):
        with torch.no_grad(), sign_flip(model, Feature("f", "resid.1", [0, 1], [1, -1]), positions=9):
            model(**x)
    with torch.no_grad():
        assert torch.equal(model(**x).logits, clean)
    assert bd.hook_count(model) == 0


def test_failed_build_writes_nothing_and_leaves_no_hooks(tmp_path):
    model, tok = tiny.make("llama"), tiny.tokenizer()
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(NumericalError, match="NaN"):
        bd.SignCache.build(model, tok, sites=["resid.*"], checkpoint=tmp_path / "ck", progress=False)
    assert bd.hook_count(model) == 0
    assert not [p for p in (tmp_path / "ck").iterdir() if p.name.startswith("chunk-")]


def test_failed_save_keeps_the_existing_directory(tmp_path):
    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], progress=False)
    path = cache.save(tmp_path / "c")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    broken = bd.SignCache(cache.meta, {**cache._signs, "resid.1": None}, None)
    with pytest.raises(Exception):
        broken.save(path, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]
