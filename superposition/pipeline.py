"""One-command configurations: the default small run (CPU, minutes) and the full-size run (GPU)."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .data import DataConfig, ensure_data
from .report import AnalyzeConfig, analyze
from .synthetic import SyntheticConfig, run_synthetic
from .train import TrainConfig, train
from bagofdims.errors import ResumeError
from bagofdims.storage import atomic_file

log = logging.getLogger(__name__)


@dataclass
class PipelineConfig:
    """Data -> train (main model + comparison runs) -> analyze -> synthetic, in one command."""
    runs: str = "runs/bows/small"
    """Directory of the data (data/) and models (mLATENT_wdDECAY/); reused if the settings match."""
    report: str = "runs/bows/small/report"
    """Report directory: figures, metrics.json, report.md and synthetic/."""
    corpus: str = "default"
    """Text source, as `bows data --corpus`: default, wiki / bbc, a datasets spec, or local files."""
    vocab: int = 3000
    """Vocabulary size in words."""
    window: int = 10
    """Lines (paragraphs) per bag-of-words window."""
    latent: int = 200
    """Latent width m of the main model."""
    weight_decay: float = 4.0
    """AdamW weight decay of the main model and of the --compare-latents runs."""
    lr: float = 3e-3
    """Peak learning rate of every model (cosine-decayed to 0)."""
    epochs: float = 20.0
    """Passes over the training windows, for every model."""
    batch_size: int = 512
    """Windows per optimiser step."""
    compare_latents: str = "50,100"
    """Comma list of latent widths (integers) of extra runs at --weight-decay; empty: none."""
    compare_weight_decays: str = "0,1"
    """Comma list of weight decays (numbers) of extra runs at --latent; empty: none."""
    synthetic: bool = True
    """Also run the synthetic sweep (`bows synthetic`) and add its table to the report."""
    synthetic_steps: int = 3000
    """Adam steps of the synthetic sweep."""
    device: str = "auto"
    """Where to train: auto (cuda if available, else cpu) or a torch device (cpu, cuda, cuda:N)."""
    seed: int = 0
    """Seed of the data split, the weights, the batch order and the synthetic sweep."""


FULL = dict(vocab=10000, window=20, latent=1000, weight_decay=4.0, lr=5e-4, epochs=10.0,
            compare_latents="100,300", compare_weight_decays="0,1", runs="runs/bows/full",
            report="runs/bows/full/report", synthetic_steps=6000)


def run_pipeline(cfg: PipelineConfig) -> dict:
    """Build the data, train every model, analyze, and run the synthetic sweep; the report lands
    in ``cfg.report``. Data and models already in ``cfg.runs`` are reused (an interrupted model
    resumes) only when they were made with these settings, else :class:`ResumeError`."""
    t0 = time.time()
    root = Path(cfg.runs)
    data_dir = root / "data"
    data = ensure_data(DataConfig(out=str(data_dir), corpus=cfg.corpus, vocab=cfg.vocab, window=cfg.window,
                                  seed=cfg.seed))
    log.info("[bows] %d training windows", data.split("train").shape[0])

    def one(latent: int, wd: float) -> str:
        out = root / f"m{latent}_wd{wd:g}"
        try:
            train(TrainConfig(data=str(data_dir), out=str(out), latent=latent, weight_decay=wd, lr=cfg.lr,
                              epochs=cfg.epochs, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device))
        except ResumeError as err:  # the pipeline has --runs, not --out / --overwrite
            raise ResumeError(f"{str(err).split(' Use the same settings')[0]} Use the same settings, "
                              f"another --runs, or delete {out} to retrain it.") from err
        return str(out)

    main = one(cfg.latent, cfg.weight_decay)
    others = [one(int(m), cfg.weight_decay) for m in cfg.compare_latents.split(",") if m]
    others += [one(cfg.latent, float(w)) for w in cfg.compare_weight_decays.split(",") if w]
    metrics = analyze(AnalyzeConfig(run=main, out=cfg.report, compare=",".join(others)))
    if cfg.synthetic:
        syn = run_synthetic(SyntheticConfig(out=str(Path(cfg.report) / "synthetic"), steps=cfg.synthetic_steps,
                                            seed=cfg.seed))
        metrics["synthetic"] = syn
        _append_synthetic(Path(cfg.report) / "report.md", syn)
    log.info("[bows] pipeline done in %.1f min -> %s", (time.time() - t0) / 60, cfg.report)
    return metrics


def _append_synthetic(report: Path, syn: dict) -> None:
    """Add the synthetic sweep's table (Gram vs covariance) to the run's report.md."""
    c = syn["config"]
    lines = ["", "## Synthetic correlated features", "",
             f"{c['features']} features on a {c['structure']} (p_max {c['p_max']}), {c['steps']} steps, lr {c['lr']}, "
             f"batch {c['batch_size']} "
             "(per-model lr x wd x steps in synthetic/metrics.json). gram_cov_corr = correlation of the "
             "off-diagonal Gram entries with the data covariance.", "",
             "| model | m | wd | gram_cov_corr | loss | ‖W‖²_F | eff. rank |", "|---|---|---|---|---|---|---|"]
    for s in syn["models"]:
        if s["latent"] in (2, 4, 8, 12):
            lines.append(f"| {s['model']} | {s['latent']} | {s['weight_decay']:g} | {s['gram_cov_corr']:.3f} | "
                         f"{s['loss']:.4f} | {s['weight_norm_sq']:.2f} | {s['effective_rank']:.2f} |")
    lines += ["", "![synthetic_gram](synthetic/synthetic_gram.png)", "![synthetic_corr](synthetic/synthetic_corr.png)", ""]
    text = report.read_text() + "\n".join(lines)
    with atomic_file(report, "w") as f:
        f.write(text)
