"""Sign features in a real audio transformer: Whisper's encoder on the spoken-word set
(``audio.md``, ``audio.json``, ``audio_layers.png``).

    python scripts/reproduce_audio.py                    # writes runs/whisper-tiny.en/reports/
    python scripts/reproduce_audio.py --write-reports    # regenerates reports/whisper-tiny.en/

1. Per encoder layer (``resid.*``, mean over the clip's valid frames): one catalog over the
   category labels, split by word (every voice of a word on one side), with the library's nulls
   (random examples, random labelled examples) and bootstrap CIs; the same pipeline on a
   **random-init Whisper** of the same config and on the **log-mel input itself** (the
   mean-pooled log-mel over the same valid frames, minus its per-bin mean over the clips, as a
   one-site sign cache with the trained cache's examples, labels and groups).
2. 1-nearest-neighbour word identity across voices by Hamming distance on each site's signs.
3. A causal test on clips whose baseline transcript is exactly their word: flip one category's
   feature (mode ``away``, at its site chosen on anchors) against magnitude-matched random and
   disjoint controls; the effect is the drop in that category's survival minus the drop in the
   other categories'.
"""

from __future__ import annotations

import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import tyro

import bagofdims as bd
from bagofdims.errors import InvalidArgument
from bagofdims.features.evidence import EvidenceConfig
from bagofdims.signs import bits
from bagofdims.signs.cache import TOKEN_IDS, SignCache
from bagofdims.steering.interventions import sign_flip
from experiments.report import command
from experiments.runs import RunConfig, entry

__all__ = ["AudioConfig", "causal_test", "layer_table", "logmel_cache", "main", "measure",
           "nearest_neighbour", "random_init", "select"]

SCRIPT = "scripts/reproduce_audio.py"
LOGMEL = "logmel"


@dataclass
class AudioConfig(RunConfig):
    """Whisper encoder features on the spoken-word set, against random-init and log-mel."""

    model: str = "whisper-tiny.en"
    spoken: str | None = None
    """spoken-word set folder (default: built or reused under BAGOFDIMS_HOME)"""
    voices: tuple[str, ...] = ("en-us", "en-gb")
    speeds: tuple[int, ...] = (175,)
    words: int = 20
    """words per category (the first ones of each list)"""
    causal_category: str = "number"
    """the category flipped in the causal test (fixed in advance, not chosen on results)"""
    n_other: int = 4
    """clips per other category transcribed as the comparison in the causal test"""
    n_controls: int = 5
    """draws per control kind (random, disjoint)"""
    n_draws: int = 50
    """null draws per kind and site"""
    batch_size: int = 16
    seed: int = 0
    threads: int = 2


# -- data ------------------------------------------------------------------------------------
def select(items, voices, speeds, words: int) -> list[int]:
    """Clip indices: the first ``words`` words of each category, spoken by ``voices`` at ``speeds``."""
    firsts: dict[str, list[str]] = {}
    for it in items:
        seen = firsts.setdefault(it.category, [])
        if it.word not in seen:
            seen.append(it.word)
    keep = {(c, w) for c, ws in firsts.items() for w in ws[:words]}
    out = [i for i, it in enumerate(items) if (it.category, it.word) in keep
           and it.voice in voices and it.speed in speeds]
    if not out:
        raise InvalidArgument(f"No clip has voices {list(voices)} and speeds {list(speeds)}; "
                              "pick them from the spoken-word set's settings.")
    return out


def random_init(model, seed: int = 0):
    """A Whisper of the same config with freshly initialised weights (eval mode)."""
    torch.manual_seed(seed)
    return type(model)(model.config).eval()


def _extractor(processor):
    return getattr(processor, "feature_extractor", processor)


def logmel_cache(like: SignCache, processor, clips, sample_rate: int, batch_size: int = 64
                 ) -> SignCache:
    """A one-site cache (``logmel``) of the input itself: per clip the log-mel mean over its
    valid frames (the feature extractor's mask), minus the per-bin mean over all clips; rows,
    labels and groups are ``like``'s (the trained encoder's cache of the same clips)."""
    fe = _extractor(processor)
    pooled = []
    for b in range(0, len(clips), batch_size):
        out = fe(list(clips[b:b + batch_size]), sampling_rate=sample_rate,
                 return_attention_mask=True, return_tensors="pt")
        x, mask = out.input_features.float(), out.attention_mask.float()  # [b, mel, T], [b, T]
        pooled.append((x * mask[:, None, :]).sum(-1) / mask.sum(-1, keepdim=True))
    x = torch.cat(pooled)
    x = x - x.mean(0, keepdim=True)  # signs relative to the typical clip, bin by bin
    meta = dataclasses.replace(like.meta, model=f"{like.meta.model}:log-mel",
                               weights="log-mel-input", sites={LOGMEL: int(x.shape[1])},
                               files={}, magnitudes=False)
    return SignCache(meta, {LOGMEL: bits.pack_signs(x).numpy(),
                            TOKEN_IDS: np.arange(len(x), dtype=np.int64)})


# -- 1: per-layer detectability --------------------------------------------------------------
def _median_ci(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of per-category values and a bootstrap 95% interval over categories."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if not len(v):
        return float("nan"), float("nan"), float("nan")
    g = np.random.default_rng(seed)
    boots = np.median(g.choice(v, size=(n_boot, len(v))), axis=1)
    return float(np.median(v)), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def layer_table(cat) -> dict:
    """Per site: the median held-out AUC (CI over categories), both null references, how many
    categories are detectable (CI lower bound above the random-labelled null's 95th percentile)
    and the anchor-only score that picks the best site (median mean per-dim anchor AUC)."""
    out = {}
    for site in cat.sites:
        feats = cat.at(site)
        m = [f.metrics for f in feats]
        med, lo, hi = _median_ci([x["held_out_auc"] for x in m])
        out[site] = {
            "held_out_auc": med, "lo": lo, "hi": hi,
            "null_examples_auc": statistics.median(x["null_token_auc"] for x in m),
            "null_labelled_auc": statistics.median(x["null_listed_auc"] for x in m),
            "null_labelled_q95": statistics.median(x["null_listed_q95"] for x in m),
            "detectable": sum(x["held_out_auc_lo"] > x["null_listed_q95"] for x in m),
            "p_below_05": sum(x["p_listed"] < 0.05 for x in m),
            "n_categories": len(m),
            "anchor_score": statistics.median(x["mean_dim_auc"] for x in m),
            "categories": {f.name: {k: f.metrics[k] for k in (
                "held_out_auc", "held_out_auc_lo", "held_out_auc_hi", "p_listed", "hard_auc")}
                for f in feats}}
    return out


def best_site(table: dict) -> str:
    """The site with the highest anchor-only score (never a held-out number)."""
    return max(table, key=lambda s: table[s]["anchor_score"])


# -- 2: word identity across voices ----------------------------------------------------------
def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def nearest_neighbour(cache: SignCache, words: list[str], voices: list[str]) -> dict:
    """Per site: the share of clips whose nearest clip by Hamming distance, among clips of other
    voices, is the same word (Wilson 95% interval), and chance (1 / number of words)."""
    w = np.asarray(words)
    v = np.asarray(voices)
    same_voice = torch.from_numpy(v[:, None] == v[None, :])
    n_words = len(set(words))
    out = {}
    for site in cache.sites:
        s = cache.signs(site, dtype=torch.float32)
        dist = (s.shape[1] - s @ s.T) / 2  # Hamming distance from the ±1 dot product
        dist[same_voice] = float("inf")
        nn = dist.argmin(1).numpy()
        hit = int((w[nn] == w).sum())
        lo, hi = _wilson(hit, len(w))
        out[site] = {"accuracy": hit / len(w), "lo": lo, "hi": hi, "n": len(w),
                     "chance": 1 / n_words}
    return out


# -- 3: causal test --------------------------------------------------------------------------
def _correct(transcripts: list[str], words: list[str]) -> np.ndarray:
    from bagofdims.whisper import normalize_transcript

    return np.array([normalize_transcript(t) == w.lower() for t, w in zip(transcripts, words)])


def causal_test(model, processor, feature, clips, words, is_target, n_controls: int = 5,
                seed: int = 0, transcribe=None) -> dict:
    """Flip ``feature`` (away) vs ``n_controls`` random and disjoint controls each, on the clips
    whose baseline transcript is exactly their word.

    ``transcribe(model, processor, clips) -> list[str]`` (default: greedy Whisper). The effect
    of a condition is ``survival(others) - survival(target)`` among baseline-correct clips (both
    start at 1); ``p`` = (1 + #controls with effect >= the feature's) / (1 + #controls).
    """
    if transcribe is None:
        from bagofdims.whisper import transcribe as whisper_transcribe

        def transcribe(m, p, c):
            return whisper_transcribe(m, p, c, max_new_tokens=8)
    is_target = np.asarray(is_target, dtype=bool)
    base = _correct(transcribe(model, processor, clips), words)
    keep = np.flatnonzero(base)
    kept_clips = [clips[i] for i in keep]
    kept_words = [words[i] for i in keep]
    tgt = is_target[keep]
    res = {"site": feature.site, "k": len(feature.dims), "n_clips": len(clips),
           "n_target": int(is_target.sum()), "n_other": int((~is_target).sum()),
           "correct_target": int(base[is_target].sum()),
           "correct_other": int(base[~is_target].sum())}
    if not tgt.any() or tgt.all():
        res["skipped"] = ("no baseline-correct clip of the category" if not tgt.any() else
                          "no baseline-correct clip of another category")
        return res

    def run(control, s):
        with sign_flip(model, feature, mode="away", control=control, seed=s):
            ok = _correct(transcribe(model, processor, kept_clips), kept_words)
        st, so = float(ok[tgt].mean()), float(ok[~tgt].mean())
        return {"seed": s, "survival_target": st, "survival_other": so, "effect": so - st}

    res["feature"] = run(None, seed)
    res["controls"] = {kind: [run(kind, seed + 1 + j * n_controls + i) for i in range(n_controls)]
                       for j, kind in enumerate(("random", "disjoint"))}
    effects = [c["effect"] for cs in res["controls"].values() for c in cs]
    res["p"] = (1 + sum(e >= res["feature"]["effect"] for e in effects)) / (1 + len(effects))
    res["control_effects"] = {"median": float(np.median(effects)), "max": float(max(effects)),
                              "n": len(effects)}
    return res


# -- the whole run ---------------------------------------------------------------------------
def measure(model, processor, clips, items, cfg: AudioConfig, sample_rate: int = 16000,
            transcribe=None) -> dict:
    """Every number of the report for ``clips`` with ``items`` (word, category, voice, speed)."""
    labels = [it.category for it in items]
    words = [it.word for it in items]
    voices = [it.voice for it in items]
    ev = EvidenceConfig(n_draws=cfg.n_draws, seed=cfg.seed)
    timing = {}
    caches, catalogs = {}, {}
    t = time.time()
    kw = dict(sites=["resid.*"], pool="mean", labels=labels, groups=words,
              batch_size=cfg.batch_size, processor_kwargs={"sampling_rate": sample_rate},
              progress=False)
    caches["trained"] = SignCache.build_inputs(model, processor, clips, **kw)
    timing["cache_trained"] = time.time() - t
    t = time.time()
    caches["random-init"] = SignCache.build_inputs(random_init(model, cfg.seed), processor, clips,
                                                   **kw)
    timing["cache_random"] = time.time() - t
    caches["log-mel"] = logmel_cache(caches["trained"], processor, clips, sample_rate)
    t = time.time()
    for kind, cache in caches.items():
        catalogs[kind] = bd.Catalog.build(cache, categories="labels", sites=["*"], evidence=ev,
                                          seed=cfg.seed, progress=False)
    timing["catalogs"] = time.time() - t
    tables = {kind: layer_table(c) for kind, c in catalogs.items()}
    best = {kind: best_site(tab) for kind, tab in tables.items()}
    knn = {kind: nearest_neighbour(c, words, voices) for kind, c in caches.items()}
    t = time.time()
    causal = _causal(model, processor, catalogs["trained"], clips, items, cfg, transcribe)
    timing["causal"] = time.time() - t
    return {"model": cfg.model, "n_clips": len(clips), "n_words": len(set(words)),
            "categories": sorted(set(labels)), "voices": sorted(set(voices)),
            "speeds": sorted({it.speed for it in items}), "words_per_category": cfg.words,
            "skipped": {k: dict(c.meta.skipped) for k, c in catalogs.items()},
            "layers": tables, "best_site": best, "nearest_neighbour": knn, "causal": causal,
            "evidence": ev.to_dict(), "timing": timing}


def _causal(model, processor, cat, clips, items, cfg: AudioConfig, transcribe) -> dict:
    """The causal test's clip set: every clip of the category, ``n_other`` seeded clips of each
    other category; the feature is the category's at its site chosen on anchors."""
    if cfg.causal_category not in cat.names:
        raise InvalidArgument(f"causal_category={cfg.causal_category!r} is not among the "
                              f"catalog's categories {cat.names}; pick one of them.")
    feature = cat.get(cfg.causal_category)  # best site by mean per-dim anchor AUC
    g = np.random.default_rng(cfg.seed)
    pick = [i for i, it in enumerate(items) if it.category == cfg.causal_category]
    for c in sorted({it.category for it in items} - {cfg.causal_category}):
        rows = [i for i, it in enumerate(items) if it.category == c]
        pick += sorted(g.choice(rows, size=min(cfg.n_other, len(rows)), replace=False).tolist())
    res = causal_test(model, processor, feature, [clips[i] for i in pick],
                      [items[i].word for i in pick],
                      [items[i].category == cfg.causal_category for i in pick],
                      cfg.n_controls, cfg.seed, transcribe)
    res["category"] = cfg.causal_category
    res["site_chosen_by"] = "highest mean per-dim AUC on the anchors"
    return res


def main(argv=None) -> dict:
    """Parse the flags, measure, write the report; returns the result."""
    from bagofdims.spoken import build_spoken_words, load_spoken_words
    from experiments.audio_report import write

    cfg = tyro.cli(AudioConfig, args=argv)
    torch.set_num_threads(cfg.threads)
    t0 = time.time()
    spoken = load_spoken_words(cfg.spoken) if cfg.spoken else build_spoken_words()
    idx = select(spoken.items, cfg.voices, cfg.speeds, cfg.words)
    model, processor = bd.load_model(cfg.model)
    res = measure(model, processor, spoken.clips(idx), [spoken.items[i] for i in idx], cfg,
                  spoken.sample_rate)
    res["seconds"] = time.time() - t0
    res["command"] = command(SCRIPT, argv)
    md = write(cfg.out_dir, res)
    print(f"wrote {md} (+ audio.json, audio_layers.png) in {res['seconds']:.0f} s")
    return res


if __name__ == "__main__":
    sys.exit(entry(main))
