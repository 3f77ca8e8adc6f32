"""GPU benchmark: sign-cache build, Hamming search, steering, probes and the BOWS trainer at scale.

    python scripts/bench_gpu.py --save-tokenizer runs/gpu/tokenizer   # once, here: SmolLM2's files
    python scripts/bench_gpu.py --tokenizer runs/gpu/tokenizer        # on a GPU: <= 8 min on an H100
    python scripts/bench_gpu.py --smoke --tokenizer DIR --out DIR     # CPU, tiny shapes, seconds

No weights are downloaded: Llama models of the ~1B (Llama 3.2 1B) and ~8B (Llama 3 8B) shapes are
initialised at random in bf16 on the device. The tokenizer is a real one (SmolLM2's 49,152 tokens,
or any tokenizer directory), so each cache covers its ids while the models keep Llama 3's
128,256-row embedding and LM head. Each number stands beside a baseline measured in the same run
(medians of interleaved rounds):

- build: ``SignCache.build`` (every ``resid`` site + ``final``) tokens/s vs the ideal bare forward
  (the headless model on each token after the start token, whose key/values are computed once and
  repeated over the batch, no hooks) and vs the matmul roofline (FLOP/s of a bf16 8192^3 product
  over 2 x the parameters of the layers per token);
- hamming: ``HammingIndex`` top-k over 151,936 random keys x 4096 bits (random queries, and the
  keys' own rows), exact parity with the CPU index, and faiss ``IndexBinaryFlat`` (CPU; GPU when
  faiss has it) if installed;
- steering: ``generate`` tokens/s with a sign flip (32 dims, every position) vs without;
- probes: ``LogisticProbe`` fit on [49,152 x 4096] states, 200 categories;
- bows: the BOWS trainer step (forward + backward + AdamW) at V = 10,000, m = 1,000 and 10,000.

The last three live in ``scripts/bench_gpu_parts.py``. Writes ``bench_gpu.json`` and
``bench_gpu.md`` into ``--out``. A section that would start after
``--budget-s`` is skipped, and a section that fails is recorded with its error (exit status 1),
so one run always brings back what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # a bare checkout (no pip install)

try:
    from bagofdims.features.feature import Feature
    from bagofdims.inputs import SingleTokenInputs, resolve_prefix
    from bagofdims.models import weight_fingerprint
    from bagofdims.signs.cache import SignCache
    from bagofdims.steering.interventions import sign_flip
    from bench_gpu_parts import Timer, bench_bows, bench_hamming, bench_probes, faiss_module
except ImportError as _err:  # a bare GPU image: say which package to bring (as a wheel)
    sys.exit(f"bench_gpu: {_err}; install that package (or carry its wheel) and rerun.")

LLAMA = {  # Llama 3.2 1B and Llama 3 8B
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               tie_word_embeddings=True),
    "8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
               tie_word_embeddings=False),
}
SMOKE_LLAMA = {
    "1b": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, tie_word_embeddings=True),
    "8b": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, tie_word_embeddings=False),
}
FULL = dict(matmul=8192, keys=151_936, bits=4096, queries=1024, parity=64, k=100, new_tokens=64,
            probe_n=49_152, probe_d=4096, probe_k=200, vocab=10_000, latents=(1000, 10_000),
            bows_batch=512, active=400, steps=20)
SMOKE = dict(matmul=256, keys=4096, bits=256, queries=64, parity=16, k=10, new_tokens=4,
             probe_n=1024, probe_d=32, probe_k=4, vocab=500, latents=(50, 500), bows_batch=64,
             active=20, steps=3)
PROMPT = "Here is a list of animals: dog, cat, horse, and"


def load_tokenizer(where: str):
    """A tokenizer directory (AutoTokenizer, else its tokenizer.json alone) or an embedded name."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = Path(where)
    if not path.is_dir():
        from bagofdims.models import load_tokenizer as embedded

        return embedded(where)
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as err:  # another transformers version: the fast tokenizer file still loads
        print(f"AutoTokenizer failed ({err}); reading {path / 'tokenizer.json'} directly")
        cfg = json.loads((path / "tokenizer_config.json").read_text())
        special = {k: cfg[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if cfg.get(k)}
        return PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), **special)


def make_llama(shape: dict, tok, device: torch.device, dtype: torch.dtype):
    """A random-init Llama built directly on ``device`` in ``dtype`` (no CPU copy)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = {"vocab_size": len(tok), **shape}
    cfg = LlamaConfig(**shape, max_position_embeddings=4096, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval()


def matmul_tflops(n: int, device, dtype, timer: Timer, reps: int = 10) -> float:
    """FLOP/s (in T) of an n^3 matrix product: the roofline the forward passes are held to."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    return 2 * n ** 3 * reps / timer(lambda: [a @ b for _ in range(reps)]) / 1e12


def bench_build(model, tok, a, timer: Timer, tflops: float) -> dict:
    """Sign-cache build vs the ideal bare forward over the same tokens, interleaved rounds."""
    device = next(model.parameters()).device
    n = min(len(tok), model.get_input_embeddings().weight.shape[0])
    ids = torch.arange(n)
    base = model.get_decoder()
    bos_id = resolve_prefix(model, tok, None)[0]
    inputs = SingleTokenInputs(base, bos_id, device)  # the start token's key/values, once

    def bare():
        with torch.inference_mode():
            for s in range(0, n, a.batch_size):
                base(**inputs(ids[s:s + a.batch_size]))

    def build():
        SignCache.build(model, tok, sites=["resid.*", "final"], tokens=ids,
                        batch_size=a.batch_size, progress=False)

    layers = sum(p.numel() for p in base.layers.parameters())
    out = {"shape": {k: v for k, v in model.config.to_dict().items() if k in LLAMA["8b"]},
           "params": sum(p.numel() for p in model.parameters()), "layer_params": layers,
           "dtype": str(next(model.parameters()).dtype).replace("torch.", ""), "tokens": n,
           "batch_size": a.batch_size, "sites": len(model.model.layers) + 1,
           "fingerprint_s": timer(lambda: weight_fingerprint(model))}  # cached per model after
    timer(bare)  # warm-up
    times = {"bare": [], "build": []}
    for _ in range(a.rounds):
        times["bare"].append(timer(bare))
        times["build"].append(timer(build))
    bare_tps, build_tps = (n / statistics.median(times[k]) for k in ("bare", "build"))
    roof = tflops * 1e12 / (2 * layers)
    out.update(bare_tok_s=bare_tps, build_tok_s=build_tps, roofline_tok_s=roof,
               build_over_bare=build_tps / bare_tps, bare_over_roofline=bare_tps / roof,
               build_over_roofline=build_tps / roof,
               rounds_s={k: [round(t, 4) for t in v] for k, v in times.items()})
    return out


def bench_steering(model, tok, a, timer: Timer) -> dict:
    """generate() tokens/s with and without a 32-dim sign flip at 2/3 depth (every position)."""
    n_layers, width = model.config.num_hidden_layers, model.config.hidden_size
    g = torch.Generator().manual_seed(0)
    feat = Feature("bench", f"resid.{n_layers * 2 // 3}", torch.randperm(width, generator=g)[:32],
                   torch.where(torch.rand(32, generator=g) < 0.5, -1, 1))
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    tok.padding_side = "left"
    device = next(model.parameters()).device
    out = {"site": feat.site, "dims": 32, "new_tokens": a.new_tokens}
    for batch in (1, 8):
        enc = tok([PROMPT] * batch, return_tensors="pt", padding=True).to(device)

        def gen(n=a.new_tokens):
            with torch.no_grad():
                model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                               pad_token_id=pad)

        gen(4)  # warm-up
        plain, flipped = [], []
        for _ in range(a.rounds):
            plain.append(batch * a.new_tokens / timer(gen))
            with sign_flip(model, feat, mode="away") as flip:
                flipped.append(batch * a.new_tokens / timer(gen))
            assert flip.calls[feat.site] == a.new_tokens  # every decode step went through it
        p, f = statistics.median(plain), statistics.median(flipped)
        out[f"batch{batch}"] = {"plain_tok_s": p, "flip_tok_s": f, "overhead_pct": 100 * (p / f - 1),
                                "ms_per_token_added": 1e3 * batch * (1 / f - 1 / p)}
    return out


def environment(device) -> dict:
    import transformers

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "device": str(device),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1))
    faiss = faiss_module()
    env["faiss"] = getattr(faiss, "__version__", "installed") if faiss else "not installed"
    return env


def markdown(res: dict) -> str:
    """The JSON's numbers as one table per section."""
    lines = [f"# GPU benchmark ({res['env'].get('gpu', res['env']['device'])}"
             f"{', smoke' if res['smoke'] else ''})", "",
             "`python scripts/bench_gpu.py` (see its docstring); every ratio is against a baseline "
             "measured in the same run.", "", f"environment: {json.dumps(res['env'])}", ""]

    def rows(prefix, obj):
        for key, v in obj.items():
            if isinstance(v, dict) and key != "shape":
                yield from rows(f"{prefix}{key}.", v)
            elif isinstance(v, float):
                yield f"| {prefix}{key} | {v:,.4g} |"
            elif isinstance(v, int) and not isinstance(v, bool):
                yield f"| {prefix}{key} | {v:,} |"
            elif not isinstance(v, list):
                yield f"| {prefix}{key} | {v} |"

    for name in ("roofline", "build", "steering", "hamming", "probes", "bows"):
        if name in res:
            lines += [f"## {name}", "", "| measure | value |", "|---|---|", *rows("", res[name]), ""]
    lines.append(f"total: {res['total_s']:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="reports/gpu", help="folder for bench_gpu.json / .md")
    ap.add_argument("--tokenizer", default=None,
                    help="tokenizer folder or embedded model name (default: runs/gpu/tokenizer if "
                         "present, else smollm2)")
    ap.add_argument("--save-tokenizer", metavar="DIR", help="write the tokenizer to DIR and stop")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, seconds)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                    help="model dtype (auto: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--models", nargs="+", default=["1b", "8b"], choices=["1b", "8b"])
    ap.add_argument("--batch-size", type=int, default=512, help="cache build tokens per forward")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    ap.add_argument("--budget-s", type=float, default=420,
                    help="skip sections that would start later than this")
    a = ap.parse_args(argv)
    tok_src = a.tokenizer or ("runs/gpu/tokenizer" if Path("runs/gpu/tokenizer").is_dir() else "smollm2")
    tok = load_tokenizer(tok_src)
    if a.save_tokenizer:
        tok.save_pretrained(a.save_tokenizer)
        size = sum(f.stat().st_size for f in Path(a.save_tokenizer).iterdir())
        print(f"tokenizer ({len(tok):,} tokens) -> {a.save_tokenizer} ({size / 2**20:.1f} MiB)")
        return 0
    for k, v in (SMOKE if a.smoke else FULL).items():
        setattr(a, k, v)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if a.dtype == "bf16" or a.dtype == "auto" and device.type == "cuda" \
        else torch.float32
    timer, t0 = Timer(device), time.perf_counter()
    res = {"smoke": a.smoke, "tokenizer": {"source": tok_src, "tokens": len(tok)},
           "env": environment(device)}
    failed = []

    def section(name, fn, *args):
        where = name.split(".")
        if time.perf_counter() - t0 > a.budget_s:
            value = {"skipped": f"time budget of {a.budget_s:.0f} s reached"}
        else:
            try:
                value = fn(*args)
            except Exception as err:  # recorded, so the other sections still report
                traceback.print_exc()
                failed.append(name)
                value = {"error": f"{type(err).__name__}: {err}"}
        if len(where) > 1:
            res.setdefault(where[0], {})[where[1]] = value
        else:
            res[name] = value
        print(f"[{time.perf_counter() - t0:6.1f} s] {name}: {json.dumps(value)[:300]}", flush=True)

    section("roofline", lambda: {"matmul_n": a.matmul, "dtype": str(dtype).replace("torch.", ""),
                                 "tflops": matmul_tflops(a.matmul, device, dtype, timer)})
    tflops = res["roofline"].get("tflops", float("nan"))
    for name in a.models:
        shape = (SMOKE_LLAMA if a.smoke else LLAMA)[name]
        model = make_llama(shape, tok, device, dtype)
        section(f"build.{name}", bench_build, model, tok, a, timer, tflops)
        section(f"steering.{name}", bench_steering, model, tok, a, timer)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    section("hamming", bench_hamming, a, device, timer)
    section("probes", bench_probes, a, device, timer)
    section("bows", bench_bows, a, device, timer)
    res["total_s"] = time.perf_counter() - t0
    res["failed"] = failed
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_gpu.json").write_text(json.dumps(res, indent=1))
    (out / "bench_gpu.md").write_text(markdown(res))
    print(f"wrote {out / 'bench_gpu.json'} and {out / 'bench_gpu.md'} in {res['total_s']:.0f} s"
          f"{'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
