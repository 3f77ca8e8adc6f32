"""Sections of scripts/bench_gpu.py that need no language model: Hamming search (with faiss when
installed), probes and the BOWS trainer, plus the device-synchronised timer they all use."""

from __future__ import annotations

import statistics
import time

import torch

from bagofdims.signs.hamming import HammingIndex


class Timer:
    """Wall-clock seconds of a callable, with the device synchronised around it."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def __call__(self, fn) -> float:
        self.sync()
        t = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t


def bench_hamming(a, device, timer: Timer) -> dict:
    """Exact top-k over random keys on the device vs the CPU index (parity) and faiss."""
    g = torch.Generator().manual_seed(0)
    nb = a.bits // 8
    keys = torch.randint(0, 256, (a.keys, nb), dtype=torch.uint8, generator=g)
    kinds = {"random": torch.randint(0, 256, (a.queries, nb), dtype=torch.uint8, generator=g),
             "self": keys[:a.queries].clone()}
    out = {"keys": a.keys, "bits": a.bits, "queries": a.queries, "k": a.k, "device": str(device),
           "parity_queries": a.parity}
    kd = keys.to(device)
    holder = {}
    out["index_build_s"] = timer(lambda: holder.update(index=HammingIndex(kd, a.bits)))
    index = holder["index"]
    t = time.perf_counter()
    cpu_index = HammingIndex(keys, a.bits)
    out["cpu_index_build_s"] = time.perf_counter() - t
    faiss = faiss_module()
    out["faiss"] = getattr(faiss, "__version__", "installed") if faiss else "not installed"
    for kind, q in kinds.items():
        qd = q.to(device)
        index.search(qd[:8], a.k)  # warm-up
        res = {}
        times = [timer(lambda: res.update(top=index.search(qd, a.k))) for _ in range(a.rounds)]
        agree, idx = (x.cpu() for x in res["top"])
        r = {"index_s": statistics.median(times), "index_queries_per_s": a.queries / statistics.median(times)}
        p = a.parity
        t = time.perf_counter()
        c_agree, c_idx = cpu_index.search(q[:p], a.k)
        r["cpu_index_queries_per_s"] = p / (time.perf_counter() - t)
        r["parity_with_cpu"] = bool(torch.equal(agree[:p], c_agree) and torch.equal(idx[:p], c_idx))
        if faiss:
            r.update(_faiss_search(faiss, keys, q, agree, idx, a, timer))
        out[kind] = r
    return out


def faiss_module():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _faiss_search(faiss, keys, q, agree, idx, a, timer: Timer) -> dict:
    """faiss IndexBinaryFlat on CPU (the parity queries) and GPU (all queries) if it has one;
    agreement values must equal ours exactly, indices may differ only within ties."""
    r = {}
    cpu = faiss.IndexBinaryFlat(a.bits)
    cpu.add(keys.numpy())
    p = a.parity
    t = time.perf_counter()
    dist, fidx = cpu.search(q[:p].numpy(), a.k)
    r["faiss_cpu_queries_per_s"] = p / (time.perf_counter() - t)
    r["faiss_cpu_same_agreement"] = bool(torch.equal(torch.from_numpy(a.bits - dist).int(), agree[:p]))
    r["faiss_cpu_same_index_frac"] = float((torch.from_numpy(fidx) == idx[:p]).float().mean())
    if hasattr(faiss, "GpuIndexBinaryFlat") and faiss.get_num_gpus() > 0:
        gpu = faiss.GpuIndexBinaryFlat(faiss.StandardGpuResources(), a.bits)
        gpu.add(keys.numpy())
        qn = q.numpy()
        gpu.search(qn[:8], a.k)
        hold = {}
        s = statistics.median([timer(lambda: hold.update(r=gpu.search(qn, a.k))) for _ in range(a.rounds)])
        gdist, gidx = hold["r"]
        r["faiss_gpu_queries_per_s"] = a.queries / s
        r["faiss_gpu_same_agreement"] = bool(torch.equal(torch.from_numpy(a.bits - gdist).int(), agree))
        r["faiss_gpu_same_index_frac"] = float((torch.from_numpy(gidx) == idx).float().mean())
    return r


def bench_probes(a, device, timer: Timer) -> dict:
    """LogisticProbe fit time on planted Gaussian states, every category at once."""
    from probes import LogisticProbe

    g = torch.Generator(device=device).manual_seed(0)
    n, d, k, n_pos = a.probe_n, a.probe_d, a.probe_k, 50
    X = torch.randn(n, d, device=device, generator=g)
    rows = torch.randperm(n, device=device, generator=g)[:k * n_pos].view(k, n_pos)
    Y = torch.zeros(n, k, dtype=torch.bool, device=device)
    Y[rows, torch.arange(k, device=device)[:, None]] = True
    dims = torch.rand(k, d, device=device, generator=g).argsort(1)[:, :16]
    sgn = torch.randint(0, 2, (k, 16), device=device, generator=g) * 2 - 1
    shift = torch.zeros(k, d, device=device).scatter_(1, dims, 0.75 * sgn.float())
    X[rows.flatten()] += shift.repeat_interleave(n_pos, 0)
    m = min(n, 1024)
    LogisticProbe(max_iter=2).fit(X[:m], Y[:m, :2] | (torch.arange(m, device=device) < 8)[:, None])
    hold = {}
    fit_s = timer(lambda: hold.update(p=LogisticProbe(l2=1e-3).fit(X, Y)))
    probe = hold["p"]
    return {"n": n, "d": d, "categories": k, "fit_s": fit_s, "ms_per_category": 1e3 * fit_s / k,
            "iterations_mean": float(probe.n_iter_.float().mean()),
            "converged": int(probe.converged_.sum()), "train_auc_mean": float(probe.auc(X, Y).mean())}


def bench_bows(a, device, timer: Timer) -> dict:
    """Trainer steps/s (forward + backward + AdamW) of the BOWS model at the paper's sizes."""
    from superposition.data import Batch
    from superposition.model import BowsModel, resolve_dtype

    dtype = resolve_dtype("auto", device)
    # windows of distinct Zipf-distributed word ids, as in scripts/bench_bows.py
    g = torch.Generator().manual_seed(0)
    weights = 1.0 / torch.arange(1, a.vocab + 1, dtype=torch.float)
    rows = torch.arange(a.bows_batch).repeat_interleave(a.active)
    starts = torch.arange(0, a.bows_batch * a.active, a.active)
    batches = [Batch(torch.multinomial(weights.expand(a.bows_batch, -1), a.active, generator=g)
                     .sort(1).values.reshape(-1), starts, rows, a.bows_batch).to(device)
               for _ in range(4)]
    out = {"vocab": a.vocab, "batch": a.bows_batch, "active": a.active, "dtype": str(dtype)}
    for m in a.latents:
        model = BowsModel(a.vocab, m).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=4.0,
                                fused=device.type != "mps")

        def steps(count):
            for i in range(count):
                opt.zero_grad(set_to_none=True)
                model.loss(batches[i % len(batches)], dtype).backward()
                opt.step()

        steps(3)  # warm-up
        s = timer(lambda: steps(a.steps))
        out[f"m{m}"] = {"latent": m, "steps_per_s": a.steps / s,
                        "windows_per_s": a.steps * a.bows_batch / s}
    return out
