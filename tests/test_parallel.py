"""Several processes (bagofdims.parallel): a 2-process sign cache, activation store and catalog
top-context pass are byte-identical to 1-process ones; a SIGKILLed rank, then a relaunch, resumes without recomputing
what was finished; an error on one rank ends every rank with its message.

One build goes through ``accelerate launch -m bagofdims`` (what users run; on a machine without
GPUs accelerate needs ``--multi_gpu`` to start several processes, which then use gloo; its ~20 s
are the two processes importing torch and transformers). The other runs fork the ranks from this
process with the environment the launcher sets (no import time), so what a surviving rank does
when its peer dies is seen directly, not masked by the launcher killing it.
"""

import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tiny
from bagofdims.cli.main import main

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [" ".join(f"w{(7 * i + j) % 90 + 3}" for j in range(3 + i % 5)) for i in range(40)]
CAPTURE = ["--device", "cpu", "--batch-size", "8", "--chunk-size", "16", "--magnitudes"]
ACTS = ["--device", "cpu", "--batch-size", "4", "--shard-tokens", "16", "--sites", "resid.0",
        "k.2"]
N_CHUNKS, N_SHARDS = 6, 10  # 96 tokens / 16; 40 texts of 200 tokens in shards of >= 16


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    model = root / "tiny-llama"
    tiny.make("llama").save_pretrained(model)
    tiny.tokenizer().save_pretrained(model)
    texts = root / "docs.txt"
    texts.write_text("\n".join(TEXTS) + "\n")
    return model, texts


@pytest.fixture(scope="module")
def reference(files, tmp_path_factory):
    """The 1-process cache and store, through the same command line."""
    model, texts = files
    root = tmp_path_factory.mktemp("one")
    assert main(["capture", "--model", str(model), "--out", str(root / "cache"), *CAPTURE]) == 0
    assert main(["activations", "--model", str(model), "--texts", str(texts), "--out",
                 str(root / "acts"), *ACTS]) == 0
    return root / "cache", root / "acts"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_cache(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert "signs.safetensors" in names and "magnitudes.safetensors" in names
    for name in set(names) - {"meta.json"}:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    meta_a, meta_b = (json.loads((p / "meta.json").read_text()) for p in (a, b))
    # when, how long, how much memory (the main process's); nothing else differs
    timing = {"created", "build_seconds", "peak_memory", "meta_sha256"}
    assert {k: v for k, v in meta_a.items() if k not in timing} == \
        {k: v for k, v in meta_b.items() if k not in timing}
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def _same_store(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())  # no part files left behind
    assert len([n for n in names if n.startswith("shard-")]) == N_SHARDS
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name  # index.json too


# -- accelerate launch -m bagofdims ----------------------------------------------------------------
def _launch(*argv) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_port()), "-m", "bagofdims", *map(str, argv)]
    env = dict(os.environ, OMP_NUM_THREADS="1", BAGOFDIMS_PROCESS_TIMEOUT="120",
               PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_accelerate_launch_builds_the_one_process_cache(files, reference, tmp_path):
    done = _launch("capture", "--model", files[0], "--out", tmp_path / "cache", *CAPTURE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("sign cache of") == 1  # the summary once, from the main process
    _same_cache(reference[0], tmp_path / "cache")
    assert not (tmp_path / "cache.partial").exists()


# -- forked ranks: SIGKILL, relaunch, errors -------------------------------------------------------
def _rank(rank, size, port, argv, log, kill, fail, err_path, oom=False):
    """One rank (a forked child): the launcher's environment, then the command line."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(size),
                      LOCAL_WORLD_SIZE=str(size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                      BAGOFDIMS_PROCESS_TIMEOUT="60")
    if size == 1:
        for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
            os.environ.pop(key)
    sys.stdout = sys.stderr = open(err_path, "w", buffering=1)  # noqa: SIM115 - until os._exit
    from accelerate.state import PartialState

    PartialState._reset_state()  # a state made earlier in this process is not this rank's
    from bagofdims import stream
    from bagofdims.errors import NumericalError
    from bagofdims.signs import checkpoint

    def done(i):
        with open(log, "a") as f:
            f.write(f"{i}\n")
        if kill and rank == 1:  # after its first unit of work is saved
            os.kill(os.getpid(), signal.SIGKILL)
        if fail and rank == 1:
            raise NumericalError("planted failure on rank 1")

    if oom and rank == 1:  # rank 1's device fits 4 tokens per forward pass, no more
        from bagofdims.signs import forward

        real_run = forward.Capture.run

        def run(self, *args, **kwargs):
            if kwargs["input_ids"].shape[0] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return real_run(self, *args, **kwargs)

        forward.Capture.run = run
    save, flush = checkpoint.Checkpoint.save, stream._flush
    checkpoint.Checkpoint.save = lambda self, i, part: (save(self, i, part), done(i))[0]
    stream._flush = lambda out, index, buf, i, *rest: (flush(out, index, buf, i, *rest), done(i))[0]
    try:
        code = main([str(a) for a in argv])
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _fork(size, argv, tmp_path, tag, kill=False, fail=False, oom=False):
    """Run ``argv`` on ``size`` forked ranks; ``(exit codes, stderr texts, units computed)``."""
    ctx, port = multiprocessing.get_context("fork"), _port()
    log = tmp_path / f"{tag}.log"
    log.write_text("")
    errs = [tmp_path / f"{tag}.{r}.err" for r in range(size)]
    procs = [ctx.Process(target=_rank, args=(r, size, port, argv, log, kill, fail, errs[r], oom))
             for r in range(size)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    alive = [p for p in procs if p.is_alive()]
    for p in alive:
        p.kill()
    assert not alive, "a rank hung instead of stopping"
    units = [int(x) for x in log.read_text().split()]
    return [p.exitcode for p in procs], [e.read_text() for e in errs], units


def _finished_chunks(ckpt: Path) -> set[int]:
    from bagofdims.storage import sha256

    recorded = {}
    for f in ckpt.glob("build*.json"):
        recorded.update(json.loads(f.read_text())["chunks"])
    return {int(name[6:12]) for name, digest in recorded.items()
            if (ckpt / name).exists() and sha256(ckpt / name) == digest}


@pytest.mark.parametrize("relaunch", [2, 1])
def test_sigkill_of_a_rank_then_relaunch_resumes_the_cache(files, reference, tmp_path, relaunch):
    argv = ["capture", "--model", files[0], "--out", tmp_path / "cache", *CAPTURE]
    codes, errs, units = _fork(2, argv, tmp_path, "killed", kill=True)
    assert codes[1] == -signal.SIGKILL
    assert codes[0] == 2 and "another process of the 2 stopped" in errs[0]  # not a hang
    assert "Traceback" not in errs[0]
    finished = _finished_chunks(tmp_path / "cache.partial")
    assert 3 in finished and len(finished) < N_CHUNKS  # rank 1's first chunk, not all
    codes, errs, units = _fork(relaunch, argv, tmp_path, "again")
    assert codes == [0] * relaunch, errs
    assert sorted(units) == sorted(set(range(N_CHUNKS)) - finished)  # nothing finished redone
    _same_cache(reference[0], tmp_path / "cache")


def test_out_of_memory_on_one_rank_is_recorded_in_the_meta(files, reference, tmp_path):
    """Rank 1 halves its batches (8 -> 4) on out-of-memory; the main process's meta records the
    smallest batch size any process ended at, and the arrays are the one-process ones."""
    argv = ["capture", "--model", files[0], "--out", tmp_path / "cache", *CAPTURE]
    codes, errs, units = _fork(2, argv, tmp_path, "oom", oom=True)
    assert codes == [0, 0], errs
    meta, ref = (json.loads((p / "meta.json").read_text()) for p in (tmp_path / "cache", reference[0]))
    assert (ref["batch_size"], ref["batch_size_used"]) == (8, 8)
    assert (meta["batch_size"], meta["batch_size_used"]) == (8, 4)
    assert meta["peak_memory"] > 0 and meta["peak_memory_measure"] == ref["peak_memory_measure"]
    for name in ("signs.safetensors", "magnitudes.safetensors"):
        assert (tmp_path / "cache" / name).read_bytes() == (reference[0] / name).read_bytes()


def test_two_processes_write_the_one_process_store(files, reference, tmp_path):
    argv = ["activations", "--model", files[0], "--texts", files[1], "--out", tmp_path / "acts",
            *ACTS]
    codes, errs, units = _fork(2, argv, tmp_path, "two")
    assert codes == [0, 0], errs
    assert sorted(units) == list(range(N_SHARDS))  # each shard written once, by one process
    assert "200 tokens" in errs[0] and "200 tokens" not in errs[1]  # only the main one prints
    _same_store(reference[1], tmp_path / "acts")


@pytest.mark.parametrize("relaunch", [2, 1])
def test_sigkill_of_a_rank_then_relaunch_resumes_the_store(files, reference, tmp_path, relaunch):
    argv = ["activations", "--model", files[0], "--texts", files[1], "--out", tmp_path / "acts",
            *ACTS]
    codes, errs, units = _fork(2, argv, tmp_path, "killed", kill=True)
    assert codes[1] == -signal.SIGKILL and codes[0] == 2, errs
    assert "another process of the 2 stopped" in errs[0]
    parts = {int(p.name[6:11]) for p in (tmp_path / "acts").glob(".part-*.json")}
    assert 5 in parts and len(parts) < N_SHARDS  # rank 1 starts at shard 5
    codes, errs, units = _fork(relaunch, argv, tmp_path, "again")
    assert codes == [0] * relaunch, errs
    assert sorted(units) == sorted(set(range(N_SHARDS)) - parts)
    _same_store(reference[1], tmp_path / "acts")


def test_two_processes_build_the_one_process_example_cache(files, tmp_path):
    src = tmp_path / "examples"
    for i, text in enumerate(TEXTS[:20]):
        (src / f"label{i % 2}").mkdir(parents=True, exist_ok=True)
        (src / f"label{i % 2}" / f"{i:02d}.txt").write_text(text)
    argv = ["capture", "--model", files[0], "--inputs", src, "--device", "cpu", "--batch-size", "2",
            "--chunk-size", "4", "--sites", "resid.1", "--magnitudes"]
    for size in (1, 2):
        codes, errs, units = _fork(size, [*argv, "--out", tmp_path / f"c{size}"], tmp_path, str(size))
        assert codes == [0] * size, errs
        assert sorted(units) == list(range(5))  # 20 examples in chunks of 4, each computed once
    _same_cache(tmp_path / "c1", tmp_path / "c2")


def test_an_error_on_one_rank_ends_every_rank_with_its_message(files, tmp_path):
    argv = ["capture", "--model", files[0], "--out", tmp_path / "cache", *CAPTURE]
    codes, errs, _ = _fork(2, argv, tmp_path, "fail", fail=True)
    assert codes == [2, 2]
    lines = [[line for line in e.splitlines() if "error" in line] for e in errs]
    assert lines[1] == ["bagofdims capture: error: planted failure on rank 1"]
    assert len(lines[0]) == 1 and lines[0][0].startswith("bagofdims capture: error: ") and \
        "process 1 of 2 failed: planted failure on rank 1" in lines[0][0]
    assert "Traceback" not in errs[0] + errs[1]
    assert not (tmp_path / "cache").exists()


def test_one_process_world_needs_no_launcher():
    from bagofdims.parallel import World, world

    if "WORLD_SIZE" in os.environ:
        pytest.skip("running under a launcher")
    here = world()
    assert here == World() and here.is_main and here.share(range(5)) == [0, 1, 2, 3, 4]
    with here.together("nothing"):
        pass
    assert here.on_main("a sum", lambda: 1 + 1) == 2
    assert here.rank_device("cpu") == "cpu" and here.rank_device(None) is None
    assert torch.distributed.is_available() and not torch.distributed.is_initialized()


# -- the catalog's top-context pass ----------------------------------------------------------------
N_BATCHES = 10  # 40 documents, 4 per batch


@pytest.fixture(scope="module")
def catalog(files, tmp_path_factory):
    """A tiny catalog and its contexts computed by one process (``contexts.json`` bytes)."""
    import shutil

    from cli.conftest import CATEGORIES

    root = tmp_path_factory.mktemp("catalog")
    (root / "categories.json").write_text(json.dumps(CATEGORIES))
    assert main(["capture", "--model", str(files[0]), "--out", str(root / "cache"), "--device",
                 "cpu"]) == 0
    assert main(["catalog", "--cache", str(root / "cache"), "--out", str(root / "catalog"),
                 "--categories", str(root / "categories.json"), "--n-anchors", "12", "-k", "8"]) == 0
    shutil.copytree(root / "catalog", root / "one")
    assert main(_contexts_argv(files, root / "one")) == 0
    return root / "catalog", (root / "one" / "contexts.json").read_bytes()


def _contexts_argv(files, cat):
    return ["contexts", str(cat), "--model", str(files[0]), "--corpus", str(files[1]), "--n-docs",
            "40", "--batch-size", "4", "--device", "cpu", "--top", "3"]


@pytest.mark.parametrize("relaunch", [2, 1])
def test_contexts_on_two_processes_resume_after_a_sigkill_and_equal_one(files, catalog, tmp_path,
                                                                       relaunch):
    import shutil

    cat = tmp_path / "catalog"
    shutil.copytree(catalog[0], cat)
    argv = _contexts_argv(files, cat)
    codes, errs, units = _fork(2, argv, tmp_path, "killed", kill=True)
    assert codes[1] == -signal.SIGKILL and codes[0] == 2, errs
    assert "another process of the 2 stopped" in errs[0] and "Traceback" not in errs[0]
    finished = _finished_chunks(cat / "contexts.partial")
    assert 5 in finished and len(finished) < N_BATCHES  # rank 1's first batch, not all
    assert not (cat / "contexts.json").exists()
    codes, errs, units = _fork(relaunch, argv, tmp_path, "again")
    assert codes == [0] * relaunch, errs
    assert sorted(units) == sorted(set(range(N_BATCHES)) - finished)  # nothing finished redone
    assert errs[0].count("top contexts of") == 1 and all("top contexts" not in e for e in errs[1:])
    assert (cat / "contexts.json").read_bytes() == catalog[1]
    assert not (cat / "contexts.partial").exists()


def test_two_processes_compute_the_one_process_contexts(files, catalog, tmp_path):
    import shutil

    cat = tmp_path / "catalog"
    shutil.copytree(catalog[0], cat)
    codes, errs, units = _fork(2, _contexts_argv(files, cat), tmp_path, "two")
    assert codes == [0, 0], errs
    assert sorted(units) == list(range(N_BATCHES))  # each batch computed once, by one process
    assert (cat / "contexts.json").read_bytes() == catalog[1]
    # a rerun finds them stored and computes nothing
    codes, errs, units = _fork(2, _contexts_argv(files, cat), tmp_path, "stored")
    assert codes == [0, 0] and units == [], errs
