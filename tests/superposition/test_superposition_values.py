"""Value coding: nested ridge recovers a planted linear code; shuffled targets give R² near 0."""
import numpy as np
import pytest

from bagofdims.errors import InvalidArgument, NothingFound
from superposition.values import nested_ridge, number_words, r2, value_coding, words_with_values


def _planted(n=80, d=30, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    H = rng.normal(size=(n, d))
    y = H @ rng.normal(size=(d, 2)) + noise * rng.normal(size=(n, 2))
    return H, y


def test_planted_linear_code_is_recovered_above_its_null():
    H, y = _planted()
    res = value_coding(H, y, [f"w{i}" for i in range(len(H))], ["lat", "lon"], n_null=20)
    for t in ("lat", "lon"):
        assert res[t]["r2"] > 0.9
        assert res[t]["null_q95"] < 0.3 and res[t]["p"] == pytest.approx(1 / 21)
    assert len(res["alphas_chosen"]) == 5 and res["predictions"]["words"][0] == "w0"


def test_shuffled_targets_give_r2_near_zero():
    H, y = _planted()
    y_shuf = np.random.default_rng(1).permutation(y)
    res = value_coding(H, y_shuf, [f"w{i}" for i in range(len(H))], ["a", "b"], n_null=20)
    for t in ("a", "b"):
        assert res[t]["r2"] < 0.2
        assert abs(res[t]["null_mean"]) < 0.2


def test_nested_ridge_chooses_strength_without_test_words():
    H, y = _planted(noise=0.0)
    pred, chosen = nested_ridge(H, y[:, :1])
    assert r2(pred, y[:, :1])[0] > 0.95 and min(chosen) <= 1e-2   # noise-free: little shrinkage
    rng = np.random.default_rng(2)
    pure_noise = rng.normal(size=(80, 1))
    _, chosen_noise = nested_ridge(H, pure_noise)
    assert max(chosen_noise) >= 1.0                                 # noise only: strong shrinkage
    with pytest.raises(InvalidArgument):
        nested_ridge(H[:6], y[:6])


def test_word_tables():
    assert number_words(["7", "apple", "42"]) == {"7": 7.0, "42": 42.0}
    words, ids, vals = words_with_values({"Paris": 3, "x": 0}, {"Paris": (48.9, 2.4), "Rome": (41.9, 12.5)}, 1)
    assert words == ["Paris"] and ids.tolist() == [3] and vals.shape == (1, 2)
    with pytest.raises(NothingFound, match="larger --vocab"):
        words_with_values({"x": 0}, {"Paris": (48.9, 2.4)}, 1)


def test_gazetteer_places():
    pytest.importorskip("countryinfo")
    from superposition.values import gazetteer

    g = gazetteer()
    assert g["Paris"][0] == pytest.approx(48.86, abs=0.5) and g["Paris"][1] == pytest.approx(2.35, abs=0.5)
    assert g["Japan"][1] > 120 and g["Brazil"][0] < 0
    assert all(w.isalpha() for w in g)
