"""Verdict rules of the reading page (experiments.reading_verdicts) on made-up results."""

from experiments.reading_verdicts import verdicts


def _result(h_hi=0.98, above=30, top5=0.40, cache4096=0.29, unembed4096=0.92, max_mi=0.15,
            null_yield=0.0):
    ci = lambda m, lo, hi: {"median": m, "lo": lo, "hi": hi}  # noqa: E731
    cats = {f"c{i}": {"above_null": 1.0 if i < above else 0.0, "held_out_auc": 0.97}
            for i in range(30)}
    mi = {"mean_mi": 0.004, "max_mi": max_mi, "mean_mi_rotated": 0.01, "n": 1000}
    e2 = {"cache": {"own_top4096": cache4096, "chance_top4096": 0.08, "cur_top1": 0.15},
          "unembed": {"own_top4096": unembed4096}}
    e1 = {"all": {"top5_own": top5}, "scaled": {"top5_own": 0.47},
          "scaled_heldout": {"top5_own": 0.45}, "n": 1000}
    return {
        "e3_selection": {"choice": {"site": "resid.12", "label": "k=128"},
                         "held_out_auc": ci(0.97, 0.96, h_hi), "n_categories": 30,
                         "above_null": above, "null_listed": {"median": 0.84, "q10": 0.8, "q90": 0.88},
                         "embedding": ci(0.93, 0.9, 0.96), "gain_over_embedding": ci(0.03, 0.01, 0.06),
                         "mean_dim_auc": ci(0.63, 0.62, 0.65), "per_category": cats,
                         "evidence": {"alpha": 0.05}},
        "e3": {"resid.12": {"tau_dims_mean": 2.8}},
        "categories": {"used": 30, "skipped": 146},
        "e1": {"final": e1}, "e1_final_fracs": {"top_0.5": {"top5_own": 0.55},
                                                "top_0.01": {"top5_own": 0.06}},
        "e2": {"final": e2}, "n_positions": 1000,
        "e8": {"resid.0": {"yield": 0.4}, "final": {"yield": 0.87}},
        "e8_null": {"resid.0": {"yield": null_yield}, "final": {"yield": null_yield}},
        "e9": {"resid.0": mi, "final": dict(mi, mean_mi=0.006)},
    }


def _v(res):
    return {r["claim"][:12]: r["verdict"] for r in verdicts(res)}


def test_reading_verdict_rules():
    v = _v(_result())
    assert v["E3: prototyp"] == "reproduced"  # the interval reaches 0.975
    assert v["E3: mean per"] == "not reproduced"
    assert v["E3: 137–175 "] == "partially"  # 30/30, but only 30 of 176 categories usable
    assert v["E1: sign-onl"] == "not reproduced" and v["E1b: only th"] == "reproduced"
    assert v["E2: the mode"] == "partially"  # only the unembedding readout reaches 0.80
    assert v["E8: unsuperv"] == "partially"  # above its null, below 100%
    assert v["E9: mean pai"] == "partially" and v["E9: no pair "] == "not reproduced"
    v = _v(_result(h_hi=0.97, above=10, top5=0.7, cache4096=0.85, max_mi=0.05, null_yield=0.5))
    assert v["E3: prototyp"] == "not reproduced" and v["E3: 137–175 "] == "not reproduced"
    assert v["E1: sign-onl"] == "reproduced" and v["E2: the mode"] == "reproduced"
    assert v["E8: unsuperv"] == "not reproduced" and v["E9: no pair "] == "reproduced"
    v = _v(_result(h_hi=0.97, above=20))
    assert v["E3: prototyp"] == "partially"  # below the range, above both nulls for most
