"""Catalogs over example caches: labels as categories, splits by group, example queries."""

import numpy as np
import pytest
import torch
import transformers as T

import bagofdims as bd
from bagofdims.errors import CatalogError, InvalidArgument, InvalidType, NotFound
from bagofdims.features.evidence import EvidenceConfig
from bagofdims.signs import bits
from bagofdims.signs.cache import TOKEN_IDS, SignCache
from bagofdims.signs.meta import CacheMeta

import tiny

LABELS = ("digit", "colour", "animal", "tool", "place")
GROUPS, VOICES, D = 12, 4, 64
FAST = EvidenceConfig(n_draws=20, n_boot=200)


def planted_examples(groups=True, seed=0):
    """Spoken-word-like examples: 5 labels x 12 words x 4 voices; 'digit' planted on dims 0-23.

    Each word has its own random pattern that its voices share (so a split that put one voice
    of a word on each side would leak), and 'digit' words agree on 24 dims (10% flipped).
    """
    g = torch.Generator().manual_seed(seed)
    rows, labels, names = [], [], []
    for lab in LABELS:
        for w in range(GROUPS):
            word = torch.randn(D, generator=g)
            for _ in range(VOICES):
                x = word + 0.3 * torch.randn(D, generator=g)
                if lab == "digit":
                    flip = torch.rand(24, generator=g) < 0.1
                    x[:24] = torch.where(flip, -1.0, 1.0) * (x[:24].abs() + 0.5)
                rows.append(x)
                labels.append(lab)
                names.append(f"{lab}-{w}")
    x = torch.stack(rows)
    n = len(x)
    meta = CacheMeta(model="planted", weights="planted-weights", tokenizer="planted-processor",
                     vocab_size=n, full_vocab=True, n_tokens=n, sites={"resid.0": D, "resid.1": D},
                     bos=False, bos_id=None, bos_token=None, bos_rule="off", dtype="float32",
                     magnitudes=False, batch_size=n, chunk_size=n, tokens_sha256="planted",
                     inputs="examples", pool="mean", example_sha256="0" * 64, labels=labels,
                     groups=names if groups else None, created="now")
    noise = bits.pack_signs(torch.randn(n, D, generator=g)).numpy()  # resid.1: no structure
    signs = {"resid.0": bits.pack_signs(x).numpy(), "resid.1": noise,
             TOKEN_IDS: np.arange(n, dtype=np.int64)}
    return SignCache(meta, signs)


@pytest.fixture(scope="module")
def planted_catalog():
    cache = planted_examples()
    return bd.Catalog.build(cache, sites=["resid.*"], n_min_held_out=4, evidence=FAST,
                            progress=False), cache


def test_a_planted_class_beats_the_nulls_and_the_others(planted_catalog):
    cat, _ = planted_catalog
    assert cat.names == sorted(LABELS) and cat.meta.categories == "labels"
    digit = cat.get("digit", "resid.0")
    m = digit.metrics
    assert m["held_out_auc"] > 0.95 and m["hard_auc"] > 0.95
    assert m["held_out_auc_lo"] > m["null_listed_q95"] and m["held_out_auc"] > m["null_token_auc"]
    assert m["p_listed"] < 0.05 and m["p_token"] < 0.05
    planted = digit.dims < 24
    assert int(planted.sum()) >= 20 and (digit.signs[planted] == 1).all()
    others = [cat.get(lab, "resid.0").metrics["held_out_auc"] for lab in LABELS if lab != "digit"]
    assert max(others) < m["held_out_auc"] - 0.2
    noise = cat.get("digit", "resid.1").metrics
    assert noise["p_listed"] > 0.05  # the unstructured site gives nothing
    assert cat.get("digit").site == "resid.0"  # best site by anchors


def test_groups_stay_on_one_side_of_the_split(planted_catalog):
    cat, cache = planted_catalog
    groups = cache.meta.groups
    for f in cat.features:
        anchor_groups = {groups[r] for r in f.anchors}
        held_groups = {groups[r] for r in f.held_out}
        assert not anchor_groups & held_groups
        assert len(anchor_groups) == GROUPS // 2  # n_anchors=0.5 of the label's 12 words
        assert sorted(f.anchors + f.held_out) == [i for i, lab in enumerate(cache.meta.labels)
                                                  if lab == f.name]
        assert f.anchor_words == [groups[r] for r in f.anchors]
    assert cat.meta.examples["split"] == "group" and cat.meta.n_anchors == 0.5
    # why: split by example, the voices of one word land on both sides and the word's own
    # pattern passes for a category (the unplanted labels score well above chance)
    leaky = bd.Catalog.build(planted_examples(groups=False), sites=["resid.0"], n_min_held_out=4,
                             evidence=None, progress=False)
    unplanted = [lab for lab in LABELS if lab != "digit"]
    fair = np.mean([cat.get(lab, "resid.0").metrics["held_out_auc"] for lab in unplanted])
    inflated = np.mean([leaky.get(lab).metrics["held_out_auc"] for lab in unplanted])
    assert inflated > fair + 0.15, (inflated, fair)


def test_the_split_is_seeded_per_category_and_counts_groups_or_examples():
    cache = planted_examples()
    kw = dict(sites=["resid.0"], n_min_held_out=4, evidence=None, progress=False)
    a = bd.Catalog.build(cache, seed=1, **kw)
    b = bd.Catalog.build(cache, seed=1, **kw)
    c = bd.Catalog.build(cache, seed=2, **kw)
    assert [f.anchors for f in a] == [f.anchors for f in b] != [f.anchors for f in c]
    sub = bd.Catalog.build(cache, categories=["digit", "tool"], seed=1, **kw)
    assert sub.get("digit").anchors == a.get("digit").anchors  # other categories do not matter
    count = bd.Catalog.build(cache, n_anchors=3, **kw)
    assert all(len({cache.meta.groups[r] for r in f.anchors}) == 3 for f in count)
    flat = planted_examples(groups=False)
    by_example = bd.Catalog.build(flat, n_anchors=0.25, **kw)
    per_label = GROUPS * VOICES
    assert all(len(f.anchors) == per_label // 4 for f in by_example)
    assert by_example.meta.examples["split"] == "example"


def test_too_few_groups_are_skipped_with_the_reason():
    cache = planted_examples()
    with pytest.raises(CatalogError, match="No category has enough examples"):
        bd.Catalog.build(cache, n_anchors=9, n_min_held_out=4, evidence=None, progress=False)
    custom = {"digit": list(range(0, 48)), "tiny": [0, 1, 2, 3]}  # 'tiny' has one word
    cat = bd.Catalog.build(cache, categories=custom, n_min_held_out=2, evidence=None,
                           progress=False)
    assert cat.names == ["digit"] and "1 groups" in cat.meta.skipped["tiny"]
    assert cat.meta.categories == "custom"


def test_bad_categories_and_anchor_counts_fail_clearly():
    cache = planted_examples()
    kw = dict(evidence=None, progress=False)
    with pytest.raises(InvalidArgument, match="for an example cache pass 'labels'"):
        bd.Catalog.build(cache, categories="animals", **kw)
    with pytest.raises(NotFound, match="not in this cache"):
        bd.Catalog.build(cache, categories=["digit", "planet"], **kw)
    with pytest.raises(InvalidArgument, match="fraction must be in"):
        bd.Catalog.build(cache, n_anchors=1.5, **kw)
    with pytest.raises(InvalidType, match="n_anchors"):
        bd.Catalog.build(cache, n_anchors="half", **kw)
    unlabelled = planted_examples()
    unlabelled.meta.labels = None
    with pytest.raises(CatalogError, match="no labels"):
        bd.Catalog.build(unlabelled, **kw)


def test_example_queries_name_examples_not_tokens(planted_catalog, tmp_path):
    cat, cache = planted_catalog
    top = cat.top_examples("digit", 10, site="resid.0")
    assert [t["label"] for t in top] == ["digit"] * 10
    assert top[0]["group"].startswith("digit-") and top[0]["score"] >= top[-1]["score"]
    text = cat.top_tokens("digit", 10, site="resid.0")
    assert [t[0] for t in text] == [f"#{t['index']} digit/{t['group']}" for t in top]
    info = cat.explain_dim("resid.0", 0, k=5)
    assert all(" digit/" in t for t in info["most_positive"])
    assert ("digit", 1) in info["features"]
    with pytest.raises(CatalogError, match="read_inputs"):
        cat.read("some text", model=None)
    cache.save(tmp_path / "cache")
    built = bd.Catalog.build(SignCache.load(tmp_path / "cache"), sites=["resid.0"],
                             n_min_held_out=4, evidence=None, progress=False)
    built.save(tmp_path / "cat")
    back = bd.Catalog.load(tmp_path / "cat")  # finds its cache; needs no tokenizer
    assert back.meta == built.meta and back.meta.examples["pool"] == "mean"
    assert back.top_examples("digit", 5) == built.top_examples("digit", 5)


@pytest.fixture(scope="module")
def vit_catalog(tmp_path_factory):
    torch.manual_seed(0)
    model = T.ViTModel(T.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37)).eval()
    proc = T.ViTImageProcessor(size=16)
    g = np.random.default_rng(0)
    images, labels, groups = [], [], []
    for c in range(3):  # one colour channel raised per class; 3 views of each of 8 scenes
        for s in range(8):
            scene = g.integers(0, 180, size=(16, 16, 3))
            for _ in range(3):
                im = scene + g.integers(0, 20, size=scene.shape)
                im[..., c] += 70
                images.append(im.clip(0, 255).astype(np.uint8))
                labels.append(f"c{c}")
                groups.append(f"c{c}-s{s}")
    where = tmp_path_factory.mktemp("vit") / "cache"
    bd.SignCache.build_inputs(model, proc, images, sites=["resid.*", "final"], pool="cls",
                              labels=labels, groups=groups, batch_size=8,
                              progress=False).save(where)
    cat = bd.Catalog.build(SignCache.load(where), sites=["resid.*", "final"], n_min_held_out=3,
                           evidence=FAST, progress=False)
    return cat, model, proc, images


def test_read_inputs_scores_new_examples_as_the_cache_pooled_them(vit_catalog):
    cat, model, proc, images = vit_catalog
    assert cat.meta.examples["pool"] == "cls" and cat.meta.tokenizer == cat.cache.meta.tokenizer
    out = cat.read_inputs(images, model, proc, site="final", batch_size=8)
    want = cat.scores("final")
    names = [f.name for f in cat.at("final")]
    got = torch.tensor([[r["scores"][n] for n in names] for r in out])
    assert torch.equal(got, want) and [r["index"] for r in out] == list(range(len(images)))
    for r in out:  # what fires is what reaches each feature's threshold
        for name, score in r["features"]:
            assert score >= cat.get(name, "final").threshold
    one = cat.read_inputs(images[0], model, proc, site="final")  # a single image
    assert one[0]["scores"] == out[0]["scores"]


def test_read_inputs_refuses_another_processor_or_model(vit_catalog):
    cat, model, proc, images = vit_catalog
    with pytest.raises(CatalogError, match="processor given"):
        cat.read_inputs(images[:2], model, T.ViTImageProcessor(size=16, do_normalize=False))
    torch.manual_seed(1)
    other = T.ViTModel(model.config).eval()
    with pytest.raises(CatalogError, match="not to the model given"):
        cat.read_inputs(images[:2], other, proc)


def test_text_examples_read_back_through_the_tokenizer():
    model, tok = tiny.make("bert"), tiny.tokenizer()
    g = np.random.default_rng(3)
    texts = [" ".join(f"w{i}" for i in g.integers(3, tiny.VOCAB, size=5)) for _ in range(40)]
    labels = [("a", "b")[i % 2] for i in range(40)]
    cache = bd.SignCache.build_inputs(model, tok, texts, sites=["resid.1"], pool="mean",
                                      labels=labels, batch_size=40, progress=False)
    cat = bd.Catalog.build(cache, sites=["resid.1"], n_min_held_out=5, evidence=None,
                           progress=False)
    out = cat.read_inputs(texts, model, tok, batch_size=40)
    assert torch.equal(torch.tensor([[r["scores"][f.name] for f in cat.at("resid.1")]
                                     for r in out]), cat.scores("resid.1"))
    assert cat.read_inputs(texts[0], model, tok)[0]["index"] == 0
