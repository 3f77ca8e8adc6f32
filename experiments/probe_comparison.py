"""E4: trained probes against the training-free sign prototypes of the catalog (``probes.md``,
``probes.json``, ``probes.png``).

    python scripts/reproduce_probes.py --model smollm2                      # logistic + MLP
    python scripts/reproduce_probes.py --model smollm2 --mlp 0              # logistic only
    python scripts/reproduce_probes.py --model gemma3-270m --folds 3 --max-negatives 60000

Needs ``<runs>/<model>/cache`` and ``<runs>/<model>/catalog`` (the reading report builds both).
Sites, never chosen on held-out results (unless ``--sites`` is given): the site the reading
report chose by nested CV on the anchors (``reading.json`` -> ``e3_selection`` -> ``choice``),
else the catalog site with the highest mean per-dim AUC on the anchors; plus a late site fixed
by ``--late-depth`` (a share of the residual sites). The logistic penalty is chosen per category
and fold by inner CV on training rows (``--l2-grid``); the rotation control repeats the
comparison in a Haar-random basis. MLP probes on every category at the first site (``--mlp``).
Inputs: the cached ±1 signs and raw states (one forward pass per vocabulary token, as the cache
was built). Partial results are written after each site; the verdict rules live in
``experiments/probe_verdicts.py``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

import bagofdims as bd
from bagofdims.errors import InvalidArgument, MissingFile
from probes import compare_to_catalog
from probes.cv import L2_GRID
from experiments import probe_verdicts
from experiments.probe_verdicts import PAPER
from experiments.report import command, fmt, pyplot, save_figure, write_json, write_text
from experiments.runs import REPORTS, RunConfig, entry, model_tag

__all__ = ["PAPER", "ProbesConfig", "main", "markdown", "pick_sites", "plot"]

SCRIPT = "scripts/reproduce_probes.py"


@dataclass
class ProbesConfig(RunConfig):
    """Reproduce the paper's E4: trained probes vs the training-free sign prototypes."""

    sites: tuple[str, ...] | None = None
    """sites to compare at (default: the anchors-chosen site and the late site)"""
    inputs: tuple[str, ...] = ("signs", "states")
    """probe inputs: the cached signs and/or the raw states"""
    folds: int = 5
    l2_grid: tuple[float, ...] = L2_GRID
    """logistic penalties (standardised inputs) chosen from by inner CV on training rows"""
    inner_folds: int = 3
    inner_negatives: int = 8192
    """training negatives (seeded sample) in the inner CV that picks l2"""
    late_depth: float = 2 / 3
    """the late site: this share of the way through the residual sites (fixed before results)"""
    reading: str | None = None
    """reading.json whose anchors-only site choice is used (default: <out>/reading.json, then
    reports/<model>/reading.json)"""
    rotation_seed: int = 0
    """seed of the Haar-random rotation of the control"""
    mlp: int = -1
    """MLP probes on this many categories (evenly spaced) at the first site; -1: all, 0: none"""
    mlp_sites: tuple[str, ...] | None = None
    """sites for the MLP (default: the first site)"""
    mlp_epochs: int = 15
    max_negatives: int | None = None
    """a seeded sample of this many non-member tokens as negatives (default: all)"""
    threads: int = 2
    name: str = "probes"
    """report file stem"""


def pick_sites(cat, reading: dict | None, late_depth: float = 2 / 3) -> tuple[list[str], str]:
    """(sites, how each was chosen), never from held-out results.

    Primary: the reading report's site chosen by nested CV on the anchors (its ``e3_selection``
    choice) when ``reading`` has one and the catalog covers it; else the catalog site with the
    highest mean per-dim AUC on the anchors (``Feature.dim_auc``: anchors vs the vocabulary).
    Late: the residual site ``late_depth`` of the way through (by position only).
    """
    if not 0 <= late_depth < 1:
        raise InvalidArgument(f"late_depth must be in [0, 1), got {late_depth}")
    choice = ((reading or {}).get("e3_selection") or {}).get("choice") or {}
    if choice.get("site") in cat.sites:
        first = choice["site"]
        how = (f"{first} is the site the reading report chose by nested cross-validation on the "
               f"anchors only (e3_selection, {choice.get('label', '?')}; inner median AUC "
               f"{fmt(choice.get('inner_median'))})")
    else:
        by = defaultdict(list)
        for f in cat:
            if f.dim_auc is not None and len(f.dim_auc):
                by[f.site].append(float(torch.as_tensor(f.dim_auc).float().mean()))
        if not by:
            raise InvalidArgument("no reading report choice and no feature with per-dim anchor "
                                  "AUCs to choose a site by; pass --sites or --reading")
        mean = {st: statistics.fmean(v) for st, v in by.items()}
        first = max(mean, key=mean.get)
        how = (f"{first} has the highest mean per-dim AUC on the anchors ({mean[first]:.3f}; the "
               "catalog's anchors-only rule, no reading report choice found)")
    resid = [st for st in cat.sites if st.startswith("resid.")] or list(cat.sites)
    late = resid[int(late_depth * len(resid))]
    sites = list(dict.fromkeys([first, late]))
    how += (f"; {late} is the late site fixed in the config before any result (late_depth = "
            f"{late_depth:.3g} of {len(resid)} residual sites)" if late != first else "")
    return sites, how + "."


def _reading(cfg) -> tuple[dict | None, str | None]:
    paths = ([Path(cfg.reading)] if cfg.reading else
             [cfg.out_dir / "reading.json", REPORTS / model_tag(cfg.model) / "reading.json"])
    for p in paths:
        if p.exists():
            return json.loads(p.read_text()), str(p)
    if cfg.reading:
        raise MissingFile(f"{cfg.reading} does not exist; pass a reading.json or drop --reading")
    return None, None


def plot(reports: list[dict], path) -> None:
    plt = pyplot()
    rot = all("rot_mass_on_dims" in r for rep in reports for r in rep["rows"])
    fig, ax = plt.subplots(1, 3 if rot else 2, figsize=(16 if rot else 11, 4.5))
    marks = {"signs": "o", "states": "^"}
    for rep in reports:
        for inp in rep["settings"]["inputs"]:
            rs = [r for r in rep["rows"] if r["input"] == inp]
            lab = f"{rep['site']} {inp}"
            ax[0].scatter([r["proto_auc"] for r in rs], [r["logistic_auc"] for r in rs], s=16,
                          marker=marks[inp], label=lab, alpha=0.75)
            ax[1].scatter([r["proto_auc"] for r in rs], [r["sign_agreement"] for r in rs], s=16,
                          marker=marks[inp], label=lab, alpha=0.75)
            if rot:
                ax[2].scatter([r["rot_mass_on_dims"] for r in rs], [r["mass_on_dims"] for r in rs],
                              s=16, marker=marks[inp], label=lab, alpha=0.75)
    lo = min(r["proto_auc"] for rep in reports for r in rep["rows"]) - 0.02
    ax[0].plot([lo, 1], [lo, 1], "k--", lw=0.8)
    ax[0].set(xlabel="prototype held-out AUC", ylabel="logistic probe held-out AUC",
              title="probe vs prototype (same test rows)")
    ax[1].axhline(PAPER["sign_agreement"], color="k", ls=":", lw=0.8, label="paper 99.9%")
    ax[1].set(xlabel="prototype held-out AUC", ylabel="sign agreement of w on prototype dims",
              title="do the probe's weights agree with the prototype?")
    if rot:
        hi = max(max(r["mass_on_dims"], r["rot_mass_on_dims"]) for rep in reports
                 for r in rep["rows"]) + 0.02
        ax[2].plot([0, hi], [0, hi], "k--", lw=0.8)
        ax[2].set(xlabel="|w| share on the rotated prototype's dims (rotated basis)",
                  ylabel="|w| share on the prototype's dims (standard basis)",
                  title="axis alignment vs a random-rotation control")
    for a in ax:
        a.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def _grid_edge(res: dict) -> str:
    """How often the chosen penalty is the grid's largest: then the grid, not the data, set it."""
    top = max(res["settings"]["l2_grid"])
    folds = [x for rep in res["reports"] for r in rep["rows"] for x in r.get("l2_folds") or []]
    edge = sum(x >= top for x in folds)
    if not edge:
        return ""
    return (f" (**{edge} of {len(folds)} fold choices are the grid's largest value {top:g}: the "
            "penalty is capped by the grid there; widen it with --l2-grid**)")


def markdown(res: dict) -> str:
    """The probes page: verdict table first, then protocol, summary and per-category tables."""
    if "verdicts" not in res:  # written before l2 by CV and the verdict table
        raise InvalidArgument("this probes.json was written by an earlier version of the report "
                              "(no verdicts); rerun scripts/reproduce_probes.py.")
    st = res["settings"]
    L = [f"# Trained probes vs sign prototypes (E4) on {res['model']}", "",
         f"Regenerate: `{res['command']}` ({res['seconds']:.0f} s on a 2-core CPU). "
         f"Vocabulary {res['vocab']:,} tokens, width {res['width']}; {res['n_categories']} "
         "catalog categories per site.", "", "## Verdicts", "",
         probe_verdicts.table(res["verdicts"]),
         "Rules (fixed in `experiments/probe_verdicts.py` before any result): verdicts use the "
         "first site and the states input; intervals are 95% percentile bootstraps over "
         "categories (1000 resamples). (a) reproduced when the interval contains +0.018, "
         "partially when it lies above 0; (b) reproduced when it reaches 0.99, partially when its "
         "lower end is ≥ 0.75; (c) reproduced when the interval of the share minus the rotated "
         "share lies above 0 and the shares' ratio is ≥ 1.5, partially when only the first holds; "
         "(d) reproduced when the MLP − logistic interval stays ≤ +0.005, not reproduced when it "
         "lies above.", "",
         f"Sites: {res['site_choice']}", "",
         "Protocol: per category, a logistic probe (L2 on standardised inputs, class-balanced) "
         "trains on the catalog's 50 anchors vs the rest of the vocabulary and is tested on the "
         "catalog's held-out members vs the test negatives, with negatives and held-out members "
         f"split into {st['folds']} folds; anchors are never tested. The penalty is chosen per "
         f"category in every fold from {st['l2_grid']} by {st['inner_folds']}-fold CV on that "
         "fold's training rows only (anchors vs a seeded sample of "
         f"{st['inner_negatives']:,} training negatives; highest mean inner AUC, ties to the "
         "smaller penalty); the `l2` column is the median of a category's per-fold choices"
         + _grid_edge(res) + ". The "
         "prototype (share of its dims whose sign agrees) is scored on the same test rows, so "
         "the gain is paired. Sign agreement and |w| share use the fold-averaged standardised "
         "weights on the prototype's dims (chance share = |D|/d).", "",
         "Rotation control: the states are rotated by one Haar-random orthogonal R "
         f"(`bagofdims.stats.random_rotation`, seed {st['rotation_seed']}); prototypes are found "
         "again in that basis by the catalog's rule (per-dim sign AUC of the anchors, same k), "
         "and the same probe (same inputs: signs of the rotated states or the rotated states, "
         "same folds and l2 CV) is measured on them (`rot_*` columns). A probe that is "
         "axis-aligned puts more |w| on the standard-basis prototype than the rotated probe "
         "puts on the rotated one.", ""]
    if res.get("max_negatives"):
        L += [f"Negatives: a seeded sample of {res['max_negatives']:,} non-member tokens "
              "(same rows for probe and prototype).", ""]
    L += [f"MLP: {res['mlp_note']}", "", f"![probes]({res['name']}.png)", "", "## Summary", "",
          "| site | input | prototype AUC | logistic AUC | gain mean ± std | probe wins "
          "| l2 chosen (categories) | sign agreement (rotated) | \\|w\\| share on D (rotated; "
          "chance) | rotated prototype AUC | MLP − logistic (n) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in res["reports"]:
        for inp, s in rep["summary"].items():
            mlp = (f"{s['mlp_minus_logistic_mean']:+.3f} ({s['mlp_categories']})"
                   if "mlp_gain_mean" in s else "–")
            l2 = ", ".join(f"{k}: {v}" for k, v in s["l2_chosen"].items())
            L.append(f"| {rep['site']} | {inp} | {s['proto_auc_mean']:.3f} | "
                     f"{s['logistic_auc_mean']:.3f} | {s['gain_mean']:+.3f} ± {s['gain_std']:.3f} | "
                     f"{s['probe_wins']:.0%} | {l2} | {s['sign_agreement_mean']:.3f} "
                     f"({fmt(s.get('rot_sign_agreement_mean'))}) | {s['mass_on_dims_mean']:.3f} "
                     f"({fmt(s.get('rot_mass_on_dims_mean'))}; {s['chance_mass_mean']:.3f}) | "
                     f"{fmt(s.get('rot_proto_auc_mean'))} | {mlp} |")
    L += ["", "Gain = logistic AUC − prototype AUC on the same held-out members and test "
          "negatives; ± is the std over categories. Per-fold choices of l2 are in probes.json "
          "(`l2_folds`).", ""]
    for rep in res["reports"]:
        for inp in rep["settings"]["inputs"]:
            L += [f"## {rep['site']}, {inp}", "", rep["tables"][inp]]
    return "\n".join(L) + "\n"


def main(argv=None) -> dict:
    """Parse the flags, compare probes and prototypes site by site, write the report."""
    cfg = tyro.cli(ProbesConfig, args=argv)
    out = cfg.out_dir
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    if not (cfg.run_dir / "catalog").is_dir():
        raise MissingFile(f"{cfg.run_dir / 'catalog'} does not exist: E4 compares probes with the "
                          "catalog the reading report saves there; run scripts/reproduce_reading.py "
                          f"--model {cfg.model} --runs {cfg.runs} first.")
    cache = bd.SignCache.load(cfg.run_dir / "cache", verify=False)
    model, tok = bd.load_model(cfg.model, device="cpu")  # states: inputs and rotation control
    cat = bd.Catalog.load(cfg.run_dir / "catalog", cache=cache, model=model, tokenizer=tok)
    reading, reading_path = _reading(cfg)
    if cfg.sites:
        sites, choice = list(cfg.sites), f"{', '.join(cfg.sites)} (given on the command line)."
    else:
        sites, choice = pick_sites(cat, reading, cfg.late_depth)
    mlp_sites = list(cfg.mlp_sites) if cfg.mlp_sites is not None else sites[:1]
    mlp_kw = dict(hidden=32, max_epochs=cfg.mlp_epochs, patience=3, lr=3e-3)
    n_mlp = len(cat.names) if cfg.mlp < 0 else cfg.mlp
    mlp_arg = True if cfg.mlp < 0 else cfg.mlp
    res = {"model": cfg.model, "vocab": len(cache), "width": cache.width(sites[0]),
           "n_categories": len(cat.names), "folds": cfg.folds, "max_negatives": cfg.max_negatives,
           "site_choice": choice, "reading_json": reading_path, "paper": PAPER,
           "rules": probe_verdicts.RULES, "reports": [],
           "settings": {"folds": cfg.folds, "l2_grid": list(cfg.l2_grid),
                        "inner_folds": cfg.inner_folds, "inner_negatives": cfg.inner_negatives,
                        "rotation_seed": cfg.rotation_seed, "late_depth": cfg.late_depth},
           "mlp_note": (f"one hidden layer ({mlp_kw}), on {n_mlp} categories"
                        f"{'' if cfg.mlp < 0 else ' evenly spaced in catalog order'}, at "
                        f"{', '.join(mlp_sites)} (other sites: –), on the logistic probe's folds; "
                        "its first layer is read through its mean input gradients for the sign "
                        "agreement." if n_mlp else "not run (--mlp 0)."),
           "name": cfg.name, "command": command(SCRIPT, argv)}
    for site in sites:
        ts = time.time()
        rep = compare_to_catalog(cache, cat, site, inputs=tuple(cfg.inputs), folds=cfg.folds,
                                 model=model, l2_grid=cfg.l2_grid, inner_folds=cfg.inner_folds,
                                 inner_negatives=cfg.inner_negatives,
                                 rotation_seed=cfg.rotation_seed,
                                 mlp=mlp_arg if site in mlp_sites else False,
                                 mlp_kwargs=mlp_kw, max_negatives=cfg.max_negatives)
        d = rep.to_dict()
        d["tables"] = {inp: rep.table(inp) for inp in cfg.inputs}
        d["seconds"] = round(time.time() - ts, 1)
        res["reports"].append(d)
        for inp, s in d["summary"].items():
            print(f"{site} {inp}: gain {s['gain_mean']:+.4f} ± {s['gain_std']:.4f}, sign agreement "
                  f"{s['sign_agreement_mean']:.3f} (rotated {s['rot_sign_agreement_mean']:.3f}), "
                  f"|w| share {s['mass_on_dims_mean']:.3f} (rotated "
                  f"{s['rot_mass_on_dims_mean']:.3f}), l2 {s['l2_chosen']} [{d['seconds']} s]",
                  flush=True)
        res["seconds"] = time.time() - t0
        write_json(out / f"{cfg.name}.json", res)  # partial results survive an interrupted run
    res["verdicts"] = probe_verdicts.verdicts(res)
    res["seconds"] = time.time() - t0
    write_json(out / f"{cfg.name}.json", res)
    plot(res["reports"], out / f"{cfg.name}.png")
    md = write_text(out / f"{cfg.name}.md", markdown(res))
    print(f"wrote {md} (+ {cfg.name}.json, {cfg.name}.png) in {res['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
