"""Sign-flip interventions on tiny random models: modes, positions, generate(), controls, safety."""

import pytest
import torch

import tiny
from bagofdims import Capture, hook_count
from bagofdims.features.feature import Feature
from bagofdims.steering.interventions import active_interventions, flip_values, sign_flip

SITE = "resid.1"


def _feature(width, site=SITE, step=2, name="f"):
    dims = list(range(0, width, step))
    return Feature(name, site, dims, [1 if i % 3 else -1 for i in range(len(dims))])


def _site_values(model, inp, site, flip=None):
    """The site's value as the rest of the model sees it (after the flip, if any)."""
    with Capture(model, site) as cap:
        if flip is None:
            model(**inp)
        else:
            with sign_flip(model, **flip):
                model(**inp)
    return cap[site]


@pytest.fixture(scope="module")
def llama():
    return tiny.make("llama")


@pytest.mark.parametrize("mode", ["away", "toward", "set"])
@pytest.mark.parametrize("strength", [1.0, 2.5])
def test_modes_match_definition(llama, mode, strength):
    inp = tiny.inputs("llama")
    # Capture registered first sees the raw value; the one inside the flip sees the flipped one.
    with Capture(llama, SITE) as raw:
        with sign_flip(llama, _feature(32), mode=mode, strength=strength), Capture(llama, SITE) as out:
            llama(**inp)
    x, y = raw[SITE], out[SITE]
    f = _feature(32)
    p = f.signs.float()
    sub = x[..., f.dims]
    if mode == "away":
        want = torch.where(sub * p > 0, -strength * sub, sub)
    elif mode == "toward":
        want = torch.where(sub * p < 0, -strength * sub, sub)
    else:
        want = strength * sub.abs() * p
    torch.testing.assert_close(y[..., f.dims], want)
    others = torch.ones(32, dtype=torch.bool)
    others[f.dims] = False
    torch.testing.assert_close(y[..., others], x[..., others])
    if mode == "away" and strength == 1.0:
        assert ((y[..., f.dims] * p) <= 0).all()  # nothing left agreeing with the prototype
    if mode != "away":
        assert ((y[..., f.dims] * p) >= 0).all()


def _changed_positions(model, inp, positions, site=SITE):
    with Capture(model, site) as raw:
        with sign_flip(model, _feature(32, site, step=1), mode="set", strength=3.0,
                       positions=positions), Capture(model, site) as out:
            model(**inp)
    return (out[site] != raw[site]).any(-1)  # [b, s]


def test_positions_left_and_right_padding(llama):
    inp = tiny.inputs("llama", seq=6)  # row 0 is left-padded by two tokens
    changed = _changed_positions(llama, inp, "last")
    want = torch.zeros(2, 6, dtype=torch.bool)
    want[:, -1] = True
    assert torch.equal(changed, want)
    right = {"input_ids": inp["input_ids"], "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    right["attention_mask"][1, -2:] = 0  # right padding on row 1: last real token is index 3
    changed = _changed_positions(llama, right, "last")
    assert changed[0].nonzero().flatten().tolist() == [5]
    assert changed[1].nonzero().flatten().tolist() == [3]
    assert _changed_positions(llama, inp, "all").all()
    assert torch.equal(_changed_positions(llama, inp, 2), torch.tensor([[0, 0, 1, 0, 0, 0]] * 2).bool())
    assert _changed_positions(llama, inp, slice(1, 3))[:, [1, 2]].all()
    assert _changed_positions(llama, inp, slice(1, 3)).sum() == 4
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4] = mask[1, 0] = True
    assert torch.equal(_changed_positions(llama, inp, mask), mask)


def _greedy(model, inp, n=5):
    return model.generate(**inp, max_new_tokens=n, min_new_tokens=n, do_sample=False)


@pytest.mark.parametrize("positions", ["all", "last"])
def test_generate_touches_every_decode_step(llama, positions):
    inp = tiny.inputs("llama", seq=6)
    n = 5
    f = _feature(32)
    with Capture(llama, SITE, keep_all=True) as raw:
        with sign_flip(llama, f, positions=positions) as flip, \
                Capture(llama, SITE, keep_all=True) as out:
            ids = _greedy(llama, inp, n)
    before, after = raw.history(SITE), out.history(SITE)
    assert len(before) == n and flip.calls[SITE] == n  # prefill + n-1 decode steps, KV cache on
    assert [t.shape[1] for t in before] == [6] + [1] * (n - 1)
    for step, (x, y) in enumerate(zip(before, after)):
        assert not torch.equal(x[:, -1], y[:, -1]), f"decode step {step} was not touched"
        where = None if positions == "all" else torch.zeros(x.shape[:2], dtype=torch.bool)
        if where is not None:
            where[:, -1] = True
        torch.testing.assert_close(y, flip_values(x, f.dims, f.signs, "away", 1.0, where)[0])
    assert ids.shape == (2, 6 + n)


def test_empty_feature_generation_is_plain(llama):
    inp = tiny.inputs("llama", seq=6)
    plain = _greedy(llama, inp, 8)
    empty = Feature("empty", SITE, [], [])
    with sign_flip(llama, empty, mode="away"):
        flipped = _greedy(llama, inp, 8)
    assert torch.equal(plain, flipped)
    with sign_flip(llama, _feature(32, step=1), mode="set", strength=4.0):  # a real flip does act
        assert not torch.equal(_greedy(llama, inp, 8), plain)


def test_nested_and_listed(llama):
    inp = tiny.inputs("llama")
    a = _feature(32, name="a")
    b = Feature("b", "resid.2", [1, 3], [1, -1])
    assert active_interventions(llama) == []
    with sign_flip(llama, a) as outer:
        with sign_flip(llama, [b, Feature("c", SITE, [1], [1])], mode="toward") as inner:
            assert active_interventions(llama) == [outer, inner] or \
                set(map(id, active_interventions(llama))) == {id(outer), id(inner)}
            llama(**inp)
            assert inner.calls == {SITE: 1, "resid.2": 1}
            assert hook_count(llama) == 3
        assert active_interventions(llama) == [outer]
        llama(**inp)
        assert outer.calls[SITE] == 2
        with pytest.raises(RuntimeError, match="already active"):
            outer.__enter__()
    assert hook_count(llama) == 0 and active_interventions(llama) == []


def test_exception_leaves_no_hooks_same_logits(llama):
    inp = tiny.inputs("llama")
    before = llama(**inp).logits
    with pytest.raises(ZeroDivisionError):
        with sign_flip(llama, _feature(32), positions="last"):
            assert hook_count(llama) == 2  # site hook + attention-mask reader
            llama(**inp)
            1 / 0
    assert hook_count(llama) == 0
    assert torch.equal(llama(**inp).logits, before)


def test_controls_disjoint_same_count_and_magnitude_matched(llama):
    inp = tiny.inputs("llama", seq=8)
    with Capture(llama, SITE) as cap:
        llama(**inp)
    ref = cap[SITE]
    mag = ref.abs().flatten(0, 1).mean(0)
    top = mag.argsort(descending=True)[:6]  # the feature holds the largest dims
    f = Feature("big", SITE, top, torch.ones(6))
    picked = {}
    for control in ("random", "disjoint"):
        with sign_flip(llama, f, control=control, seed=3) as flip:
            llama(**inp)
        d = flip.dims(SITE)
        assert len(d) == 6 and len(set(d.tolist()) & set(top.tolist())) == 0
        assert len(set(d.tolist())) == 6
        picked[control] = d
    # magnitude matching: the random control sits nearer the feature's magnitudes than disjoint
    err = {c: (mag[d].sort().values - mag[top].sort().values).abs().mean() for c, d in picked.items()}
    assert err["random"] < err["disjoint"]
    # same draw with the same seed and reference, whatever the input
    with sign_flip(llama, f, control="random", seed=3, reference={SITE: ref}) as flip:
        assert torch.equal(flip.dims(SITE), picked["random"])
    # the control only touches its own dims, with "away" relative to their usual sign
    with Capture(llama, SITE) as raw:
        with sign_flip(llama, f, control="disjoint", seed=3), Capture(llama, SITE) as out:
            llama(**inp)
    moved = (out[SITE] != raw[SITE]).flatten(0, 1).any(0).nonzero().flatten()
    assert set(moved.tolist()) <= set(picked["disjoint"].tolist())


def test_concept_control_flips_the_other_feature(llama):
    inp = tiny.inputs("llama")
    f, other = Feature("f", SITE, [0, 1], [1, 1]), Feature("g", SITE, [10, 11, 12], [1, -1, 1])
    with Capture(llama, SITE) as raw:
        with sign_flip(llama, f, mode="set", strength=5.0, control=other), \
                Capture(llama, SITE) as out:
            llama(**inp)
    moved = (out[SITE] != raw[SITE]).flatten(0, 1).any(0).nonzero().flatten().tolist()
    assert moved == [10, 11, 12]


@pytest.mark.parametrize("family,site", [("gpt2", "k.1"), ("gemma3", "k.1"), ("qwen3", "v.2"),
                                         ("llama", "neurons.0")])
def test_fused_and_reshaped_sites(family, site):
    model = tiny.make(family)
    inp = tiny.inputs(family)
    other = "v.1" if site == "k.1" else "resid.0"
    with Capture(model, [site, other]) as raw:
        model(**inp)
    w = raw[site].shape[-1]
    f = _feature(w, site)
    with sign_flip(model, f, mode="set", strength=2.0), Capture(model, [site, other]) as out:
        model(**inp)
    x, y = raw[site], out[site]
    torch.testing.assert_close(y[..., f.dims], 2.0 * x[..., f.dims].abs() * f.signs.float())
    if other == "v.1":  # the other part of a fused projection (or the other norm) is untouched
        torch.testing.assert_close(out[other], raw[other])


def test_bad_input_names_the_fix(llama):
    f = _feature(32)
    with pytest.raises(ValueError, match="mode"):
        sign_flip(llama, f, mode="flip")
    with pytest.raises(ValueError, match="positions"):
        sign_flip(llama, f, positions="first")
    with pytest.raises(ValueError, match="control"):
        sign_flip(llama, f, control="shuffled")
    with pytest.raises(TypeError, match="Feature"):
        sign_flip(llama, [])
    with pytest.raises(Exception, match="resid"):
        sign_flip(llama, Feature("x", "resid.99", [0], [1]))
    assert hook_count(llama) == 0


# -- flip_effect / specificity (bagofdims.steering.effects) ----------------------------------------------
def _tiny_catalog(model, tok):
    from bagofdims.signs.cache import SignCache
    from bagofdims.catalog import Catalog
    from bagofdims.features.discovery import DiscoveryConfig

    cache = SignCache.build(model, tok, sites=["resid.*"], progress=False)
    cats = {"low": [f"w{i}" for i in range(3, 30)], "mid": [f"w{i}" for i in range(30, 60)],
            "high": [f"w{i}" for i in range(60, 90)]}
    return Catalog.build(cache, categories=cats, tokenizer=tok, n_anchors=12, n_min_held_out=5,
                         config=DiscoveryConfig(k=8), progress=False)


def test_next_token_mass_ignores_padding_side(llama):
    from bagofdims.steering.effects import next_token_mass

    tok = tiny.tokenizer()
    prompts, sets = ["w5 w6 w7 w8", "w9 w10"], [torch.arange(3, 20), torch.tensor([40, 41])]
    tok.padding_side = "right"
    right = next_token_mass(llama, tok, prompts, sets)
    tok.padding_side = "left"
    left = next_token_mass(llama, tok, prompts, sets)
    single = torch.cat([next_token_mass(llama, tok, [p], sets) for p in prompts])
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(left, single, atol=1e-5, rtol=1e-4)
    assert right.shape == (2, 2) and bool((right > 0).all() & (right < 1).all())


def test_flip_effect_matches_manual_flip_and_controls_reported(llama):
    from bagofdims.steering.effects import concept_tokens, flip_effect, next_token_mass, specificity_matrix

    tok = tiny.tokenizer()
    cat = _tiny_catalog(llama, tok)
    prompts = ["w3 w4 w5 w6", "w7 w8 w9"]
    eff = flip_effect(llama, tok, cat, "low", prompts=prompts, layers=[1, 2])
    assert eff.sites == ["resid.1", "resid.2"] and eff.control_concept in ("mid", "high")
    assert set(eff.delta_mass) == {"away", "toward", "random", "disjoint", "concept"}
    assert all(len(v) == 2 for v in eff.delta_logp.values())
    f = cat.get("low", "resid.2")
    base = next_token_mass(llama, tok, prompts, [concept_tokens(f)])[:, 0]
    with sign_flip(llama, f, mode="away"):
        flipped = next_token_mass(llama, tok, prompts, [concept_tokens(f)])[:, 0]
    assert eff.delta_mass["away"][1] == pytest.approx(float((flipped - base).mean()), abs=1e-9)
    assert eff.delta_mass["away"][1] != 0.0
    # a feature without dims has no effect at all
    empty = {"resid.1": Feature("low", "resid.1", [], [], anchors=f.anchors)}
    none = flip_effect(llama, tok, empty, "low", prompts=prompts, conditions=("away", "random"))
    assert none.delta_mass == {"away": [0.0], "random": [0.0]}
    spec = specificity_matrix(llama, tok, cat, ["low", "mid"], "resid.2",
                              prompts={"low": prompts, "mid": ["w31 w32 w33"]})
    assert len(spec["delta_mass"]) == 2 and len(spec["delta_mass"][0]) == 2
    assert spec["delta_mass"][0][0] == pytest.approx(eff.delta_mass["away"][1], abs=1e-7)
    with pytest.raises(ValueError, match="conditions"):
        flip_effect(llama, tok, cat, "low", prompts=prompts, conditions=("sideways",))


def test_steer_side_by_side(llama, capsys):
    from bagofdims.cli.main import steer_main
    from bagofdims.cli.steer import SteerConfig, format_result, steer

    tok = tiny.tokenizer()
    cat = _tiny_catalog(llama, tok)
    cfg = SteerConfig(feature="low", prompt="w3 w4 w5", site="resid.2", mode="set", strength=4.0,
                      max_new_tokens=6)
    res = steer(cfg, model=llama, tok=tok, cat=cat)
    assert res["baseline"] != res["intervened"] and res["baseline_mass"] != res["intervened_mass"]
    text = format_result(res, width=30)
    assert "baseline" in text and "intervened" in text and "->" in text
    assert hook_count(llama) == 0
    with pytest.raises(SystemExit):
        steer_main(["--catalog", "x"])  # --feature is required
    assert "--feature" in capsys.readouterr().err


def test_next_token_mass_on_an_encoder_is_a_clear_error():
    from bagofdims.errors import InvalidArgument
    from bagofdims.steering.effects import next_token_mass

    with pytest.raises(InvalidArgument, match="language-model head"):
        next_token_mass(tiny.make("bert"), tiny.tokenizer(), ["w1 w2"], [torch.tensor([3])])


# -- strength_sweep (bagofdims.steering.effects) -----------------------------------------------------
def _greedy_ppl(model, tok, prompt, n=16):
    """The unsteered greedy continuation's perplexity, computed without strength_sweep."""
    from bagofdims.steering.effects import continuation_perplexity

    enc = tok([prompt], return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=2)
    p = enc["input_ids"][0]
    return continuation_perplexity(model, p, out[0, len(p):])


def test_strength_sweep_baseline_first_and_perplexity_rises(llama):
    from bagofdims.steering.effects import degrades_at, strength_sweep

    tok = tiny.tokenizer()
    wide = Feature("wide", SITE, list(range(32)), [1 if i % 3 else -1 for i in range(32)],
                   anchors=[5, 6, 7])  # every dim of the site
    seen = []
    rows = strength_sweep(llama, tok, wide, "w40 w41", [8, 0.5, 0], on_row=seen.append)
    assert seen == rows and hook_count(llama) == 0
    assert [r["strength"] for r in rows] == [None, 0.0, 0.5, 8.0]  # baseline, then ascending
    base = rows[0]
    assert base["ppl"] == pytest.approx(_greedy_ppl(llama, tok, "w40 w41"), rel=1e-5)
    assert base["ratio"] == 1.0 and base["degraded"] is False and base["n_tokens"] == 16
    assert rows[-1]["ppl"] > 1.3 * base["ppl"]  # flipping every dim hard breaks the text
    for r in rows:
        assert r["ratio"] == pytest.approx(r["ppl"] / base["ppl"])
        assert r["degraded"] == (r["strength"] is not None and r["ratio"] > 2.0)
        assert 0 < r["mass"] < 1 and isinstance(r["text"], str)
    assert rows[-1]["mass"] != base["mass"]  # the flip moves the next-token distribution
    # nothing flipped: every strength, 0 included, reproduces the baseline exactly
    empty = Feature("empty", SITE, [], [], anchors=[5, 6, 7])
    flat = strength_sweep(llama, tok, empty, "w40 w41", [0, 1, 8])
    assert [r["ppl"] for r in flat] == [base["ppl"]] * 4
    assert {r["text"] for r in flat} == {base["text"]} and degrades_at(flat) is None
    # no anchor tokens: no mass to report, the rest as before
    bare = strength_sweep(llama, tok, Feature("bare", SITE, [0, 1], [1, -1]), "w5 w6", [1],
                          max_new_tokens=4)
    assert [r["mass"] for r in bare] == [None, None] and bare[0]["n_tokens"] == 4


def test_strength_sweep_degrades_at_and_cancel(llama):
    import threading

    from bagofdims.steering.effects import degrades_at, strength_sweep

    rows = [{"strength": None, "ppl": 10.0}, {"strength": 1.0, "ppl": 19.0},
            {"strength": 2.0, "ppl": 21.0}, {"strength": 4.0, "ppl": 90.0}]
    assert degrades_at(rows) == 2.0 and degrades_at(rows, factor=10) is None
    stop = threading.Event()
    out = strength_sweep(llama, tiny.tokenizer(), _feature(32), "w5 w6", [1, 2, 4],
                         on_row=lambda r: stop.set(), cancel=stop, max_new_tokens=3)
    assert [r["strength"] for r in out] == [None]  # stopped after the baseline
    assert hook_count(llama) == 0


def test_strength_sweep_refuses_bad_input(llama):
    from bagofdims.errors import InvalidArgument
    from bagofdims.steering.effects import check_strengths, strength_sweep

    tok, f = tiny.tokenizer(), _feature(32)
    for bad, words in [([], "1 to 8"), (list(range(1, 10)), "1 to 8"), ([1, -1], ">= 0"),
                       ([float("nan")], "finite"), ([float("inf")], "finite"), ([True], "finite"),
                       (["2"], "finite"), ("1,2", "list of numbers"), ([2, 2.0], "repeat")]:
        with pytest.raises(InvalidArgument, match=words):
            strength_sweep(llama, tok, f, "w5 w6", bad)
    assert check_strengths((4, 1, 0.5)) == [0.5, 1.0, 4.0]
    with pytest.raises(InvalidArgument, match="max_new_tokens"):
        strength_sweep(llama, tok, f, "w5", [1], max_new_tokens=0)
    with pytest.raises(InvalidArgument, match="mode"):
        strength_sweep(llama, tok, f, "w5", [1], mode="sideways")
    with pytest.raises(InvalidArgument, match="positions"):
        strength_sweep(llama, tok, f, "w5", [1], max_new_tokens=70)
    with pytest.raises(InvalidArgument, match="language-model head"):
        strength_sweep(tiny.make("bert"), tok, f, "w5", [1])
    assert hook_count(llama) == 0
