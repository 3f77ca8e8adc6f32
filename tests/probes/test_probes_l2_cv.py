"""select_l2 and cross_validate(l2_grid=...): the penalty is chosen on training rows only."""

import pytest
import torch

from bagofdims.errors import InvalidArgument
from probes.cv import L2_GRID, cross_validate, select_l2


def _data(n, d, shift, n_dims, seed, k=4, frac=0.3):
    """k categories, each a mean shift on n_dims dims of its own plus isotropic noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.zeros(n, k, dtype=torch.bool)
    for j in range(k):
        r = torch.randperm(n, generator=g)[: int(n * frac)]
        y[r, j] = True
        x[r, j * n_dims:(j + 1) * n_dims] += shift
    return x, y


def test_noisy_tiny_data_gets_a_larger_penalty_than_clean_separable_data():
    clean_x, clean_y = _data(600, 20, 6.0, 3, seed=0)
    noisy_x, noisy_y = _data(120, 200, 1.0, 5, seed=0)  # d > n: weak signal in many dims
    clean = select_l2(clean_x, clean_y, torch.ones_like(clean_y), folds=3)
    noisy = select_l2(noisy_x, noisy_y, torch.ones_like(noisy_y), folds=3)
    assert clean.score.shape == noisy.score.shape == (len(L2_GRID), 4)
    assert torch.allclose(clean.score, torch.ones_like(clean.score))  # separable: AUC 1 at all
    assert (clean.l2 == min(L2_GRID)).all()  # ... so the tie rule picks the smallest
    assert float(noisy.l2.min()) > float(clean.l2.max()), noisy.l2
    # the choice is the argmax of the recorded scores
    assert torch.equal(noisy.l2, torch.tensor(L2_GRID, dtype=torch.float64)[noisy.score.argmax(0)])


def test_rows_outside_train_cannot_change_the_choice():
    x, y = _data(160, 120, 1.0, 5, seed=1)
    train = torch.ones_like(y)
    test_rows = torch.arange(0, 160, 4)  # held out for every category
    train[test_rows] = False
    before = select_l2(x, y, train, folds=3)
    x2, y2 = x.clone(), y.clone()
    x2[test_rows] = 100 * torch.randn(len(test_rows), x.shape[1])  # poison features and labels
    y2[test_rows] = ~y2[test_rows]
    after = select_l2(x2, y2, train, folds=3)
    assert torch.equal(before.score, after.score) and torch.equal(before.l2, after.l2)
    # the same poison on training rows does change the scores (the check can fail)
    moved = select_l2(x2, y2, torch.ones_like(y), folds=3)
    assert not torch.equal(before.score, moved.score)


def test_nested_cv_fold_choice_ignores_that_folds_test_rows():
    x, y = _data(300, 60, 1.0, 5, seed=2, k=2, frac=0.2)
    pos = [y[:, j].nonzero().flatten() for j in range(2)]
    anchors, held = [p[:30] for p in pos], [p[30:] for p in pos]
    kw = dict(folds=3, l2_grid=L2_GRID, inner_folds=3, inner_negatives=None)
    cv = cross_validate(x, anchors, held, **kw)
    assert cv.l2.shape == (3, 2) and set(cv.l2.flatten().tolist()) <= set(L2_GRID)
    assert cv.weights_std.shape == (3, 60, 2)
    members = cv.labels.any(1)
    for f in range(3):
        only_test = ((cv.fold == f).all(1) & ~members).nonzero().flatten()  # test rows of every category
        x2 = x.clone()
        x2[only_test] = 50 * torch.randn(len(only_test), 60)
        cv2 = cross_validate(x2, anchors, held, **kw)
        assert torch.equal(cv2.l2[f], cv.l2[f])
    # fixed-penalty path records its penalty and weights too
    fixed = cross_validate(x, anchors, held, folds=3)
    assert (fixed.l2 == 1e-3).all() and fixed.weights_std.shape == (3, 60, 2)


def test_chosen_penalties_are_what_the_outer_probe_uses():
    x, y = _data(240, 40, 1.5, 4, seed=3, k=2, frac=0.25)
    pos = [y[:, j].nonzero().flatten() for j in range(2)]
    anchors, held = [p[:30] for p in pos], [p[30:] for p in pos]
    cv = cross_validate(x, anchors, held, folds=2, l2_grid=(1e-3, 1e-1), inner_negatives=50,
                        keep_probes=True)
    for f, fitted in enumerate(cv.probes):
        for cols, probe in fitted:
            assert torch.allclose(cv.l2[f, cols], torch.full((len(cols),), probe.l2,
                                                               dtype=torch.float64))


@pytest.mark.parametrize("grid", [(), (1e-3, 1e-4), (0.0, 1e-2), (-1e-3,), (1e-3, 1e-3)])
def test_bad_grids_raise(grid):
    x, y = _data(60, 10, 2.0, 2, seed=0, k=1)
    with pytest.raises(InvalidArgument, match="grid"):
        select_l2(x, y, torch.ones_like(y), grid=grid)


def test_bad_inputs_raise():
    x, y = _data(60, 10, 2.0, 2, seed=0, k=1)
    with pytest.raises(InvalidArgument, match="bool"):
        select_l2(x, y.float(), torch.ones_like(y))
    with pytest.raises(InvalidArgument, match="bool"):
        select_l2(x, y, torch.ones(60, 2, dtype=torch.bool))
    with pytest.raises(InvalidArgument, match="max_negatives"):
        select_l2(x, y, torch.ones_like(y), max_negatives=0)
    pos = [y[:, 0].nonzero().flatten()]
    with pytest.raises(InvalidArgument, match="not both"):
        cross_validate(x, [pos[0][:10]], [pos[0][10:]], folds=2, l2_grid=L2_GRID,
                       probe=lambda: None)
