"""``bows analyze``: every geometry analysis of one trained run -> PNGs, metrics.json, report.md."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import geometry as G
from . import plots
from .categories import CATEGORIES, SEASONAL, present
from .corpus import MONTHS
from .data import BowsData, rows_to_batch
from .train import load_model
from bagofdims.storage import atomic_file, remove_stale_temps


@dataclass
class AnalyzeConfig:
    """Settings of ``bows analyze`` (every field is also a CLI flag)."""
    run: str = "runs/bows/m1000_wd4"
    """Trained run directory to analyze (the --out of `bows train`)."""
    out: str = "reports/bows/m1000_wd4"
    """Report directory: PNG figures, metrics.json and report.md."""
    compare: str = ""
    """Comma list of other run directories on the same data (latent / decay sweeps, bridge);
    empty: the run alone."""
    top_words: int = 1000
    """How many of the most frequent words the reconstruction, interference and bridge use."""
    spearman_words: int = 300
    """How many of the most frequent words enter the rank correlation of cosine vs co-occurrence."""
    max_windows: int = 4000
    """Windows used per split at most (a random sample of train, the first ones of validation)."""
    threshold: float = 0.5
    """R² on held-out windows above which a word counts as superposed: linearly (a linear read-out
    of the latent reaches it) or nonlinearly (only the model does)."""
    bridge: bool = True
    """Also read every run's latent with bagofdims' sign tools (Hamming recall, sign MI)."""


@torch.no_grad()
def _outputs(model, X, rows):
    h = model.encode(rows_to_batch(X, rows)).float()
    return h, model.decode(h)


def analyze_weights(model, data: BowsData, cfg: AnalyzeConfig, out: Path) -> tuple[dict, list[str]]:
    W, b = model.W.detach(), model.b.detach()
    Xtr, Xva = data.split("train"), data.split("val")
    idx, vocab = data.index, data.vocab
    rng = np.random.default_rng(0)
    tr_rows = np.sort(rng.choice(Xtr.shape[0], min(cfg.max_windows, Xtr.shape[0]), replace=False))
    va_rows = np.arange(min(cfg.max_windows, Xva.shape[0]))
    top = np.argsort(-data.frequency)[: cfg.top_words]
    m, figs = {}, []

    # months: data co-occurrence and rings
    months = present(MONTHS, idx)
    mid = [idx[w] for w in months]
    co = G.cooccurrence(Xtr, mid + [int(i) for i in top if int(i) not in mid])
    figs.append(plots.plot_matrix(co["phi"][: len(mid), : len(mid)], months, "month co-occurrence (phi)",
                                  out / "months_cooccurrence.png"))
    dcoords, _, dvar = G.pca_2d(co["phi"][: len(mid)])
    vecs = G.normalized_columns(W, mid)
    wcoords, comps, wvar = G.pca_2d(vecs)
    seas = present(SEASONAL, idx)
    seas_xy = (G.project_words(W, mid, [idx[w] for w in seas], comps, vecs.mean(0)) if seas
               else np.zeros((0, 2)))  # no seasonal word in a small vocabulary
    m["months"] = {"ring_order_data": G.ring_order_score(dcoords), "ring_order_weights": G.ring_order_score(wcoords),
                   "ring_order_chance": 2 / (len(mid) - 1), "pca_var_data": dvar.tolist(),
                   "pca_var_weights": wvar.tolist(),
                   "seasonal_nearest_month": {w: months[G.nearest_on_ring(p, wcoords)] for w, p in zip(seas, seas_xy)}}
    figs.append(plots.plot_ring(dcoords, months, f"data PCA ring (score {m['months']['ring_order_data']:.2f})",
                                out / "months_ring_data.png"))
    figs.append(plots.plot_ring(wcoords, months, f"W month columns PCA (score {m['months']['ring_order_weights']:.2f})",
                                out / "months_ring_weights.png", extra=(seas_xy, seas)))

    # reconstruction: in context vs alone, linear read-out, per word on held-out windows
    h_va, xh_va = _outputs(model, Xva, va_rows)
    x_va = Xva[va_rows][:, top].toarray()
    r2_ctx = G.r2_per_column(xh_va[:, top].numpy(), x_va)
    alone_pre = (W[:, top].square().sum(0) + b[top]).numpy()
    alone_out = np.maximum(alone_pre, 0) if model.relu else alone_pre
    r2_alone = G.r2_per_column(x_va * alone_out[None, :], x_va)
    h_tr, _ = _outputs(model, Xtr, tr_rows)
    r2_lin = G.linear_decoder_r2(h_tr.numpy(), Xtr[tr_rows][:, top].toarray(), h_va.numpy(), x_va)
    t = cfg.threshold
    m["reconstruction"] = {"words": len(top), "threshold": t,
                           "model_r2_median": float(np.nanmedian(r2_ctx)), "alone_r2_median": float(np.nanmedian(r2_alone)),
                           "linear_r2_median": float(np.nanmedian(r2_lin)),
                           "linearly_superposed": int(np.sum(r2_lin > t)),
                           "nonlinearly_superposed": int(np.sum((r2_ctx > t) & ~(r2_lin > t))),
                           "months_linear_r2_mean": float(np.nanmean(r2_lin[np.isin(top, mid)])) if np.isin(top, mid).any() else None}
    figs.append(plots.plot_hist({"model (in context)": r2_ctx, "alone (one-hot)": r2_alone, "linear decoder": r2_lin},
                                "per-word R² on held-out windows", out / "r2_per_word.png"))

    # constructive interference: words that fail alone but are reconstructed in context
    cand = np.where((alone_pre <= 0) & np.isfinite(r2_ctx))[0]
    chosen = cand[np.argsort(-r2_ctx[cand])[:3]]
    ci = {}
    Xv = Xva[va_rows]
    for j in chosen:
        i = int(top[j])
        parts = G.preactivation_parts(W, b, Xv, i)
        tot = parts["bias"] + parts["self"] + parts["interference"]
        pres = parts["present"]
        ci[vocab[i]] = {"alone_preactivation": float(alone_pre[j]), "r2_in_context": float(r2_ctx[j]),
                        "contexts": int(pres.sum()), "frac_positive_when_present": float((tot[pres] > 0).mean()),
                        "frac_positive_when_absent": float((tot[~pres] > 0).mean()),
                        "mean_bias": float(parts["bias"][0]), "mean_self": float(parts["self"][pres].mean()),
                        "mean_interference_present": float(parts["interference"][pres].mean())}
    m["constructive_interference"] = ci

    # geometry vs statistics, categories, spectrum
    sw = [int(i) for i in top[: cfg.spearman_words]]
    m["spearman_cos_phi"] = G.spearman_cos_cooc(W, Xtr, sw, "phi")
    m["spearman_cos_pmi"] = G.spearman_cos_cooc(W, Xtr, sw, "pmi")
    words, labels = [], []
    for name, ws in CATEGORIES.items():
        ws = present(ws, idx)
        if len(ws) >= 3:
            words += ws
            labels += [name] * len(ws)
    v = G.normalized_columns(W, [idx[w] for w in words])
    perm = np.random.default_rng(0).permutation(labels)
    m["categories"] = {"n_words": len(words), "n_categories": len(set(labels)),
                       "knn_purity": G.knn_purity(v, labels), "knn_purity_shuffled": G.knn_purity(v, perm),
                       "silhouette": G.silhouette(v, labels), "silhouette_shuffled": G.silhouette(v, perm),
                       "group_interference": {n: G.group_interference(W, [idx[w] for w in present(ws, idx)])
                                              for n, ws in CATEGORIES.items() if len(present(ws, idx)) >= 3}}
    s = G.singular_spectrum(W)
    m["spectrum"] = {"weight_norm_sq": float(W.square().sum()), "effective_rank": G.effective_rank(W),
                     "top_singular_values": s[:10].tolist()}
    figs.append(plots.plot_lines({"W": (np.arange(1, len(s) + 1), s)}, "index", "singular value",
                                 out / "spectrum.png", logy=True))
    return m, figs


def interference_targets(data: BowsData, top, count: int = 6) -> list[int]:
    """Pre-declared, model-independent targets of the paper's kind (a name whose related words
    co-occur): the capitalised frequent words with the strongest co-occurrence partner (max phi)."""
    names = [int(i) for i in top if data.vocab[int(i)][:1].isupper() and data.vocab[int(i)] not in MONTHS]
    phi = G.cooccurrence(data.split("train"), names + [int(i) for i in top if int(i) not in names])["phi"]
    np.fill_diagonal(phi, 0)
    best = phi[: len(names)].max(1)
    return [names[j] for j in np.argsort(-best)[:count]]


def constructive_interference(W, b, X, top, targets) -> dict:
    """Words whose one-hot pre-activation |w_i|^2 + b_i is <= 0, and how often their pre-activation
    in real windows X is still > 0 when present (pushed up by co-occurring words) vs absent."""
    w, bb = W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)
    alone = (w ** 2).sum(0) + bb
    def rates(ids):
        ids = np.asarray(ids, dtype=np.int64)
        pre = np.asarray(X @ (w.T @ w[:, ids])) + bb[ids]
        pres = X[:, ids].toarray() > 0
        on = pre > 0
        with np.errstate(invalid="ignore"):
            return ((on & pres).sum(0) / pres.sum(0), (on & ~pres).sum(0) / (~pres).sum(0), pres.sum(0))
    neg = [int(i) for i in top if alone[int(i)] <= 0]
    out = {"frequent_words": len(top), "alone_nonpositive": len(neg)}
    if neg:
        p, a, _ = rates(neg)
        out.update(mean_frac_positive_when_present=float(np.nanmean(p)), mean_frac_positive_when_absent=float(np.nanmean(a)),
                   words_mostly_on_when_present=int(np.sum(p > 0.5)))
    p, a, n = rates(targets)
    out["targets"] = {str(i): {"alone_preactivation": float(alone[i]), "contexts": int(c), "frac_positive_when_present": float(pp),
                               "frac_positive_when_absent": float(aa)} for i, pp, aa, c in zip(targets, p, a, n)}
    return out


def analyze(cfg: AnalyzeConfig) -> dict:
    """Run all analyses of ``cfg.run`` (and the sweeps over ``cfg.compare``) into ``cfg.out``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)  # half-written files of a killed analysis
    model, tcfg = load_model(cfg.run)
    data = BowsData(tcfg["data"])
    metrics, figs = analyze_weights(model, data, cfg, out)
    metrics["run"] = {"path": cfg.run, "config": tcfg,
                      "train": json.loads((Path(cfg.run) / "train.json").read_text())
                      if (Path(cfg.run) / "train.json").exists() else None}
    runs = [cfg.run] + [r for r in cfg.compare.split(",") if r]
    top = np.argsort(-data.frequency)[: cfg.top_words]
    targets = interference_targets(data, top)
    metrics["interference_targets"] = [data.vocab[i] for i in targets]
    Xv = data.split("val")[: cfg.max_windows]
    sweep = []
    for r in runs:
        mdl, c = load_model(r)
        row = {"run": r, "latent": c["latent"], "weight_decay": c["weight_decay"], "relu": c.get("relu", True),
               "weight_norm_sq": float(mdl.W.detach().square().sum()), "effective_rank": G.effective_rank(mdl.W.detach()),
               "group_interference": {n: G.group_interference(mdl.W.detach(), [data.index[w] for w in present(ws, data.index)])
                                      for n, ws in CATEGORIES.items() if len(present(ws, data.index)) >= 3},
               "constructive_interference": constructive_interference(mdl.W, mdl.b, Xv, top, targets)}
        row["constructive_interference"]["targets"] = {data.vocab[int(k)]: v for k, v in
                                                       row["constructive_interference"]["targets"].items()}
        if cfg.bridge:
            from .bridge import hamming_recall, sign_structure
            try:
                row["bridge"] = {"hamming": hamming_recall(mdl, data.split("val"), candidates=np.argsort(-data.frequency)[: cfg.top_words]),
                                 "sign_mi": sign_structure(mdl, data.split("val"))}
            except ImportError as exc:
                row["bridge"] = {"error": str(exc)}
        sweep.append(row)
    metrics["sweep"] = sweep
    metrics["figures"] = figs
    same_wd = sorted((r for r in sweep if r["weight_decay"] == sweep[0]["weight_decay"]), key=lambda r: r["latent"])
    if len(same_wd) > 1:
        series = {n: ([r["latent"] for r in same_wd], [r["group_interference"][n] for r in same_wd])
                  for n in ("months", "roman", "days") if n in same_wd[0]["group_interference"]}
        figs.append(plots.plot_lines(series, "latent m", "group off-diagonal ||Gram||_F", out / "interference_vs_latent.png"))
    with atomic_file(out / "metrics.json", "w") as f:
        f.write(json.dumps(metrics, indent=2, default=float))
    from .report_md import write_report
    write_report(metrics, figs, out)
    return metrics
