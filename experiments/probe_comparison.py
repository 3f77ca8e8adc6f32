"""E4: trained probes against the training-free sign prototypes of the catalog (``probes.md``,
``probes.json``, ``probes.png``).

    python scripts/reproduce_probes.py --model smollm2                      # logistic + MLP
    python scripts/reproduce_probes.py --model smollm2 --mlp 0              # logistic only
    python scripts/reproduce_probes.py --model gemma3-270m --folds 3 --max-negatives 60000

Needs ``<runs>/<model>/cache`` and ``<runs>/<model>/catalog`` (the reading report builds both).
Sites: the catalog's site with the best median held-out prototype AUC, plus a late site (two
thirds of the way through the model), unless ``--sites`` is given; MLP probes on every category
at the first site (``--mlp``). Inputs: the cached ±1 signs and raw states (one forward pass per
vocabulary token, as the cache was built). Partial results are written after each site.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import torch
import tyro

import bagofdims as bd
from bagofdims.errors import MissingFile
from bagofdims.models import load_tokenizer
from probes import compare_to_catalog
from experiments.report import command, pyplot, save_figure, write_json, write_text
from experiments.runs import RunConfig, entry

__all__ = ["PAPER", "ProbesConfig", "main", "markdown", "pick_sites", "plot"]

SCRIPT = "scripts/reproduce_probes.py"
PAPER = {"gain": 0.018, "sign_agreement": 0.999, "mlp": "adds nothing"}


@dataclass
class ProbesConfig(RunConfig):
    """Reproduce the paper's E4: trained probes vs the training-free sign prototypes."""

    sites: tuple[str, ...] | None = None
    """sites to compare at (default: the best median-AUC site and a late site)"""
    inputs: tuple[str, ...] = ("signs", "states")
    """probe inputs: the cached signs and/or the raw states"""
    folds: int = 5
    l2: float = 1e-3
    """L2 penalty of the logistic probe (standardised inputs)"""
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


def pick_sites(cat) -> tuple[str, str, dict]:
    """(best site by median held-out prototype AUC, late site, medians per site)."""
    by = defaultdict(list)
    for f in cat:
        by[f.site].append(f.metrics["held_out_auc"])
    med = {s: statistics.median(v) for s, v in by.items()}
    best = max(med, key=med.get)
    resid = [s for s in cat.sites if s.startswith("resid.")] or list(cat.sites)
    late = resid[(2 * len(resid)) // 3]
    return best, late, med


def plot(reports: list[dict], path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4.5))
    marks = {"signs": "o", "states": "^"}
    for rep in reports:
        for inp in rep["settings"]["inputs"]:
            rs = [r for r in rep["rows"] if r["input"] == inp]
            lab = f"{rep['site']} {inp}"
            ax[0].scatter([r["proto_auc"] for r in rs], [r["logistic_auc"] for r in rs], s=16,
                          marker=marks[inp], label=lab, alpha=0.75)
            ax[1].scatter([r["proto_auc"] for r in rs], [r["sign_agreement"] for r in rs], s=16,
                          marker=marks[inp], label=lab, alpha=0.75)
    lo = min(r["proto_auc"] for rep in reports for r in rep["rows"]) - 0.02
    ax[0].plot([lo, 1], [lo, 1], "k--", lw=0.8)
    ax[0].set(xlabel="prototype held-out AUC", ylabel="logistic probe held-out AUC",
              title="probe vs prototype (same test rows)")
    ax[1].axhline(PAPER["sign_agreement"], color="k", ls=":", lw=0.8, label="paper 99.9%")
    ax[1].set(xlabel="prototype held-out AUC", ylabel="sign agreement of w on prototype dims",
              title="do the probe's weights agree with the prototype?")
    ax[0].legend(fontsize=7)
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def markdown(res: dict) -> str:
    m = res["model"]
    L = [f"# Trained probes vs sign prototypes (E4) on {m}", "",
         f"Regenerate: `{res['command']}` ({res['seconds']:.0f} s on a shared 2-core CPU). "
         f"Vocabulary {res['vocab']:,} tokens, width {res['width']}; {res['n_categories']} "
         "catalog categories per site.", "",
         "Protocol: per category, a logistic probe (L2, l2 = "
         f"{res['l2']} on standardised inputs, class-balanced) trains on the catalog's 50 anchors "
         "vs the rest of the vocabulary; it is tested on the catalog's held-out members vs the "
         f"test negatives, with the negatives (and held-out members) split into {res['folds']} "
         "folds. Anchors are never tested. The prototype (fraction of the feature's dims whose "
         "sign agrees) is scored on exactly the same test rows, so the gain is paired; pooled over "
         "folds its AUC equals the catalog's held-out AUC. Sign agreement and |w| share use the "
         "fold-averaged standardised weights on the prototype's dims (chance share = |D|/d).",
         "", f"Sites: {res['site_choice']}", ""]
    if res.get("max_negatives"):
        L += [f"Negatives: a seeded sample of {res['max_negatives']:,} non-member tokens "
              "(same rows for probe and prototype).", ""]
    L += [f"MLP: {res['mlp_note']}", "", f"![probes]({res['name']}.png)", "", "## Summary", "",
          "| site | input | prototype AUC (mean) | logistic AUC (mean) | gain mean ± std | gain median "
          "| probe wins | sign agreement (mean) | \\|w\\| share on D (chance) | MLP gain (n) "
          "| MLP sign agreement |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for rep in res["reports"]:
        for inp, s in rep["summary"].items():
            mlp = (f"{s['mlp_gain_mean']:+.3f} ± {s['mlp_gain_std']:.3f} ({s['mlp_categories']}) | "
                   f"{s['mlp_sign_agreement_mean']:.3f}" if "mlp_gain_mean" in s else "– | –")
            L.append(f"| {rep['site']} | {inp} | {s['proto_auc_mean']:.3f} | "
                     f"{s['logistic_auc_mean']:.3f} | {s['gain_mean']:+.3f} ± {s['gain_std']:.3f} | "
                     f"{s['gain_median']:+.3f} | {s['probe_wins']:.0%} | "
                     f"{s['sign_agreement_mean']:.3f} | {s['mass_on_dims_mean']:.3f} "
                     f"({s['chance_mass_mean']:.3f}) | {mlp} |")
    L.append(f"| paper (4B–32B LMs) | – | 0.975–0.993 (E3) | – | +{PAPER['gain']} | – | – | "
             f"{PAPER['sign_agreement']} | – | {PAPER['mlp']} | – |")
    L += ["", "Gain = logistic AUC − prototype AUC on the same held-out members and test "
          "negatives; ± is the std over categories. Per-fold paired gains (mean over folds) are in "
          "probes.json (`gain_fold_mean`).", ""]
    for rep in res["reports"]:
        for inp in rep["settings"]["inputs"]:
            L += [f"## {rep['site']}, {inp}", ""]
            L.append(rep["tables"][inp])
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
    model = tok = None
    if "states" in cfg.inputs:
        model, tok = bd.load_model(cfg.model, device="cpu")
    else:
        tok = load_tokenizer(cfg.model)
    cat = bd.Catalog.load(cfg.run_dir / "catalog", cache=cache, model=model, tokenizer=tok)
    best, late, med = pick_sites(cat)
    if cfg.sites:
        sites, choice = list(cfg.sites), f"{', '.join(cfg.sites)} (given on the command line)."
    else:
        sites = list(dict.fromkeys([best, late]))
        choice = (f"{best} has the best median held-out prototype AUC in the catalog "
                  f"({med[best]:.3f}); {late} is a late site (two thirds through the model, "
                  f"median {med[late]:.3f}).")
    mlp_sites = list(cfg.mlp_sites) if cfg.mlp_sites is not None else sites[:1]
    mlp_kw = dict(hidden=32, max_epochs=cfg.mlp_epochs, patience=3, lr=3e-3)
    n_mlp = len(cat.names) if cfg.mlp < 0 else cfg.mlp
    mlp_arg = True if cfg.mlp < 0 else cfg.mlp
    res = {"model": cfg.model, "vocab": len(cache), "width": cache.width(sites[0]),
           "n_categories": len(cat.names), "folds": cfg.folds, "l2": cfg.l2,
           "max_negatives": cfg.max_negatives, "site_choice": choice,
           "median_proto_auc": med, "paper": PAPER, "reports": [],
           "mlp_note": (f"one hidden layer ({mlp_kw}), on {n_mlp} categories"
                        f"{'' if cfg.mlp < 0 else ' evenly spaced in catalog order'}, at "
                        f"{', '.join(mlp_sites)} (other sites: –), scored against the prototype on "
                        "its own test rows; its first layer is read through its mean input "
                        "gradients for the sign agreement." if n_mlp else
                        "not run (--mlp 0)."),
           "name": cfg.name, "command": command(SCRIPT, argv)}
    for site in sites:
        ts = time.time()
        rep = compare_to_catalog(cache, cat, site, inputs=tuple(cfg.inputs), folds=cfg.folds,
                                 model=model, l2=cfg.l2,
                                 mlp=mlp_arg if site in mlp_sites else False,
                                 mlp_kwargs=mlp_kw, max_negatives=cfg.max_negatives)
        d = rep.to_dict()
        d["tables"] = {inp: rep.table(inp) for inp in cfg.inputs}
        d["seconds"] = round(time.time() - ts, 1)
        res["reports"].append(d)
        for inp, s in d["summary"].items():
            print(f"{site} {inp}: gain {s['gain_mean']:+.4f} ± {s['gain_std']:.4f} "
                  f"(median {s['gain_median']:+.4f}), sign agreement {s['sign_agreement_mean']:.3f}"
                  f" [{d['seconds']} s]", flush=True)
        res["seconds"] = time.time() - t0
        write_json(out / f"{cfg.name}.json", res)  # partial results survive an interrupted run
    plot(res["reports"], out / f"{cfg.name}.png")
    md = write_text(out / f"{cfg.name}.md", markdown(res))
    print(f"wrote {md} (+ {cfg.name}.json, {cfg.name}.png) in {res['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
