"""Tracing on planted structure: FFN writers, coalitions, random controls, K/V survival."""

import pytest
import torch

import tiny
from bagofdims.signs.cache import SignCache
from bagofdims.features.feature import Feature
from bagofdims.steering.tracing import (down_proj, ffn_writers, gaussian_like, kv_survival,
                               random_init_copy, writer_controls)


def _features(width, n_feat=12, n_dims=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for c in range(n_feat):
        dims = torch.randperm(width, generator=g)[:n_dims]
        signs = torch.where(torch.rand(n_dims, generator=g) < 0.5, -1, 1)
        out.append(Feature(f"c{c}", "resid.1", dims, signs))
    return out


def test_planted_single_writer_is_found():
    w = gaussian_like(torch.empty(256, 512), seed=1)
    feats = _features(256)
    target = feats[3]
    w[target.dims, 77] = target.signs.float() * (0.5 + torch.rand(len(target)))  # exact match
    res = ffn_writers(w, feats, threshold=0.7, top_n=20)
    assert int(res.best_neuron[3]) == 77 and float(res.best_agreement[3]) == 1.0
    assert float(res.single_cv[3]) == 1.0  # chosen on half A, still perfect on half B
    # the other features see only Gaussian columns: none reaches 0.7 on 48 dims by chance... rarely
    others = torch.cat([res.best_agreement[:3], res.best_agreement[4:]])
    assert float(others.max()) < 1.0
    assert float(res.single_cv[torch.arange(12) != 3].mean()) < 0.7


def test_coalition_vote_and_cross_validation():
    torch.manual_seed(0)
    feats = _features(128, n_feat=6, n_dims=40)
    w = torch.randn(128, 600)
    # feature 0 gets a weak coalition: 150 columns that each agree on ~65% of its dims
    f = feats[0]
    noisy = torch.where(torch.rand(len(f), 150) < 0.65, 1.0, -1.0) * f.signs.float()[:, None]
    w[f.dims[:, None], torch.arange(150)[None, :]] = noisy * torch.rand(len(f), 150)
    res = ffn_writers(w, feats, threshold=0.7, top_n=100)
    assert float(res.coalition_cv[0]) > 0.95  # the vote of weak writers recovers the pattern
    # random columns: the in-sample vote looks good (selection bias), the held-out one does not
    assert float(res.coalition_cv[1:].mean()) < 0.7
    assert float(res.coalition[1:].mean()) > float(res.coalition_cv[1:].mean())
    summ = res.summary()
    assert summ["n_features"] == 6 and 0 <= summ["single_writer_fraction"] <= 1


def test_polarity_both_counts_negative_writers():
    feats = _features(64, n_feat=2, n_dims=32)
    w = gaussian_like(torch.empty(64, 100), seed=2)
    w[feats[0].dims, 5] = -feats[0].signs.float()  # writes the feature with a negative activation
    pos = ffn_writers(w, feats, polarity="positive")
    both = ffn_writers(w, feats, polarity="both")
    assert float(pos.best_agreement[0]) < 0.9
    assert int(both.best_neuron[0]) == 5 and float(both.best_agreement[0]) == 1.0
    assert float(both.single_cv[0]) == 1.0
    with pytest.raises(ValueError, match="polarity"):
        ffn_writers(w, feats, polarity="neg")


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3"])
def test_down_proj_columns_are_neuron_write_directions(family):
    model = tiny.make(family)
    w = down_proj(model, 1)
    assert w.shape[0] == 32 and w.shape[1] > 32
    if family == "llama":  # column j == what neuron j alone writes through the down projection
        e = torch.zeros(1, 1, w.shape[1])
        e[..., 7] = 1.0
        torch.testing.assert_close(model.model.layers[1].mlp.down_proj(e)[0, 0], w[:, 7])


def test_writer_controls_random_copy_is_deterministic_and_different():
    model = tiny.make("llama")
    a, b = random_init_copy(model, seed=4), random_init_copy(model, seed=4)
    assert torch.equal(down_proj(a, 0), down_proj(b, 0))
    assert not torch.equal(down_proj(a, 0), down_proj(model, 0))
    feats = [Feature("x", "resid.1", [0, 3, 5, 9], [1, -1, 1, 1])]
    res = writer_controls(model, feats, layer=1, top_n=5, random_model=a)
    assert set(res) == {"model", "gaussian", "random_init"}


def test_kv_survival_counts_on_tiny_cache():
    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = SignCache.build(model, tok, sites=["embed", "resid.*", "k.*", "v.*"], progress=False)
    cats = {"low": [f"w{i}" for i in range(3, 30)], "high": [f"w{i}" for i in range(60, 90)]}
    out = kv_survival(cache, layers=[0, 2], categories=cats, tokenizer=tok, thresholds=(0.5, 0.99),
                      n_anchors=12, n_min_held_out=5)
    assert set(out["sites"]) == {"embed", "resid.0", "k.0", "v.0", "resid.2", "k.2", "v.2"}
    for site, row in out["sites"].items():
        assert row["n_categories"] == 2
        assert row["discoverable"]["0.5"] >= row["discoverable"]["0.99"]
        assert 0.0 <= row["mean_held_out_auc"] <= 1.0
        # each site's own references (the catalog's evidence): counted and reported
        assert 0 <= row["above_null"] <= 2 and 0.0 < row["median_null_listed_auc"] < 1.0
    with pytest.raises(ValueError, match="build"):
        kv_survival(cache, layers=[7], categories=cats, tokenizer=tok, n_anchors=12,
                    n_min_held_out=5)


def test_rotary_key_signs_join_the_cache_and_survival_reads_them():
    from experiments.kv_rotary import with_rotary_keys

    from bagofdims.signs import bits
    from bagofdims.steering.tracing import rotary_keys

    model, tok = tiny.make("llama").eval(), tiny.tokenizer()
    cache = SignCache.build(model, tok, sites=["embed", "k.*", "v.*"], progress=False)
    rotated, agreement = with_rotary_keys(cache, model, [0, 2], batch_size=7, progress=False)
    assert set(agreement) == {"k.0", "k.2"} and min(agreement.values()) > 0.999
    assert set(rotated.sites) == set(cache.sites) | {"k_rot.0", "k_rot.2"}
    t = cache.token_ids[:5]
    ids = torch.stack([torch.full_like(t, cache.meta.bos_id), t], 1)
    with torch.no_grad():
        want = rotary_keys(model.get_decoder(), [2], input_ids=ids)["k_rot.2"][:, -1]
    assert torch.equal(rotated.packed("k_rot.2")[:5], bits.pack_signs(want))
    assert torch.equal(rotated.packed("v.2"), cache.packed("v.2"))  # the other sites unchanged
    cats = {"low": [f"w{i}" for i in range(3, 30)], "high": [f"w{i}" for i in range(60, 90)]}
    out = kv_survival(rotated, layers=[0, 2], categories=cats, tokenizer=tok, n_anchors=12,
                      n_min_held_out=5, kinds=("k", "k_rot", "v"))
    assert {"k_rot.0", "k_rot.2", "k.2", "embed"} <= set(out["sites"])
