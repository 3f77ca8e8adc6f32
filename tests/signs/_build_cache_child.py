"""Child process for the resume test: builds a tiny cache, optionally SIGKILLing itself."""

import os
import signal
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tiny  # noqa: E402

from bagofdims.signs import cache as cache_mod  # noqa: E402
from bagofdims.signs import checkpoint as checkpoint_mod  # noqa: E402

out, ckpt, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kill_after:
    saved = []
    original = checkpoint_mod.Checkpoint.save

    def save_then_die(self, i, part):
        original(self, i, part)
        saved.append(i)
        if len(saved) == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpoint_mod.Checkpoint.save = save_then_die
model = tiny.make("llama")
c = cache_mod.SignCache.build(model, tiny.tokenizer(), sites=["resid.*", "final"], batch_size=8,
                              chunk_size=16, checkpoint=ckpt, progress=False, magnitudes=True)
c.save(out)
