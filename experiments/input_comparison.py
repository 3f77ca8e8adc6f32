"""What a single token is read after changes its cached signs: alone vs start tokens, per layer
(``inputs.md``, ``inputs.json``, ``inputs.png``).

    python scripts/compare_inputs.py --model smollm2
    python scripts/compare_inputs.py --model gemma3-270m --sites resid.1 resid.9 resid.17

For each input policy (``alone``: the token at position 0; ``document start``: after the token
:func:`bagofdims.inputs.document_start` picks, the cache's default for decoder LMs; ``bos_token``:
after the tokenizer's declared BOS when that is another token, e.g. SmolLM2-Instruct's chat
marker ``<|im_start|>``) it builds the sign cache in memory and reports per site:

- **collapse**: mean fraction of signs two random vocabulary tokens share (1,024 tokens, all
  pairs) and the fraction of dims whose sign is the same for >= 95% of them. Near 1 means the
  site no longer tells tokens apart;
- **E3** with the default discovery (top-32 dims from 50 anchors): median AUC of the anchors
  themselves and their mean per-dim AUC (what a user can check without held-out members), of
  held-out members vs the whole vocabulary and vs the other categories' members, and how many
  categories reach 0.9.
"""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass

import torch
import tyro

import bagofdims as bd
from bagofdims.inputs import document_start
from experiments.report import command, pyplot, save_figure, write_report
from experiments.runs import RunConfig, entry

__all__ = ["InputsConfig", "main", "markdown", "measure", "plot", "policies"]

SCRIPT = "scripts/compare_inputs.py"


@dataclass
class InputsConfig(RunConfig):
    """What a single token is read after changes its cached signs: alone vs start tokens."""

    sites: tuple[str, ...] = ("resid.*",)
    categories: str = "default"
    """category set: a shipped name or a JSON path"""
    pairs: int = 1024
    """random tokens for the collapse metric"""
    threads: int | None = None


def policies(tok) -> dict[str, dict]:
    """Input policy name -> the ``SignCache.build`` keywords that read tokens that way."""
    start, _ = document_start(tok)
    out = {"alone": {"bos": False}, "document start": {"bos": True}}
    if tok.bos_token_id is not None and tok.bos_token_id != start:
        out["bos_token"] = {"bos_token": int(tok.bos_token_id)}
    return out


def measure(model, tok, kwargs: dict, sites, categories: str, n_pairs: int) -> dict:
    """Collapse and E3 numbers per site of a cache built with ``kwargs``."""
    t0 = time.time()
    cache = bd.SignCache.build(model, tok, sites=list(sites), progress=False, **kwargs)
    rows = torch.randperm(len(cache), generator=torch.Generator().manual_seed(0))[:n_pairs]
    cat = bd.Catalog.build(cache, categories=categories, sites=cache.sites, tokenizer=tok,
                           progress=False)
    per_site = {}
    for site in cache.sites:
        fs = cat.at(site)
        held = [f.metrics["held_out_auc"] for f in fs]
        per_site[site] = {
            **bd.stats.sign_collapse(cache.signs(site, tokens=cache.token_ids[rows])),
            "anchor_auc": statistics.median(f.metrics["anchor_auc"] for f in fs),
            "mean_dim_auc": statistics.fmean(f.metrics["mean_dim_auc"] for f in fs),
            "held_out_auc": statistics.median(held),
            "hard_auc": statistics.median(f.metrics["hard_auc"] for f in fs),
            "discoverable": sum(a >= 0.9 for a in held),
            "n_categories": len(fs),
        }
    token = cache.meta.bos_token
    return {"input": f"[{token}, token]" if token else "[token]", "bos_id": cache.meta.bos_id,
            "rule": cache.meta.bos_rule, "sites": per_site, "seconds": round(time.time() - t0, 1)}


def _best(sites: dict, key: str) -> str:
    return max(sites, key=lambda s: sites[s][key])


def markdown(res: dict) -> str:
    names = list(res["policies"])
    L = [f"# Single-token inputs on {res['model']}", "",
         f"Regenerate: `{res['command']}` ({res['seconds']:.0f} s). Vocabulary {res['vocab']:,} "
         f"tokens, {res['n_categories']} usable categories (default set, word-initial forms), "
         "default discovery (top-32 dims from 50 anchors). Collapse: over "
         f"{res['n_pairs']:,} random tokens, the mean fraction of signs two of them share and "
         "the fraction of dims with the same sign for >= 95% of them. The site picked from the "
         "anchors is the one with the highest mean per-dim anchor AUC (the catalog's rule); "
         "the best held-out site is shown for reference only.", "",
         "![inputs](inputs.png)", "", "## Summary", "",
         "| input | rule | site picked from the anchors | its held-out AUC (median) | best held-out "
         "(site) | pair agreement at the last site | constant dims there |",
         "|---|---|---|---|---|---|---|"]
    for n in names:
        p = res["policies"][n]
        s = p["sites"]
        pick, best, last = _best(s, "mean_dim_auc"), _best(s, "held_out_auc"), list(s)[-1]
        label = p["input"].replace("|", "\\|")  # a pipe would split the table cell
        L.append(f"| {n}: `{label}` | {p['rule']} | {pick} | {s[pick]['held_out_auc']:.3f} | "
                 f"{s[best]['held_out_auc']:.3f} ({best}) | {s[last]['pair_agreement']:.3f} | "
                 f"{s[last]['constant_dims']:.3f} |")
    L += ["", "## Per site", "",
          "| site | " + " | ".join(f"{n}: held-out / hard / anchors / reach 0.9 / pair agr."
                                   for n in names) + " |",
          "|---|" + "---|" * len(names)]
    for site in res["sites"]:
        cells = []
        for n in names:
            r = res["policies"][n]["sites"][site]
            cells.append(f"{r['held_out_auc']:.3f} / {r['hard_auc']:.3f} / {r['anchor_auc']:.3f} / "
                         f"{r['discoverable']}/{r['n_categories']} / {r['pair_agreement']:.3f}")
        L.append(f"| {site} | " + " | ".join(cells) + " |")
    return "\n".join(L) + "\n"


def plot(res: dict, path) -> None:
    plt = pyplot()
    sites = res["sites"]
    x = range(len(sites))
    fig, ax = plt.subplots(1, 2, figsize=(12, 4))
    for n, p in res["policies"].items():
        s = p["sites"]
        ax[0].plot(x, [s[k]["held_out_auc"] for k in sites], "o-", ms=3, label=f"{n} {p['input']}")
        ax[1].plot(x, [s[k]["pair_agreement"] for k in sites], "o-", ms=3, label=f"{n} {p['input']}")
    ax[0].set(title="E3: median held-out AUC vs vocabulary", xlabel="layer", ylabel="AUC")
    ax[1].set(title="collapse: signs shared by two random tokens", xlabel="layer",
              ylabel="mean agreement")
    ax[1].axhline(0.5, c="gray", ls=":", lw=1)
    for a in ax:
        a.legend(fontsize=8)
        a.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv=None) -> dict:
    """Parse the flags, measure every input policy, write the report; returns the result."""

    cfg = tyro.cli(InputsConfig, args=argv)
    out = cfg.out_dir
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.time()
    model, tok = bd.load_model(cfg.model, device="cpu")
    res = {"model": cfg.model, "command": command(SCRIPT, argv), "vocab": len(tok),
           "n_pairs": cfg.pairs, "policies": {}}
    for name, kwargs in policies(tok).items():
        print(f"{name}: building the cache and the catalog ...", flush=True)
        res["policies"][name] = measure(model, tok, kwargs, cfg.sites, cfg.categories, cfg.pairs)
    first = next(iter(res["policies"].values()))
    res["sites"] = list(first["sites"])
    res["n_categories"] = first["sites"][res["sites"][0]]["n_categories"]
    res["seconds"] = round(time.time() - t0, 1)
    plot(res, out / "inputs.png")
    md = write_report(out, "inputs", res, markdown(res))
    print(f"wrote {md} (+ inputs.json, inputs.png) in {res['seconds']} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
