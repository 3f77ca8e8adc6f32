import dataclasses
import json

import pytest
import torch

import bagofdims as bd
from bagofdims.catalog import CatalogError

import planted
import tiny


@pytest.fixture(scope="module")
def built():
    cat, cache, tok, _ = planted.make_catalog()
    return cat, cache, tok


def test_build_one_feature_per_category_and_site(built):
    cat, cache, _ = built
    assert sorted(cat.names) == ["alpha", "beta", "gamma"] and cat.sites == ["resid.0", "resid.1"]
    assert len(cat) == 6
    f = cat["alpha"]
    assert f.site == "resid.0"  # the planted site wins on anchor AUC, not the noise site
    assert len(f.anchors) == 50 and len(f.held_out) == 40
    assert not set(f.anchors) & set(f.held_out)
    assert f.metrics["held_out_auc"] > 0.95 and f.metrics["hard_auc"] > 0.95
    noise = cat.get("alpha", "resid.1")
    assert 0.3 < noise.metrics["held_out_auc"] < 0.7  # no structure at resid.1: chance
    assert f.threshold is not None and 0 < f.threshold <= 1
    assert f.id == "planted/resid.0/" + str(f.index) and cat[f.id] is f
    assert cat["alpha", "resid.1"] is noise


def test_queries(built):
    cat, cache, tok = built
    top = cat.top_tokens("beta", k=20)
    assert len(top) == 20
    member_words = {f"w{i}" for i in range(300, 390)}
    assert sum(w in member_words for w, _ in top) >= 18
    assert [f.name for f in cat.search("gam")] == ["gamma"]
    assert [f.name for f in cat.search("w305")] == ["beta"]  # by member word
    uses = cat.features_of_dim("resid.0", 13)
    assert ("beta", -1) in [(f.name, s) for f, s in uses]
    ex = cat.explain_dim("resid.0", 13, k=5)
    assert ("beta", -1) in ex["features"]
    # magnitudes rank tokens: most negative on a beta dim are beta members
    assert sum(w in member_words for w in ex["most_negative"]) >= 4
    with pytest.raises(KeyError, match="Did you mean"):
        cat["alph"]
    with pytest.raises(IndexError):
        cat.explain_dim("resid.0", 64)


def test_save_load_roundtrip_and_refusals(built, tmp_path):
    cat, cache, tok = built
    path = cat.save(tmp_path / "cat")
    data = json.loads((path / "catalog.json").read_text())
    assert data["meta"]["model"] == "planted" and len(data["features"]) == 6
    loaded = bd.Catalog.load(path, cache=cache)
    for a, b in zip(cat.features, loaded.features):
        assert a.name == b.name and torch.equal(a.dims, b.dims) and torch.equal(a.signs, b.signs)
        assert a.metrics == b.metrics
    other, _, _ = planted.make_cache(seed=1)
    other.meta = dataclasses.replace(other.meta, weights="other-weights", model="other")
    with pytest.raises(CatalogError, match="belongs to model 'planted'"):
        bd.Catalog.load(path, cache=other)
    with pytest.raises(CatalogError, match="belongs to model"):
        bd.Catalog.load(path, model=tiny.make("llama"))
    (path / "features.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CatalogError, match="corrupt"):
        bd.Catalog.load(path)
    with pytest.raises(CatalogError, match="not a catalog"):
        bd.Catalog.load(tmp_path / "nope")


def test_too_few_members_are_reported_not_silent():
    cache, tok, _ = planted.make_cache()
    cats = dict(planted.categories(), tiny_cat=["w1000", "w1001"])
    cat = bd.Catalog.build(cache, categories=cats, sites="resid.0", tokenizer=tok, progress=False)
    assert "tiny_cat" in cat.meta.skipped and "tiny_cat" not in cat.names


def test_forms_policy_is_passed_on_and_recorded(tmp_path):
    cache, tok, _ = planted.make_cache()
    cat = bd.Catalog.build(cache, categories=planted.categories(), sites="resid.0", tokenizer=tok,
                           progress=False, forms="both")
    assert cat.meta.forms == "both"
    cat.save(tmp_path / "c")
    assert bd.Catalog.load(tmp_path / "c", cache=cache).meta.forms == "both"
    with pytest.raises(ValueError, match="initial"):
        bd.Catalog.build(cache, categories=planted.categories(), sites="resid.0", tokenizer=tok,
                         progress=False, forms="space")


def test_read_scores_live_states_on_a_real_forward(tmp_path):
    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], progress=False)
    cats = {"lo": [f"w{i}" for i in range(3, 45)], "hi": [f"w{i}" for i in range(45, 90)]}
    cat = bd.Catalog.build(cache, categories=cats, sites=["resid.1"], tokenizer=tok,
                           n_anchors=20, n_min_held_out=5, progress=False)
    assert cat.read("w5 w50 w7", site="resid.1", model=model)[1]["token"] == "w50"
    for f in cat.features:
        f.threshold = 0.0  # every feature fires, so every score is checked below
    out = cat.read("w5 w50 w7", site="resid.1", model=model)
    assert [r["token"] for r in out] == ["w5", "w50", "w7"]
    # the text follows the cache's start token (<bos>, id 1), as the cached tokens did
    assert cat.meta.bos_id == cache.meta.bos_id == 1
    with torch.no_grad(), bd.Capture(model, ["resid.1"]) as cap:
        model(torch.tensor([[1] + tok("w5 w50 w7")["input_ids"]]))
    fired = 0
    for t, r in enumerate(out):
        for name, score in r["features"]:
            f = cat.get(name, "resid.1")
            assert score == pytest.approx(float(f.score(cap["resid.1"][0, t + 1])), abs=1e-6)
            assert score >= f.threshold
            fired += 1
    assert fired == 3 * 2
    assert bd.hook_count(model) == 0


def test_explain_dim_without_magnitudes_ranks_by_typicality_not_vocab_order():
    cat, cache, tok, _ = planted.make_catalog(sites=("resid.0",))
    no_mag = bd.SignCache(dataclasses.replace(cache.meta, magnitudes=False), cache._signs, None)
    cat2 = bd.Catalog(cat.features, cat.meta, cache=no_mag, tokenizer=tok)
    ex = cat2.explain_dim("resid.0", 3, k=10)  # a dim planted + for alpha (rows 100..189)
    assert ex["ranked_by"] == "typicality" and not ex["ranked"]
    members = {f"w{i}" for i in range(100, 190)}
    assert sum(t.strip() in members for t in ex["most_positive"]) >= 8
    vocab_order = [tok.decode([int(i)]) for i in (no_mag.signs("resid.0")[:, 3] > 0).nonzero()[:10, 0]]
    assert ex["most_positive"] != vocab_order
