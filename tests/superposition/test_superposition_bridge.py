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


def _category_weights(m=16, per=20, seed=0):
    """Two categories of `per` words whose latents share signs on dims 0-3 (a) or 4-7 (b), plus
    unrelated words: their sign features must find the held-out members."""
    g = torch.Generator().manual_seed(seed)
    vocab = [f"a{i}" for i in range(per)] + [f"b{i}" for i in range(per)] + [f"z{i}" for i in range(60)]
    W = torch.randn(m, len(vocab), generator=g)
    W[:4, :per] = W[:4, :per].abs() + 0.5
    W[4:8, per:2 * per] = -(W[4:8, per:2 * per].abs() + 0.5)
    cats = {"alpha": [f"a{i}" for i in range(per)] + ["missing"], "beta": [f"b{i}" for i in range(per)],
            "tiny": ["z0", "z1"]}
    return W, vocab, cats


def test_category_reading_finds_planted_categories_and_not_random_init():
    from superposition.bridge import category_reading

    W, vocab, cats = _category_weights()
    res = category_reading(W, vocab, cats, n_anchors=10, min_held_out=5, k=4, n_null=10)
    assert res["usable"] == 2 and res["held_out_sizes"] == {"alpha": 10, "beta": 10}
    t, r = res["trained"], res["random_init"]
    assert t["per_category"]["alpha"] > 0.9 and t["per_category"]["beta"] > 0.9 and t["discoverable"] == 2
    assert r["held_out_auc_median"] < 0.8 and abs(t["null_held_out_auc_median"] - 0.5) < 0.15


def test_lm_reference_reads_the_report(tmp_path):
    import json

    from superposition.bridge import lm_reference

    site = lambda a, d: {"held_out_auc": {"median": a}, "hard_auc": {"median": a - 0.05}, "mean_dim_auc": d,
                         "null_held_out_auc": {"median": 0.5}, "discoverable": 3, "n_categories": 4,
                         "per_category": {"country": a}}
    rep = {"model": "lm", "width": 8, "vocab": 100, "categories": {"config": {"k": 4}},
           "e3": {"resid.1": site(0.9, 0.7), "resid.2": site(0.95, 0.6)},
           "e3_embedding": {"held_out_auc": {"median": 0.8}}}
    (tmp_path / "reading.json").write_text(json.dumps(rep))
    lm = lm_reference(str(tmp_path / "reading.json"))
    assert lm["picked_site"] == "resid.1" and lm["picked_held_out_auc_median"] == 0.9   # anchors-only rule
    assert lm["best_site"] == "resid.2" and lm["embedding_held_out_auc_median"] == 0.8
    assert lm_reference(str(tmp_path / "absent.json")) is None
