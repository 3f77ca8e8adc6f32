"""E1 / E2 / E9 of the reading report (experiments.reading_eval) on a tiny random-weight model."""

import json
import math

import pytest
import tiny
import torch

from bagofdims import readers, stats
from bagofdims.capture import Capture
from bagofdims.signs.cache import SignCache
from experiments import reading_eval


@pytest.fixture(scope="module")
def model():
    return tiny.make("llama")


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer()


@pytest.fixture(scope="module")
def cache(model, tok):
    return SignCache.build(model, tok, sites=["resid.*", "final"], progress=False)


# -- evaluation ----------------------------------------------------------------------------------
TEXTS = [" ".join(f"w{(7 * i + j) % 90 + 3}" for j in range(n)) for i, n in enumerate([9, 1, 14, 6, 11, 20])]


@pytest.fixture(scope="module")
def collected(model, tok):
    return reading_eval.collect_states(model, tok, TEXTS, ["resid.*", "final"], n_positions=30,
                                       max_length=12, batch_size=2, bos=False)


def test_collect_states_positions_and_predictions(model, tok, collected):
    assert collected["n_positions"] == 30
    assert set(collected["states"]) == {"resid.0", "resid.1", "resid.2", "final"}
    assert all(v.shape == (30, tiny.D) for v in collected["states"].values())
    # texts: 9 tokens -> 8 positions; 1 token -> none; 14 truncated to 12 -> 11; 6 -> 5; 11 -> 6 kept
    ids = [tok(t, truncation=True, max_length=12)["input_ids"] for t in TEXTS]
    expect_true = torch.tensor(ids[0][1:] + ids[2][1:] + ids[3][1:] + ids[4][1:7])
    assert torch.equal(collected["true_next"], expect_true)
    expect_cur = torch.tensor(ids[0][:-1] + ids[2][:-1] + ids[3][:-1] + ids[4][:6])
    assert torch.equal(collected["current"], expect_cur)
    # each text alone (no padding) gives the same states and predictions
    x = torch.tensor([ids[2]])
    with torch.no_grad(), Capture(model, ["final", "resid.1"]) as cap:
        logits = model(input_ids=x).logits[0, :-1]
    torch.testing.assert_close(collected["states"]["final"][8:19], cap["final"][0, :-1])
    torch.testing.assert_close(collected["states"]["resid.1"][8:19], cap["resid.1"][0, :-1])
    assert torch.equal(collected["own_pred"][8:19], logits.argmax(-1))
    with pytest.raises(ValueError, match="fewer than n_positions"):
        reading_eval.collect_states(model, tok, TEXTS[:2], ["final"], n_positions=100)


@pytest.mark.parametrize("bos", [True, None])  # None: the default for decoder LMs
def test_collect_states_with_bos_skips_the_bos_position(model, tok, bos):
    got = reading_eval.collect_states(model, tok, TEXTS[:1], ["final"], n_positions=8, bos=bos)
    ids = tok(TEXTS[0])["input_ids"]
    x = torch.tensor([[tok.bos_token_id] + ids])
    with torch.no_grad(), Capture(model, ["final"]) as cap:
        logits = model(input_ids=x).logits[0, 1:-1]
    assert torch.equal(got["current"], torch.tensor(ids[:-1]))
    assert torch.equal(got["true_next"], torch.tensor(ids[1:]))
    torch.testing.assert_close(got["states"]["final"], cap["final"][0, 1:-1])
    assert torch.equal(got["own_pred"], logits.argmax(-1))


def _fractions(res, keys):
    vals = [res[k] for k in keys]
    assert all(0.0 <= v <= 1.0 for v in vals), res
    return vals


def test_e1_fractions_and_planted(model, collected):
    h = collected["states"]["final"]
    res = reading_eval.e1_sign_lm_head(model, h, collected["own_pred"], collected["true_next"],
                                       fracs=(0.1, 0.5))
    json.dumps(res)
    keys = ["top1_own", "top5_own", "top1_true", "top5_true"]
    for name in ("model", "all", "top_0.1", "top_0.5", "scaled", "scaled_heldout"):
        _fractions(res[name], keys)
    assert res["model"]["top1_own"] == 1.0  # the real head reproduces the model's argmax
    assert res["chance_top5"] == 5 / tiny.VOCAB
    # planted: targets are the sign head's own argmax -> every top-1 / top-5 hits
    planted = readers.sign_lm_head(model, h).argmax(1)
    res = reading_eval.e1_sign_lm_head(model, h, planted, planted, fracs=())
    assert [res["all"][k] for k in keys] == [1.0] * 4
    assert res["all"]["median_rank_own"] == 0.0


def test_e1_by_site_applies_final_norm(model, collected):
    st = collected["states"]
    res = reading_eval.e1_by_site(model, {"resid.2": st["resid.2"], "final": st["final"]},
                                  collected["own_pred"], collected["true_next"])
    # the last block's output through the final norm is the final state
    assert res["resid.2"] == res["final"]
    assert res["final"]["model"]["top1_own"] == 1.0


def test_e2_fractions_and_planted(model, cache, collected):
    own, true = collected["own_pred"], collected["true_next"]
    res = reading_eval.e2_hamming(collected["states"], cache, model, own, true, ks=(1, 5, 96))
    json.dumps(res)
    assert set(res) == set(collected["states"])
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert not tied  # the tiny llama has its own embedding table: it is read as a baseline too
    for site, r in res.items():
        assert set(r) == {"cache", "unembed", "embed"}
        for part in r.values():
            _fractions(part, ["own_top1", "own_top5", "true_top1", "true_top5"])
            assert part["own_top96"] == 1.0 and part["chance_top5"] == 5 / 96
    # planted: states that carry exactly the cached pattern of a token (unique patterns only)
    site = "resid.1"
    pm = cache.signs(site).float()
    _uniq, inverse, counts = torch.unique(pm, dim=0, return_inverse=True, return_counts=True)
    tokens = torch.nonzero(counts[inverse] == 1).flatten()[:20]
    st = {site: pm[tokens] * 3.0, "final": cache.signs("final", tokens).float()}
    wrong = (tokens + 1) % tiny.VOCAB
    res = reading_eval.e2_hamming(st, cache, model, tokens, wrong, ks=(1,), unembedding=False,
                                  current=tokens)
    assert res[site]["cache"]["own_top1"] == 1.0 and res[site]["cache"]["cur_top1"] == 1.0
    assert res[site]["cache"]["true_top1"] == 0.0  # a unique pattern is not its neighbour's
    assert set(res[site]) == {"cache"}
    # against="final": a resid.1 state is read against the final cache, so final patterns hit
    pf = cache.signs("final").float()
    _, inv_f, counts_f = torch.unique(pf, dim=0, return_inverse=True, return_counts=True)
    tok_f = torch.nonzero(counts_f[inv_f] == 1).flatten()[:20]
    res_f = reading_eval.e2_hamming({site: pf[tok_f]}, cache, model, tok_f, tok_f, ks=(1,),
                                    against="final", unembedding=False)
    assert res_f[site]["cache"]["own_top1"] == 1.0
    # (b) unembedding rows as the states: each finds its own token
    w = model.get_output_embeddings().weight.detach()
    rows = torch.tensor([4, 10, 50])
    res = reading_eval.e2_hamming({"final": w[rows]}, cache, model, rows, rows, ks=(1,))
    assert res["final"]["unembed"]["own_top1"] == 1.0


def test_e9_planted_dependence():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2000, 16, generator=g)
    res = reading_eval.e9_mi(x)
    json.dumps(res)
    assert res["n"] == 2000 and res["d"] == 16 and res["constant_dims"] == 0
    assert 0 <= res["mean_mi"] < 0.01 and res["max_mi"] < 0.02
    # with no constant dims it is exactly the shared summary
    ref = stats.mi_summary(x, seed=0)
    for key in ("mean_mi", "max_mi", "mean_mi_rotated", "max_mi_rotated"):
        assert res[key] == pytest.approx(ref[key], rel=1e-9, abs=1e-12)
    x[:, 1] = x[:, 0]  # a copied sign carries ~1 bit about its twin
    res = reading_eval.e9_by_site({"a": x})["a"]
    assert res["max_mi"] > 0.95
    assert res["max_mi_rotated"] < res["max_mi"]


def test_e9_constant_sign_dims_count_as_zero():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(997, 12, generator=g)
    x[:, 3] = 5.0  # always positive (like a massive-activation dim)
    x[:, 7] = -2.0  # always negative
    res = reading_eval.e9_mi(x)
    assert res["constant_dims"] == 2
    assert all(math.isfinite(v) for v in res.values())
    keep = [i for i in range(12) if i not in (3, 7)]
    sub = stats.mi_summary(x[:, keep], rotate_control=False)
    assert res["max_mi"] == pytest.approx(sub["max_mi"])
    assert res["mean_mi"] == pytest.approx(sub["mean_mi"] * (10 * 9) / (12 * 11))
