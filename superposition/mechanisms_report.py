"""The mechanisms of one trained run -> ``mechanisms.json`` and figures; and its report section.

    analyze_mechanisms(MechanismsConfig(run="runs/bows/m1000_wd4", out="reports/bows/m1000_wd4"))

Each ``*_metrics`` function takes a loaded model and its data (or nothing, for the synthetic
shapes), writes its figure into ``out`` and returns a JSON-ready dict with the figure's file
name under ``"figure"``. :func:`superposition.mechanisms_md.markdown_section` renders them.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import mechanism_plots as P
from .antipodal import pair_cosines, planted_pairs, word_pairs
from .bridge import category_reading, lm_reference
from .data import BowsData
from .interference import alone_preactivation, partner_contributions, pick_targets, switched_on
from .manifolds import ManifoldConfig, run_manifolds
from .mechanisms_md import markdown_section
from .train import load_model
from .values import gazetteer, number_words, value_coding, words_with_values
from bagofdims.errors import NothingFound
from bagofdims.storage import atomic_file, remove_stale_temps

__all__ = ["MechanismsConfig", "analyze_mechanisms", "interference_metrics", "value_metrics",
           "antipodal_metrics", "shape_metrics", "bridge_metrics", "markdown_section"]


@dataclass
class MechanismsConfig:
    """Settings of the mechanism analyses of one trained run."""
    run: str = "runs/bows/m1000_wd4"
    """Trained run directory (the --out of `bows train`)."""
    out: str = "reports/bows/m1000_wd4"
    """Directory for mechanisms.json and the figures."""
    top_words: int = 1000
    """Most frequent words whose constructive interference is measured."""
    max_windows: int = 4000
    """Held-out (validation) windows used at most for the interference rates."""
    min_contexts: int = 5
    """Held-out windows a word must occur in to count for constructive interference."""
    pair_words: int = 300
    """Most frequent words among which never-co-occurring pairs are sought."""
    min_expected: float = 5.0
    """A pair counts as exclusive when it shares no training window although independence
    predicts at least this many shared windows."""
    value_null: int = 100
    """Shuffled-target repetitions of the value-coding regression (its null)."""
    lm_report: str = "reports/smollm2/reading.json"
    """Reading report of a language model to compare the category features with (empty: none)."""
    bridge_anchors: int = 10
    """Anchor words per category for the sign features on the toy latents."""
    synthetic_steps: int = 3000
    """Adam steps of the figure-8 / sphere and antipodal-pair toy runs."""
    shape_shuffles: int = 200
    """Shuffled controls per figure-8 / sphere recovery number."""
    seed: int = 0
    """Seed of folds, shuffles, synthetic data and weights."""


def interference_metrics(model, data: BowsData, out: Path, cfg: MechanismsConfig) -> dict:
    """Words switched on by their context (held-out windows), partner split of the first ones."""
    W, b = model.W.detach(), model.b.detach()
    X = data.split("val")[: cfg.max_windows]
    top = np.argsort(-data.frequency)[: cfg.top_words]
    res = switched_on(W, b, X, top, data.vocab, min_contexts=cfg.min_contexts)
    details = [partner_contributions(W, b, X, data.index[w], data.vocab) for w in pick_targets(res)]
    res["details"] = [{k: v for k, v in d.items() if not k.startswith("pre_")} for d in details]
    res["figure"] = P.plot_interference(alone_preactivation(W, b)[top], details[0] if details else None,
                                        out / "constructive_interference.png")
    res["target_rule"] = "switched-on words with the most held-out contexts (fixed before looking)"
    return res


def value_metrics(model, data: BowsData, out: Path, cfg: MechanismsConfig) -> dict:
    """Latitude / longitude of place words and the value of number words from their latents."""
    W = model.W.detach().double().numpy()
    res = {}
    for name, table, targets in (("places", lambda: gazetteer(), ["latitude", "longitude"]),
                                 ("numbers", lambda: number_words(data.vocab), ["value"])):
        try:
            words, ids, y = words_with_values(data.index, table(), min_words=20)
        except (NothingFound, ImportError) as err:
            res[name] = {"skipped": str(err)}
            continue
        res[name] = value_coding(W[:, ids].T, y, words, targets, n_null=cfg.value_null, seed=cfg.seed)
    res["source"] = "places: countryinfo (country, capital and demonym words); numbers: the vocabulary's 0-100"
    res["figure"] = P.plot_values({k: v for k, v in res.items() if isinstance(v, dict)}, out / "value_coding.png")
    return res


def antipodal_metrics(model, data: BowsData, out: Path, cfg: MechanismsConfig) -> dict:
    """Planted exclusive pairs (synthetic) and never-co-occurring frequent words (the run)."""
    planted, Ws = planted_pairs(weight_decay="0,1", steps=cfg.synthetic_steps, seed=cfg.seed)
    k = len(planted["runs"]) - 1
    cos = pair_cosines(Ws[k, : planted["latent"]], np.arange(planted["features"]).reshape(-1, 2))
    top = np.argsort(-data.frequency)[: cfg.pair_words]
    words = word_pairs(model.W.detach(), data.split("train"), top, data.vocab, cfg.min_expected)
    fig = P.plot_antipodal(planted, cos, words, out / "antipodal_pairs.png")
    planted["figure_weight_decay"] = planted["runs"][k]["weight_decay"]
    return {"planted": planted, "words": {k: v for k, v in words.items() if not k.startswith("cos_")},
            "figure": fig}


def shape_metrics(out: Path, cfg: MechanismsConfig) -> dict:
    """Figure-8 and sphere toy runs (independent of the trained run)."""
    metrics, arrays = run_manifolds(ManifoldConfig(steps=cfg.synthetic_steps, shuffles=cfg.shape_shuffles,
                                                     seed=cfg.seed))
    metrics["figure"] = P.plot_shapes(arrays, metrics, out / "shapes.png")
    return metrics


def bridge_metrics(model, data: BowsData, cfg: MechanismsConfig) -> dict:
    """Category sign features on the toy latents next to the language model's report."""
    res = category_reading(model.W.detach(), data.vocab, n_anchors=cfg.bridge_anchors, seed=cfg.seed)
    lm = lm_reference(cfg.lm_report) if cfg.lm_report else None
    res["lm"] = lm
    if lm is not None and "trained" in res:
        common = sorted(set(lm["per_category"]) & set(res["trained"]["per_category"]))
        res["common_categories"] = {c: {"toy": res["trained"]["per_category"][c], "lm": lm["per_category"][c]}
                                    for c in common}
    return res


def analyze_mechanisms(cfg: MechanismsConfig) -> dict:
    """All mechanism analyses of ``cfg.run`` into ``cfg.out`` (mechanisms.json + PNGs)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    model, tcfg = load_model(cfg.run)
    data = BowsData(tcfg["data"])
    m = {"run": cfg.run, "settings": asdict(cfg), "latent": tcfg["latent"], "weight_decay": tcfg["weight_decay"],
         "vocab_size": data.vocab_size,
         "interference": interference_metrics(model, data, out, cfg),
         "values": value_metrics(model, data, out, cfg),
         "antipodal": antipodal_metrics(model, data, out, cfg),
         "shapes": shape_metrics(out, cfg),
         "bridge": bridge_metrics(model, data, cfg)}
    with atomic_file(out / "mechanisms.json", "w") as f:
        f.write(json.dumps(m, indent=2, default=float))
    return m
