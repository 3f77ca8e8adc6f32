"""Child process: save a tiny cache or catalog over an existing one, SIGKILLed at a chosen point.

argv: kind (cache | catalog), target dir, point (none | fill | between | exchanged), seed
"""

import os
import signal
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import tiny  # noqa: E402

import bagofdims as bd  # noqa: E402
from bagofdims import storage  # noqa: E402

kind, target, point, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point == "fill":
    real = storage.sha256

    def sha_then_die(path):  # the first checksum happens after the first data file is written
        real(path)
        die()

    storage.sha256 = sha_then_die
    import bagofdims.signs.cache as cache_mod
    import bagofdims.catalog.format as fmt
    cache_mod.sha256 = fmt.sha256 = sha_then_die
elif point in ("between", "exchanged"):
    real_replace, real_exchange = os.replace, storage._exchange
    if point == "between":
        storage._exchange = lambda a, b: False

        def replace_then_die(src, dst):
            real_replace(src, dst)
            if str(src) == target:  # the old directory moved aside, the new not yet in place
                die()

        storage.os.replace = replace_then_die
    else:
        def exchange_then_die(a, b):
            assert real_exchange(a, b)
            die()

        storage._exchange = exchange_then_die

model, tok = tiny.make("llama", seed=seed), tiny.tokenizer()
cache = bd.SignCache.build(model, tok, sites=["resid.1"], progress=False)
if kind == "cache":
    cache.save(target, overwrite=True)
else:
    cats = {"low": [f"w{i}" for i in range(3, 33)], "high": [f"w{i}" for i in range(50, 80)]}
    cat = bd.Catalog.build(cache, categories=cats, tokenizer=tok, sites="resid.1", n_anchors=12,
                           n_min_held_out=5, progress=False)
    cat.save(target, overwrite=True)
