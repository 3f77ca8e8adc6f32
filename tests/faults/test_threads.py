"""Public objects shared by threads give the single-threaded answer."""

from concurrent.futures import ThreadPoolExecutor

import torch

import bagofdims as bd
import planted
import tiny


def _parallel(fn, args, workers=8):
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, args))


def test_sign_cache_rows_and_signs_from_many_threads():
    cache, _, _ = planted.make_cache()
    cache._row_of = None
    ids = [torch.randperm(len(cache), generator=torch.Generator().manual_seed(i))[:50] for i in range(64)]
    # a partial cache exercises the lazily built row map
    part = bd.SignCache(cache.meta.__class__(**{**cache.meta.__dict__, "full_vocab": False}),
                        cache._signs, None)
    want = [cache.signs("resid.0", tokens=t) for t in ids]
    got = _parallel(lambda t: part.signs("resid.0", tokens=t), ids)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_catalog_queries_and_lazy_cache_from_many_threads(tmp_path):
    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], progress=False).save(tmp_path / "cache")
    cache = bd.SignCache.load(cache)
    cats = {"low": [f"w{i}" for i in range(3, 33)], "high": [f"w{i}" for i in range(50, 80)]}
    bd.Catalog.build(cache, categories=cats, tokenizer=tok, sites="resid.1", n_anchors=12,
                     n_min_held_out=5, progress=False).save(tmp_path / "cat")
    fresh = bd.Catalog.load(tmp_path / "cat", tokenizer=tok)  # cache not loaded yet
    want = bd.Catalog.load(tmp_path / "cat", tokenizer=tok).top_tokens("low", k=5)
    got = _parallel(lambda _: fresh.top_tokens("low", k=5), range(16))
    assert all(g == want for g in got)
    texts = ["w5 w50 w7", "w60 w61", "w3 w4 w5 w6", "w70"] * 4
    want = [fresh.read(t, model=model, site="resid.1") for t in texts]
    got = _parallel(lambda t: fresh.read(t, model=model, site="resid.1"), texts)
    assert got == want
    assert bd.hook_count(model) == 0


def test_agreement_from_threads_leaves_fp32_matmul_precision_alone():
    """A process-wide precision switch flipped by one thread would lower every other thread's
    fp32 products (it once did: threads racing on save/restore left it at "medium")."""
    from bagofdims.signs import bits

    before = torch.get_float32_matmul_precision()
    a = bits.pack_signs(torch.randn(64, 40))
    want = bits.agreement_popcount(a, a, 40)
    got = _parallel(lambda _: bits.agreement(a, a, 40), range(64))
    assert all(torch.equal(g, want) for g in got)
    assert torch.get_float32_matmul_precision() == before == "highest"
