"""Child process for the kill-and-resume test of ``bows train``.

Trains ``out`` from ``data`` and SIGKILLs itself at the n-th ``os.replace`` onto a file whose name
starts with ``target``: ``before`` the rename, with the temporary file cut to half its size (what
a kill in the middle of writing leaves), or ``after`` it. Hooking the rename, not a function of
the trainer, puts the kill between any two files a checkpoint may consist of.
"""

import json
import os
import signal
import sys

import torch

torch.set_num_threads(1)

from superposition.train import TrainConfig, train  # noqa: E402

data, out, settings, target, when, n = sys.argv[1:7]
n = int(n)
renames = []
real_replace = os.replace


def replace_or_die(src, dst, *args, **kwargs):
    if os.path.basename(os.fspath(dst)).startswith(target):
        renames.append(dst)
        if len(renames) == n and when == "before":
            with open(src, "r+b") as f:
                f.truncate(os.path.getsize(src) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst, *args, **kwargs)
    if len(renames) == n and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)


os.replace = replace_or_die
train(TrainConfig(data=data, out=out, **json.loads(settings)))
