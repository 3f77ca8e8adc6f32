"""Nested cross-validation on the anchors only (bagofdims.features.selection)."""

import pytest
import torch

import planted
from bagofdims.errors import BagOfDimsError
from bagofdims.features.selection import (SelectionConfig, candidates, inner_scores,
                                          nested_select, word_folds)
from bagofdims.signs import bits

V, D = planted.V, planted.D


def _rows():
    rows = [torch.tensor(list(r)) for r, _, _ in planted.PLANTED.values()]
    return [r[:50] for r in rows], [r[50:] for r in rows]


def _site(anchor_flip: float, held_flip: float, seed: int) -> torch.Tensor:
    """Packed signs: noise, with each category's planted dims set in its members; anchors
    disagree with the pattern with prob ``anchor_flip``, held-out members with ``held_flip``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(V, D, generator=g)
    anchors, held = _rows()
    for (_, dims, sign), a, h in zip(planted.PLANTED.values(), anchors, held):
        cols = torch.tensor(list(dims))
        x[:, cols] -= sign * 0.8  # the vocabulary leans the other way (see planted.py)
        for rows, flip in ((a, anchor_flip), (h, held_flip)):
            agree = torch.rand(len(rows), len(cols), generator=g) > flip
            x[rows[:, None], cols[None]] = torch.where(agree, sign * 2.0, -sign * 2.0)
    return bits.pack_signs(x)


@pytest.fixture(scope="module")
def sites():
    # "clean": anchors and held-out members carry the pattern equally well (moderately).
    # "leaky": the anchors barely carry it, the held-out members perfectly: a choice made on
    # held-out members would take this site, one made on the anchors must not.
    return {"clean": _site(0.3, 0.3, 1), "leaky": _site(0.45, 0.0, 2)}


def test_nested_cv_chooses_on_anchors_and_never_reads_held_out_members(sites):
    anchors, held = _rows()
    sel = SelectionConfig(ks=(4, 12), folds=5)
    src = {s: (p, D) for s, p in sites.items()}
    res = nested_select(src, anchors, held, sel=sel)
    assert res.site == "clean"
    # the held-out-chosen best differs, so held-out members would have changed the choice
    assert res.upper_bound["site"] == "leaky" and "upper bound" in res.upper_bound["note"]
    assert res.held_out["leaky"][res.upper_bound["label"]] > res.held_out["clean"][res.label]
    # poison the held-out rows at every site (a perfect pattern in the clean site, noise in
    # the leaky one): the choice and every inner number stay exactly the same
    poisoned = {}
    for name, p in sites.items():
        q = p.clone()
        rows = torch.cat(held)
        q[rows] = bits.pack_signs(torch.randn(len(rows), D, generator=torch.Generator().manual_seed(9)))
        poisoned[name] = (q, D)
    res2 = nested_select(poisoned, anchors, held, sel=sel)
    assert (res2.site, res2.label, res2.inner, res2.per_category) == \
        (res.site, res.label, res.inner, res.per_category)
    assert res2.held_out != res.held_out  # only the outer scores moved


def test_inner_scores_ignore_held_rows_and_rank_a_planted_site_first(sites):
    anchors, held = _rows()
    folds = word_folds([list(range(len(a))) for a in anchors], 5)
    cfgs = candidates(SelectionConfig(ks=(12,)))
    clean = inner_scores(sites["clean"], D, anchors, folds, cfgs, held, negatives=None)
    noise = inner_scores(bits.pack_signs(torch.randn(V, D)), D, anchors, folds, cfgs, held,
                         negatives=None)
    assert clean.shape == (1, 3) and bool((clean > 0.8).all())
    assert bool((noise - 0.5).abs().max() < 0.15)
    # a row held out by one category and anchoring another is dropped, not refused
    held2 = [held[0], torch.cat([held[1], anchors[2][:1]]), held[2]]
    again = inner_scores(sites["clean"], D, anchors, folds, cfgs, held2, negatives=None)
    assert bool((again - clean).abs().max() < 0.05)


def test_word_folds_keep_a_word_together_and_refuse_too_few_words():
    groups = [["a", "a", "b", "c", "c", "d", "e", "f"]]
    (f,) = word_folds(groups, 3, seed=0)
    assert f[0] == f[1] and f[3] == f[4]
    assert set(f.tolist()) == {0, 1, 2}
    with pytest.raises(BagOfDimsError, match="fewer than folds"):
        word_folds([["a", "a", "b"]], 3)


@pytest.mark.parametrize("kw", [{"folds": 1}, {"ks": (), "taus": ()}, {"ks": (0,)},
                                {"taus": (0.3,)}, {"negatives": 0}])
def test_selection_config_refuses_bad_values(kw):
    with pytest.raises(BagOfDimsError):
        SelectionConfig(**kw)


def test_candidates_cover_k_and_tau_in_order():
    cfgs = candidates(SelectionConfig(ks=(8, 16), taus=(0.7,)))
    assert [(c.method, c.k if c.method == "topk" else c.tau) for c in cfgs] == \
        [("topk", 8), ("topk", 16), ("tau", 0.7)]
