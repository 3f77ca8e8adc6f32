import pytest
import tiny
import torch

from bagofdims import readers

from bagofdims.signs import bits

from bagofdims.features.feature import Feature


@pytest.fixture(scope="module")
def model():
    return tiny.make("llama")


def _head(model, x):
    with torch.no_grad():
        return model.get_output_embeddings()(x)


# -- score_features ------------------------------------------------------------------------------
def test_score_features_matches_direct_count():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 40, generator=g)
    feats = [Feature("a", "resid.1", [0, 5, 7], [1, -1, 1], width=40),
             Feature("b", "resid.1", torch.arange(10, 30), torch.ones(20), width=40)]
    got = readers.score_features(x, feats)
    direct = torch.stack([((x[:, f.dims] > 0) == (f.signs > 0)).float().mean(1) for f in feats], 1)
    assert got.shape == (50, 2)
    torch.testing.assert_close(got, direct)
    torch.testing.assert_close(readers.score_features(bits.pack_signs(x), feats), direct)


def test_score_features_width_errors():
    x = torch.randn(4, 40)
    mixed = [Feature("a", "resid.1", [0], [1], width=40), Feature("b", "k.1", [0], [1], width=16)]
    with pytest.raises(ValueError, match="different widths"):
        readers.score_features(x, mixed)
    with pytest.raises(ValueError, match="width 16 but the states have width 40"):
        readers.score_features(x, [Feature("b", "k.1", [0], [1], width=16)])
    with pytest.raises(ValueError, match="out of range|has width"):
        readers.score_features(torch.randn(4, 8), [Feature("c", "resid.1", [9], [1])])


# -- Hamming readout -----------------------------------------------------------------------------
def _brute_order(q_pm, k_pm):
    """Rows of keys best first: by agreement, then lowest row."""
    agree = (q_pm[:, None, :] == k_pm[None, :, :]).sum(-1)  # [n, V]
    rows = torch.arange(k_pm.shape[0]).expand_as(agree)
    key = agree * k_pm.shape[0] - rows  # higher agreement first, then lower row
    return key.argsort(1, descending=True), agree


def test_hamming_readout_finds_exact_pattern_and_maps_ids():
    g = torch.Generator().manual_seed(1)
    d, v = 45, 300
    keys_pm = torch.randint(0, 2, (v, d), generator=g) * 2 - 1
    keys = bits.pack_signs(keys_pm)
    token_ids = torch.randperm(1000, generator=g)[:v]
    targets = torch.tensor([7, 3, 299])
    states = keys_pm[targets].float() * torch.rand(3, d, generator=g)  # same signs, any magnitude
    scores, ids = readers.hamming_readout(states, keys, d, k=5, token_ids=token_ids)
    assert torch.equal(ids[:, 0], token_ids[targets])
    assert torch.equal(scores[:, 0], torch.ones(3))
    assert bool((scores[:, 1:] < 1).all())


def test_full_readout_and_ranks_equal_brute_force():
    g = torch.Generator().manual_seed(2)
    d, v, n = 13, 200, 30  # small d: many ties, which must go to the lowest row
    keys_pm = torch.randint(0, 2, (v, d), generator=g) * 2 - 1
    q = torch.randn(n, d, generator=g)
    order, agree = _brute_order((q > 0).long() * 2 - 1, keys_pm)
    scores, ids = readers.hamming_readout(q, bits.pack_signs(keys_pm), d, k=v)
    assert torch.equal(ids, order)
    torch.testing.assert_close(scores, agree.gather(1, order).float() / d)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[0] = -1  # a token that is not among the keys is never found
    ranks = readers.hamming_ranks(bits.pack_signs(q), bits.pack_signs(keys_pm), d, targets)
    expect = (order == targets[:, None]).int().argmax(1)
    assert ranks[0] == v
    assert torch.equal(ranks[1:], expect[1:])
    # several targets per state at once give the same ranks as one at a time
    other = torch.randint(0, v, (n,), generator=g)
    both = readers.hamming_ranks(q, bits.pack_signs(keys_pm), d, torch.stack([targets, other], 1))
    assert torch.equal(both[:, 0], ranks)
    assert torch.equal(both[:, 1], (order == other[:, None]).int().argmax(1))


def test_unembedding_signs(model):
    w = model.get_output_embeddings().weight
    packed = readers.unembedding_signs(model)
    assert packed.shape == (w.shape[0], bits.packed_width(w.shape[1]))
    assert torch.equal(bits.unpack_signs(packed, w.shape[1]), torch.where(w > 0, 1, -1).to(torch.int8))


# -- sign LM head --------------------------------------------------------------------------------
def test_sign_lm_head_modes(model):
    g = torch.Generator().manual_seed(3)
    h = torch.randn(6, tiny.D, generator=g)
    pm = torch.sign(h)
    torch.testing.assert_close(readers.sign_lm_head(model, pm), _head(model, pm))  # ±1 states
    torch.testing.assert_close(readers.sign_lm_head(model, h), _head(model, pm))
    # top: top_k = d is every dim; top_k = 1 keeps only the largest |h| dim
    torch.testing.assert_close(readers.sign_lm_head(model, h, "top", top_k=tiny.D), _head(model, pm))
    one = torch.zeros_like(h)
    j = h.abs().argmax(1)
    one[torch.arange(6), j] = pm[torch.arange(6), j]
    torch.testing.assert_close(readers.sign_lm_head(model, h, "top", top_k=1), _head(model, one))
    # top_frac 0.1 of 32 dims -> 4 dims
    four = torch.zeros_like(h)
    idx = h.abs().topk(4, 1).indices
    four.scatter_(1, idx, pm.gather(1, idx))
    torch.testing.assert_close(readers.sign_lm_head(model, h, "top", top_frac=0.1), _head(model, four))
    # scaled: default scale is the batch's mean |h|; an explicit scale is used as given
    torch.testing.assert_close(readers.sign_lm_head(model, h, "scaled"),
                               _head(model, pm * h.abs().mean(0)))
    s = torch.rand(tiny.D, generator=g)
    torch.testing.assert_close(readers.sign_lm_head(model, h, "scaled", scale=s), _head(model, pm * s))


def test_sign_lm_head_errors(model):
    with pytest.raises(ValueError, match="mode must be"):
        readers.sign_lm_head(model, torch.randn(2, tiny.D), mode="half")
    with pytest.raises(ValueError, match="'final' site"):
        readers.sign_lm_head(model, torch.randn(2, tiny.D + 1))
    with pytest.raises(ValueError, match="scale has"):
        readers.sign_lm_head(model, torch.randn(2, tiny.D), "scaled", scale=torch.ones(3))


# -- bad input -----------------------------------------------------------------------------------
def test_readers_refuse_nan_states_float_indices_and_mismatched_shapes(model):
    g = torch.Generator().manual_seed(6)
    d, v = 24, 50
    keys = bits.pack_signs(torch.randn(v, d, generator=g))
    x = torch.randn(4, d, generator=g)
    nan = x.clone()
    nan[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        readers.hamming_readout(nan, keys, d, k=3)
    with pytest.raises(ValueError, match="NaN"):
        readers.hamming_ranks(nan, keys, d, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN"):
        readers.sign_lm_head(model, torch.full((2, tiny.D), float("nan")))
    with pytest.raises(ValueError, match="NaN"):
        readers.mean_abs_scale(nan)
    with pytest.raises(ValueError, match="NaN"):
        readers.score_features(nan, [Feature("a", "s", [0, 1], [1, 1], width=d)])
    # float targets were truncated (2.7 -> row 2); -2 was read as "not among the keys"
    with pytest.raises(TypeError, match="must be integers"):
        readers.hamming_ranks(x, keys, d, torch.tensor([2.7, 1.0, 0.0, 3.0]))
    with pytest.raises(IndexError, match="-1"):
        readers.hamming_ranks(x, keys, d, torch.tensor([-2, 1, 0, 3]))
    with pytest.raises(ValueError, match="2 rows of targets"):
        readers.hamming_ranks(x, keys, d, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="one id per key row"):  # was an index error or silence
        readers.hamming_readout(x, keys, d, k=3, token_ids=torch.arange(v - 1))
    with pytest.raises(TypeError, match="must be integers"):
        readers.hamming_readout(x, keys, d, k=3, token_ids=torch.arange(v).float())
    with pytest.raises(TypeError, match="k must be an int"):
        readers.hamming_readout(x, keys, d, k=2.5)
    with pytest.raises(ValueError, match="width 25"):
        readers.hamming_readout(torch.randn(4, d + 1), keys, d)
    empty = Feature("e", "s", torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.int8))
    with pytest.raises(ValueError, match="no dims"):  # scored NaN before
        readers.score_features(x, [empty])
    with pytest.raises(TypeError, match="top_k must be an int"):
        readers.sign_lm_head(model, torch.randn(2, tiny.D), "top", top_k=2.5)
    with pytest.raises(ValueError, match="finite"):
        readers.sign_lm_head(model, torch.randn(2, tiny.D), "scaled",
                             scale=torch.full((tiny.D,), float("nan")))
    with pytest.raises(ValueError, match="no LM head"):
        readers.sign_lm_head(torch.nn.Linear(2, 2), torch.randn(2, 2))


def test_readers_are_thread_safe():
    """Many threads reading at once get what one thread gets (no shared buffers or caches)."""
    import threading

    g = torch.Generator().manual_seed(7)
    d, v = 40, 2000
    keys = bits.pack_signs(torch.randn(v, d, generator=g))
    states = [torch.randn(9, d, generator=g) for _ in range(16)]
    want = [readers.hamming_readout(s, keys, d, k=5) for s in states]
    wrong = []

    def worker(t):
        for r in range(3):
            for i in range(t % 4, 16, 2):
                got = readers.hamming_readout(states[i], keys, d, k=5)
                if not (torch.equal(got[0], want[i][0]) and torch.equal(got[1], want[i][1])):
                    wrong.append((t, i))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert wrong == []

