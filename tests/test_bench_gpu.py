"""scripts/bench_gpu.py --smoke runs end to end on the CPU and reports every number it promises."""

import json
import os
import subprocess
import sys
from pathlib import Path

import tiny

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_gpu.py"
POSITIVE = [  # (path in the JSON, ...) of numbers that must be finite and > 0
    ("roofline", "tflops"),
    *[("build", m, k) for m in ("1b", "8b") for k in (
        "bare_tok_s", "build_tok_s", "roofline_tok_s", "build_over_bare", "bare_over_roofline",
        "build_over_roofline", "fingerprint_s", "params", "layer_params", "tokens")],
    *[("steering", m, f"batch{b}", k) for m in ("1b", "8b") for b in (1, 8)
      for k in ("plain_tok_s", "flip_tok_s")],
    *[("hamming", q, k) for q in ("random", "self")
      for k in ("index_s", "index_queries_per_s", "cpu_index_queries_per_s")],
    ("hamming", "index_build_s"),
    ("probes", "fit_s"), ("probes", "ms_per_category"), ("probes", "train_auc_mean"),
    ("bows", "m50", "steps_per_s"), ("bows", "m500", "steps_per_s"),
    ("total_s",),
]


def test_smoke_run_writes_json_and_markdown_with_every_field(tmp_path):
    tok_dir, out = tmp_path / "tok", tmp_path / "out"
    tiny.tokenizer().save_pretrained(tok_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--device", "cpu",
                           "--tokenizer", str(tok_dir), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    res = json.loads((out / "bench_gpu.json").read_text())
    assert res["smoke"] is True and res["failed"] == [] and res["tokenizer"]["tokens"] == tiny.VOCAB
    for path in POSITIVE:
        value = res
        for key in path:
            assert key in value, f"missing {'.'.join(path)}"
            value = value[key]
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (path, value)
        assert 0 < value < float("inf"), (path, value)
    assert res["build"]["8b"]["tokens"] == tiny.VOCAB and res["build"]["8b"]["sites"] == 4
    for kind in ("random", "self"):
        assert res["hamming"][kind]["parity_with_cpu"] is True
    md = (out / "bench_gpu.md").read_text()
    assert "## build" in md and "build_over_bare" in md and "## bows" in md
