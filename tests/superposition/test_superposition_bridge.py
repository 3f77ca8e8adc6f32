import numpy as np
import pytest
import scipy.sparse as sp
import torch

from superposition.model import BowsModel

pytest.importorskip("bagofdims.stats")
pytest.importorskip("bagofdims.signs.bits")

from superposition.bridge import hamming_recall, sign_structure  # noqa: E402


def _windows(V=24, n=300, seed=0):
    rng = np.random.default_rng(seed)
    return sp.csr_matrix((rng.random((n, V)) < 0.15).astype(np.float32))


def test_hamming_reader_recovers_words_of_orthogonal_features():
    X = _windows()
    model = BowsModel(24, 24, seed=0)
    with torch.no_grad():
        model.E.copy_(torch.eye(24) - 0.01)  # word i: only latent dim i positive
    res = hamming_recall(model, X, k=3)
    assert res["recall_at_k"] == 1.0 and res["chance"] < 0.3
    mixed = BowsModel(24, 6, seed=0)  # 24 random features squeezed into 6 dims
    assert hamming_recall(mixed, X, k=3)["recall_at_k"] < 0.8


def test_sign_mi_sees_shared_dimension():
    X = _windows(n=1000)
    model = BowsModel(24, 4, seed=0)
    with torch.no_grad():
        model.E.zero_()
        model.E[:, 0] = 1.0   # dims 0 and 1 carry the same signal: maximal sign MI
        model.E[:, 1] = 1.0
        model.E[:12, 2] = 1.0
        model.E[12:, 2] = -1.0
        model.E[:, 3] = torch.linspace(-1, 1, 24)
    out = sign_structure(model, X)
    assert out["max_mi"] > 0.1 and 0 < out["positive_fraction"] < 1
