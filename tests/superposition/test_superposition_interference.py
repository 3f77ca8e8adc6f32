"""Constructive interference on planted weights: a word off alone, on with its partners."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from bagofdims.errors import InvalidArgument
from superposition import geometry as G
from superposition.interference import (alone_preactivation, context_rates, partner_contributions, pick_targets,
                                        switched_on)

VOCAB = ["Beatles", "Lennon", "McCartney", "loud", "other"]


def _planted(n=400, seed=0):
    """Word 0: |w|² = 1, b = -1.5 (off alone); words 1, 2 overlap it by 0.5 each, so with both it
    is at +0.5. It occurs with both partners in 80% of its windows; the partners also occur
    without it. Word 3 is on alone (control), word 4 unrelated."""
    W = torch.zeros(4, 5)
    W[0, 0] = 1.0
    W[:, 1] = torch.tensor([0.5, 1.0, 0.0, 0.0])
    W[:, 2] = torch.tensor([0.5, 0.0, 1.0, 0.0])
    W[3, 3] = 1.0
    W[2, 4] = -1.0
    b = torch.tensor([-1.5, -0.5, -0.5, 0.0, -0.5])
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 5), np.float32)
    x[: n // 2, 0] = 1
    x[: int(0.4 * n), 1:3] = 1          # 80% of word 0's windows have both partners
    x[n // 2: 3 * n // 4, 1:3] = 1      # partners without word 0
    x[:, 3] = rng.random(n) < 0.3
    x[:, 4] = rng.random(n) < 0.3
    return W, b, sp.csr_matrix(x)


def test_alone_preactivation_and_rates_match_the_split_of_geometry():
    W, b, X = _planted()
    assert np.allclose(alone_preactivation(W, b), [-0.5, 0.75, 0.75, 1.0, 0.5])
    r = context_rates(W, b, X, [0, 3])
    parts = G.preactivation_parts(W, b, X, 0)
    total = parts["bias"] + parts["self"] + parts["interference"]
    assert r["on_present"][0] == pytest.approx((total[parts["present"]] > 0).mean())
    assert r["on_present"][0] == pytest.approx(0.8) and r["on_absent"][0] == 0.0
    assert r["contexts"][0] == 200


def test_switched_on_finds_the_planted_word_only():
    W, b, X = _planted()
    res = switched_on(W, b, X, np.arange(5), VOCAB)
    assert res["alone_nonpositive"] == 1 and res["switched_on"] == 1
    assert list(res["switched_on_words"]) == ["Beatles"] and pick_targets(res) == ["Beatles"]
    # without the partners' overlap the word stays off: nothing is switched on
    W2 = W.clone()
    W2[0, 1:3] = 0
    assert switched_on(W2, b, X, np.arange(5), VOCAB)["switched_on"] == 0
    with pytest.raises(InvalidArgument):
        switched_on(W, b, X, np.arange(5), VOCAB, majority=1.5)


def test_partner_contributions_split_the_interference():
    W, b, X = _planted()
    d = partner_contributions(W, b, X, 0, VOCAB, top=3)
    assert [p["word"] for p in d["partners"]] == ["Lennon", "McCartney"]
    assert d["partners"][0]["mean_contribution"] == pytest.approx(0.5 * 0.8)
    assert d["mean_interference_present"] == pytest.approx(sum(p["mean_contribution"] for p in d["partners"]))
    assert d["top_partners_without_word"] == pytest.approx(-0.5)   # partners alone do not switch it on
    assert d["on_present"] == pytest.approx(0.8)
    with pytest.raises(InvalidArgument, match="occurs in none"):
        partner_contributions(W, b, X[200:], 0, VOCAB)
