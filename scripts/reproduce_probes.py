"""Reproduce the paper's E4: trained probes vs the training-free sign prototypes of the catalog.

    python scripts/reproduce_probes.py --model smollm2                      # logistic + MLP
    python scripts/reproduce_probes.py --model smollm2 --mlp 0              # logistic only
    python scripts/reproduce_probes.py --model gemma3-270m --folds 3 --max-negatives 60000

Needs runs/<model>/cache and runs/<model>/catalog (scripts/reproduce_reading.py builds both).
Sites: the catalog's site with the best median held-out prototype AUC, plus --late (default: the
site two thirds of the way through the model), unless --sites is given; MLP probes on every
category at the first site (--mlp). Inputs: the cached ±1 signs and raw states (one forward pass per vocabulary token, as the cache was built). Writes
reports/<model>/probes.md, probes.json and probes.png (--name changes the stem).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import torch

import bagofdims as bd
from probes import compare_to_catalog

PAPER = {"gain": 0.018, "sign_agreement": 0.999, "mlp": "adds nothing"}


def pick_sites(cat) -> tuple[str, str, dict]:
    """(best site by median held-out prototype AUC, late site, medians per site)."""
    by = defaultdict(list)
    for f in cat:
        by[f.site].append(f.metrics["held_out_auc"])
    med = {s: statistics.median(v) for s, v in by.items()}
    best = max(med, key=med.get)
    resid = [s for s in cat.sites if s.startswith("resid.")]
    late = resid[(2 * len(resid)) // 3]
    return best, late, med


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def plot(reports: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="smollm2")
    p.add_argument("--runs", default="runs")
    p.add_argument("--out", default="reports")
    p.add_argument("--sites", nargs="*", help="default: best median-AUC site + a late site")
    p.add_argument("--inputs", nargs="+", default=["signs", "states"])
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--l2", type=float, default=1e-3)
    p.add_argument("--mlp", type=int, default=-1,
                   help="train MLP probes on this many categories (evenly spaced) at the first "
                        "site; -1 (default) = all, 0 = none")
    p.add_argument("--mlp-sites", nargs="*", help="sites for the MLP (default: the first site)")
    p.add_argument("--mlp-epochs", type=int, default=15)
    p.add_argument("--max-negatives", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="probes", help="report file stem under reports/<model>/")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    run = Path(args.runs) / args.model
    cache = bd.SignCache.load(run / "cache", verify=False)
    cat = bd.Catalog.load(run / "catalog", cache=cache)
    best, late, med = pick_sites(cat)
    if args.sites:
        sites, choice = args.sites, f"{', '.join(args.sites)} (given on the command line)."
    else:
        sites = [best, late]
        choice = (f"{best} has the best median held-out prototype AUC in the catalog "
                  f"({med[best]:.3f}); {late} is a late site (two thirds through the model, "
                  f"median {med[late]:.3f}).")
    mlp_sites = args.mlp_sites if args.mlp_sites is not None else sites[:1]
    model = bd.load_model(cache.model_name, device="cpu")[0] if "states" in args.inputs else None
    out = Path(args.out) / args.model
    out.mkdir(parents=True, exist_ok=True)
    mlp_kw = dict(hidden=32, max_epochs=args.mlp_epochs, patience=3, lr=3e-3)
    n_mlp = len(cat.names) if args.mlp < 0 else args.mlp
    mlp_arg = True if args.mlp < 0 else args.mlp
    res = {"model": args.model, "vocab": len(cache), "width": cache.width(sites[0]),
           "n_categories": len(cat.names), "folds": args.folds, "l2": args.l2,
           "max_negatives": args.max_negatives, "site_choice": choice,
           "median_proto_auc": med, "paper": PAPER, "reports": [],
           "mlp_note": (f"one hidden layer ({mlp_kw}), on {n_mlp} categories"
                        f"{'' if args.mlp < 0 else ' evenly spaced in catalog order'}, at "
                        f"{', '.join(mlp_sites)} (other sites: –), scored against the prototype on "
                        "its own test rows; its first layer is read through its mean input "
                        "gradients for the sign agreement." if n_mlp else
                        "not run (--mlp 0).")}
    res["name"] = args.name
    res["command"] = "python scripts/reproduce_probes.py " + " ".join(
        a for a in os.sys.argv[1:])
    for site in sites:
        ts = time.time()
        rep = compare_to_catalog(cache, cat, site, inputs=tuple(args.inputs), folds=args.folds,
                                 model=model, l2=args.l2,
                                 mlp=mlp_arg if site in mlp_sites else False,
                                 mlp_kwargs=mlp_kw, max_negatives=args.max_negatives)
        d = rep.to_dict()
        d["tables"] = {inp: rep.table(inp) for inp in args.inputs}
        d["seconds"] = round(time.time() - ts, 1)
        res["reports"].append(d)
        for inp, s in d["summary"].items():
            print(f"{site} {inp}: gain {s['gain_mean']:+.4f} ± {s['gain_std']:.4f} "
                  f"(median {s['gain_median']:+.4f}), sign agreement {s['sign_agreement_mean']:.3f}"
                  f" [{d['seconds']} s]", flush=True)
        res["seconds"] = time.time() - t0
        write_json(out / f"{args.name}.json", res)  # partial results survive an interrupted run
    plot(res["reports"], out / f"{args.name}.png")
    md = out / f"{args.name}.md"
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(markdown(res))
    os.replace(tmp, md)
    print(f"wrote {md} in {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
