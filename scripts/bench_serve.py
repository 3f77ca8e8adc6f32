"""Browser speed: page render times for a 1,000-feature catalog, steering first-token latency.

    python scripts/bench_serve.py            # --rounds 30 --skip-steer

Pages: a synthetic catalog of 1,000 features (100 categories x 10 sites of a 576-wide model,
32 dims each) over a random sign cache of SmolLM2's 49,152-token vocabulary. Each round renders
the index and a feature page not rendered before (so nothing is memoised), interleaved, both
directly and over HTTP on loopback; medians. Steering: the time from the request to the first
streamed token on SmolLM2 over HTTP, against ``model.generate``'s own first token measured in the
same run. Targets: pages < 200 ms, first token < 1 s.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
import urllib.parse
import urllib.request

import numpy as np
import torch

from bagofdims.catalog import Catalog
from bagofdims.catalog.format import CatalogMeta
from bagofdims.features.feature import Feature
from bagofdims.models import load_model, load_tokenizer, tokenizer_fingerprint
from bagofdims.serve import CatalogViews, create_app
from bagofdims.serve.pages import Links, Pages
from bagofdims.serve.server import running
from bagofdims.signs.cache import TOKEN_IDS, SignCache
from bagofdims.signs.meta import CacheMeta

V, D, SITES, NAMES, K = 49152, 576, 10, 100, 32


def synthetic_catalog(tok) -> Catalog:
    rng = np.random.default_rng(0)
    sites = [f"resid.{i}" for i in range(SITES)]
    meta = CacheMeta(model="synthetic", weights="synthetic", tokenizer=tokenizer_fingerprint(tok),
                     vocab_size=V, full_vocab=True, n_tokens=V, sites={s: D for s in sites},
                     bos=False, bos_id=None, bos_token=None, bos_rule="off", dtype="float32",
                     magnitudes=False, batch_size=V, chunk_size=V, tokens_sha256="synthetic",
                     created="now")
    signs = {s: rng.integers(0, 256, (V, D // 8), dtype=np.uint8) for s in sites}
    signs[TOKEN_IDS] = np.arange(V, dtype=np.int64)
    cache = SignCache(meta, signs, {})
    feats = []
    for s in sites:
        for c in range(NAMES):
            ids = rng.choice(V, 60, replace=False).tolist()
            feats.append(Feature(
                name=f"concept_{c:03d}", site=s, dims=rng.choice(D, K, replace=False),
                signs=rng.choice([-1, 1], K), dim_auc=rng.uniform(0.5, 0.9, K),
                anchors=ids[:50], anchor_words=[tok.decode([i]) for i in ids[:50]],
                held_out=ids[50:], held_out_words=[tok.decode([i]) for i in ids[50:]],
                method="topk", params={"k": K}, threshold=0.7, width=D,
                metrics={"held_out_auc": float(rng.uniform(0.5, 1)),
                         "hard_auc": float(rng.uniform(0.5, 1)),
                         "mean_dim_auc": float(rng.uniform(0.5, 1))}))
    cmeta = CatalogMeta(model="synthetic", weights="synthetic", tokenizer=meta.tokenizer,
                        sites=sites, config={}, categories="custom", n_anchors=50, forms="initial")
    return Catalog(feats, cmeta, cache=cache, tokenizer=tok)


def ms(f) -> float:
    t = time.perf_counter()
    f()
    return 1e3 * (time.perf_counter() - t)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def bench_pages(rounds: int) -> list[tuple]:
    tok = load_tokenizer("smollm2")
    cat = synthetic_catalog(tok)
    views = CatalogViews(cat)
    pages, links = Pages(views), Links()
    first_index = ms(lambda: pages.index(links))  # builds the index rows once
    direct = {"index": [], "feature": []}
    http = {"index": [], "feature": []}
    size = len(pages.index(links).encode())
    with running(create_app(views)) as url:
        for r in range(rounds):  # interleaved; a new feature every time (nothing memoised)
            direct["index"].append(ms(lambda: pages.index(links)))
            direct["feature"].append(ms(lambda: pages.feature(2 * r * 7 % len(cat), links)))
            http["index"].append(ms(lambda: get(url + "/")))
            http["feature"].append(ms(lambda: get(url + f"/feature/{(2 * r * 7 + 1) % len(cat)}")))
    return [("index, first render (builds rows)", first_index, None),
            ("index, render", statistics.median(direct["index"]), 200.0),
            ("index, over HTTP", statistics.median(http["index"]), 200.0),
            ("feature page, render", statistics.median(direct["feature"]), 200.0),
            ("feature page, over HTTP", statistics.median(http["feature"]), 200.0),
            (f"(index page size: {size / 1e6:.2f} MB)", float("nan"), None)]


def first_event(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as r:
        for line in r:
            if line.startswith(b"event: token"):
                return 1e3 * (time.perf_counter() - t)
    raise RuntimeError("no token streamed")


def bench_steer(rounds: int) -> list[tuple]:
    from transformers import TextIteratorStreamer

    model, tok = load_model("smollm2", device="cpu")
    g = torch.Generator().manual_seed(0)
    width = model.config.hidden_size
    dims = torch.randperm(width, generator=g)[:32]
    ids = torch.randint(1000, 20000, (60,), generator=g).tolist()
    f = Feature(name="probe", site="resid.15", dims=dims, signs=torch.ones(32), width=width,
                anchors=ids[:50], held_out=ids[50:], anchor_words=[tok.decode([i]) for i in ids[:50]])
    meta = CatalogMeta(model="smollm2", weights="x", tokenizer=tokenizer_fingerprint(tok),
                       sites=["resid.15"], config={}, categories="custom", n_anchors=50,
                       forms="initial")
    cat = Catalog([f], meta, tokenizer=tok)
    prompt = "Here is a list of fruits: apple, banana, cherry,"
    enc = tok([prompt], return_tensors="pt")

    def direct() -> float:  # the baseline: generate's own first streamed piece, no server
        s = TextIteratorStreamer(tok, skip_prompt=True)
        t = time.perf_counter()
        th = threading.Thread(target=model.generate, kwargs=dict(
            **enc, max_new_tokens=8, do_sample=False, streamer=s, pad_token_id=tok.eos_token_id))
        th.start()
        next(iter(s))
        out = 1e3 * (time.perf_counter() - t)
        th.join()
        return out

    base, served = [], []
    app = create_app(CatalogViews(cat), model, tok)
    with running(app) as url:
        q = urllib.parse.urlencode({"feature": "probe", "prompt": prompt, "tokens": "8"})
        for _ in range(rounds):
            base.append(direct())
            served.append(first_event(f"{url}/steer/stream?{q}"))
            time.sleep(0.05)
            with app.state.model_lock:  # the closed stream stops its job; wait for that
                pass
    return [("generate's first token (direct)", statistics.median(base), None),
            ("steer page's first token (HTTP)", statistics.median(served), 1000.0)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--steer-rounds", type=int, default=5)
    ap.add_argument("--skip-steer", action="store_true")
    args = ap.parse_args()
    rows = bench_pages(args.rounds)
    if not args.skip_steer:
        rows += bench_steer(args.steer_rounds)
    print(f"{'what':42s} {'median ms':>10s} {'target':>8s} {'/target':>8s}")
    for what, value, target in rows:
        t = f"{target:.0f}" if target else ""
        r = f"{value / target:.2f}" if target else ""
        v = f"{value:.1f}" if value == value else ""
        print(f"{what:42s} {v:>10s} {t:>8s} {r:>8s}")


if __name__ == "__main__":
    main()
