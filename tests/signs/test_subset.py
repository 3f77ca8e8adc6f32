"""Subset caches (category members + a seeded random background) and catalogs built on them."""

import dataclasses
import json

import pytest
import torch

import bagofdims as bd
import tiny
from bagofdims.errors import CacheError, InvalidArgument
from bagofdims.features import evidence
from bagofdims.features.evidence import EvidenceConfig
from bagofdims.signs.subset import build_subset, subset_tokens, token_population

CATS = {"lo": [f"w{i}" for i in range(10, 40)], "hi": [f"w{i}" for i in range(50, 80)],
        "gone": ["not-a-token", "nor this"]}
MEMBERS = list(range(10, 40)) + list(range(50, 80))


@pytest.fixture(scope="module")
def model_tok():
    return tiny.make("llama"), tiny.tokenizer()


@pytest.fixture(scope="module")
def subset_cache(model_tok, tmp_path_factory):
    model, tok = model_tok
    cache = build_subset(model, tok, CATS, background=40, seed=3, sites=["resid.1", "resid.2"],
                         progress=False)
    path = cache.save(tmp_path_factory.mktemp("subset") / "cache")
    return bd.SignCache.load(path, model=model, tokenizer=tok)


def test_subset_tokens_are_the_members_plus_a_seeded_background(tmp_path):
    tok = tiny.tokenizer()
    spec = subset_tokens(tok, CATS, background=40, seed=3)
    assert spec.member_ids.tolist() == MEMBERS  # every listed word that is one token, no other
    bg = spec.background_ids
    assert len(bg) == 40 == len(bg.unique()) and torch.equal(bg, bg.sort().values)
    assert 0 <= int(bg.min()) and int(bg.max()) < tiny.VOCAB
    assert torch.equal(spec.token_ids, torch.unique(torch.cat([spec.member_ids, bg])))
    assert torch.equal(subset_tokens(tok, CATS, background=40, seed=3).background_ids, bg)
    assert not torch.equal(subset_tokens(tok, CATS, background=40, seed=4).background_ids, bg)
    rec = spec.record()
    assert rec["rule"] == "categories+background" and rec["categories"] == "custom"
    assert (rec["n_categories"], rec["n_members"], rec["background"], rec["seed"]) == (3, 60, 40, 3)
    assert rec["n_tokens"] == len(spec.token_ids) and rec["background_ids"] == bg.tolist()
    path = tmp_path / "cats.json"
    path.write_text(json.dumps({"one": ["w5", "w6"]}))
    only = subset_tokens(tok, path, background=0)
    assert only.categories == str(path) and only.token_ids.tolist() == [5, 6]


@pytest.mark.parametrize("kwargs, match", [
    (dict(background=-1), "background"), (dict(background=2.5), "background"),
    (dict(background=tiny.VOCAB + 1), "full cache"), (dict(seed="0"), "seed"),
    (dict(categories={"x": ["nope", "zilch"]}), "single token")])
def test_subset_tokens_refuses_bad_input(kwargs, match):
    kwargs = {"categories": CATS, "background": 10, **kwargs}
    with pytest.raises(InvalidArgument, match=match):
        subset_tokens(tiny.tokenizer(), **kwargs)


def test_subset_cache_rows_equal_the_full_cache_and_meta_says_subset(model_tok, subset_cache):
    model, tok = model_tok
    meta = subset_cache.meta
    assert not meta.full_vocab and meta.n_tokens == len(subset_cache) == meta.subset["n_tokens"]
    assert meta.subset["background"] == 40 and meta.subset["seed"] == 3
    assert set(MEMBERS) <= set(subset_cache.token_ids.tolist())
    full = bd.SignCache.build(model, tok, sites=["resid.1", "resid.2"], progress=False)
    ids = subset_cache.token_ids
    for site in ("resid.1", "resid.2"):
        assert torch.equal(subset_cache.packed(site), full.packed(site, tokens=ids))
    rows, what = token_population(subset_cache)
    assert torch.equal(subset_cache.token_ids[rows], torch.tensor(meta.subset["background_ids"]))
    assert "background sample: 40 random vocabulary tokens (seed 3)" in what
    assert token_population(full)[0] is None and "all 96 cached tokens" in token_population(full)[1]


def _resign(path, edit):
    """Edit meta.json and recompute its checksum, as a careless tool would."""
    from bagofdims.signs.meta import _digest

    raw = json.loads((path / "meta.json").read_text())
    edit(raw["subset"])
    body = {k: v for k, v in raw.items() if k != "meta_sha256"}
    (path / "meta.json").write_text(json.dumps({**body, "meta_sha256": _digest(body)}))


@pytest.mark.parametrize("edit, match", [
    (lambda s: s.update(n_tokens=s["n_tokens"] + 1), "sizes disagree"),
    (lambda s: s.update(background_ids=s["background_ids"][::-1]), "increasing"),
    (lambda s: s.update(background_ids=s["background_ids"][:-1] + [500]), "increasing"),
    (lambda s: s.pop("seed"), "subset must map"),
    (lambda s: s.update(rule="first-n"), "rule")])
def test_a_damaged_subset_record_is_refused(subset_cache, tmp_path, edit, match):
    path = subset_cache.save(tmp_path / "c")
    _resign(path, edit)
    with pytest.raises(CacheError, match=match):
        bd.SignCache.load(path)


def test_background_tokens_missing_from_the_cache_are_refused(subset_cache):
    sub = dict(subset_cache.meta.subset)
    ids = subset_cache.token_ids.tolist()
    absent = next(i for i in range(tiny.VOCAB) if i not in ids)
    sub["background_ids"] = sorted(sub["background_ids"][1:] + [absent])
    broken = bd.SignCache(dataclasses.replace(subset_cache.meta, subset=sub),
                          subset_cache._signs)
    with pytest.raises(CacheError, match="lacks tokens of its own background sample"):
        token_population(broken)


def test_catalog_on_a_subset_cache_draws_the_token_null_from_the_background_only(
        subset_cache, model_tok, monkeypatch, tmp_path):
    _, tok = model_tok
    drawn = {"token": set(), "listed": set()}
    kind_now = []
    real_discover = evidence.discover_rows

    def null_spy(real):
        def run(packed, d, kind, *args, **kwargs):
            kind_now.append(kind)
            try:
                return real(packed, d, kind, *args, **kwargs)
            finally:
                kind_now.pop()
        return run

    def discover_spy(packed, d, anchors, *args, **kwargs):
        if kind_now:  # a null's anchor sets: every null runs the real features' discovery
            for rows in anchors:
                drawn[kind_now[-1]].update(torch.as_tensor(rows).tolist())
        return real_discover(packed, d, anchors, *args, **kwargs)

    for name in ("null_draws", "null_aucs"):
        if hasattr(evidence, name):
            monkeypatch.setattr(evidence, name, null_spy(getattr(evidence, name)))
    monkeypatch.setattr(evidence, "discover_rows", discover_spy)
    cat = bd.Catalog.build(subset_cache, categories=CATS, sites=["resid.*"], tokenizer=tok,
                           n_anchors=8, n_min_held_out=5, progress=False,
                           evidence=EvidenceConfig(n_draws=9, n_boot=50))
    assert sorted(cat.names) == ["hi", "lo"] and "gone" in cat.meta.skipped
    background = set(token_population(subset_cache)[0].tolist())
    assert drawn["token"] and drawn["token"] <= background
    others = set(range(len(subset_cache))) - background
    assert len(others) > 20  # drawing from every row instead would have hit these
    assert drawn["listed"] - background  # the listed-word null keeps drawing members
    meta = cat.meta.subset
    assert meta["n_tokens"] == len(subset_cache) and meta["vocab_size"] == tiny.VOCAB
    assert meta["token_null"].startswith("the background sample: 40")
    assert "background_ids" not in meta
    for f in cat.features:
        assert 0 <= f.metrics["null_token_auc"] <= 1 and 0 < f.metrics["p_token"] <= 1
    loaded = bd.Catalog.load(cat.save(tmp_path / "cat"), cache=subset_cache)
    assert loaded.meta.subset == meta


def test_catalog_of_other_categories_says_the_cache_is_a_subset(subset_cache, model_tok):
    _, tok = model_tok
    other = {"mid": [f"w{i}" for i in range(80, 96)] + [f"w{i}" for i in range(3, 10)]}
    with pytest.raises(bd.errors.CatalogError, match="subset built for the categories 'custom'"):
        bd.Catalog.build(subset_cache, categories=other, sites=["resid.1"], tokenizer=tok,
                         n_anchors=8, n_min_held_out=5, progress=False)


def test_token_null_refuses_rows_outside_packed_and_too_small_a_background():
    packed = torch.randint(0, 256, (50, 4), dtype=torch.uint8)
    args = (packed, 32, "token", 5, 5, bd.DiscoveryConfig(k=4), EvidenceConfig(n_draws=3))
    with pytest.raises(InvalidArgument, match="rows of packed"):
        evidence.null_aucs(*args, token_rows=torch.tensor([3, 60]))
    with pytest.raises(InvalidArgument, match="background"):
        evidence.null_aucs(*args, token_rows=torch.arange(6))
    assert evidence.null_aucs(*args, token_rows=torch.arange(10, 30)).shape == (3,)
