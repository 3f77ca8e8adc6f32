"""Child process for the SIGKILL test: writes a tiny activation store, killing itself after shard
N is renamed into place but before the index lists it.

argv: out, texts.json, N.
"""

import json
import os
import signal
import sys

import torch

torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(__file__))

import tiny  # noqa: E402

from bagofdims import stream  # noqa: E402

out, texts_path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
original_write = stream.write_json


def write_or_die(path, index):
    if len(index["shards"]) == n:
        os.kill(os.getpid(), signal.SIGKILL)
    original_write(path, index)


stream.write_json = write_or_die
texts = json.loads(open(texts_path, encoding="utf-8").read())
stream.write_activations(tiny.make("llama"), tiny.tokenizer(), texts, ["resid.0", "k.2"], out,
                         batch_size=4, shard_tokens=16, dtype=torch.float32, progress=False)
