import numpy as np
import torch

from superposition.data import Batch, BowsData, DataConfig, build_data
from superposition.model import BowsModel, dense_loss
from superposition.train import TrainConfig, evaluate, load_model, train

PAD = " filler text so every line passes the fifty character minimum"


def _batch(x: torch.Tensor) -> Batch:
    r, i = x.nonzero(as_tuple=True)
    off = torch.zeros(len(x), dtype=torch.long)
    off[1:] = torch.cumsum(x.sum(1).long(), 0)[:-1]
    return Batch(i, off, r, len(x))


def test_fused_loss_matches_dense_autograd():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(7, 40, generator=g) < 0.2).float()
    for relu in (True, False):
        model = BowsModel(40, 6, relu=relu, seed=1)
        with torch.no_grad():
            model.E.mul_(4)
            model.b.uniform_(-0.2, 0.2, generator=g)
            model.b[:8] = -50.0  # units off for the whole batch: zero gradient, error 1 per target
        loss = model.loss(_batch(x))
        loss.backward()
        W = model.E.detach().T.clone().requires_grad_()
        b = model.b.detach().clone().requires_grad_()
        ref = dense_loss(W, b, x, relu)
        ref.backward()
        assert torch.allclose(loss, ref, atol=1e-6)
        assert torch.allclose(model.E.grad, W.grad.T, atol=1e-6)
        assert torch.allclose(model.b.grad, b.grad, atol=1e-7)
        assert torch.allclose(model(_batch(x)), torch.relu(x @ W.T @ W + b) if relu else x @ W.T @ W + b, atol=1e-5)


def test_bf16_fused_loss_tracks_fp32():
    """The bf16 compute path (AMX CPUs, CUDA) gives the fp32 loss and gradients to bf16 precision."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(64, 300, generator=g) < 0.1).float()
    grads = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = BowsModel(300, 32, seed=2)
        with torch.no_grad():
            model.E.mul_(6)
            model.b.uniform_(-0.3, 0.1, generator=g)
        loss = model.loss(_batch(x), dtype)
        loss.backward()
        grads[dtype] = (loss.detach(), model.E.grad, model.b.grad)
    (l32, e32, b32), (l16, e16, b16) = grads[torch.float32], grads[torch.bfloat16]
    assert abs(float(l16 - l32)) < 0.02 * float(l32)
    for a, b in ((e16, e32), (b16, b32)):
        cos = torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0)
        assert cos > 0.99, float(cos)


def _tiny_data(tmp_path, monkeypatch):
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    rng = np.random.default_rng(0)
    docs = [[" ".join(rng.choice(words, 3)) + PAD for _ in range(4)] for _ in range(60)]
    monkeypatch.setattr("superposition.data.load_corpus", lambda name: docs)
    cfg = DataConfig(out=str(tmp_path / "data"), vocab=60, window=2)
    build_data(cfg)
    return cfg.out


def test_training_lowers_loss(tmp_path, monkeypatch):
    data_dir = _tiny_data(tmp_path, monkeypatch)
    data = BowsData(data_dir)
    cfg = TrainConfig(data=data_dir, out=str(tmp_path / "run"), latent=8, weight_decay=0.1, lr=1e-2,
                      epochs=30, batch_size=32, progress=False, checkpoint_every=10, precision="fp32")
    before = evaluate(BowsModel(data.vocab_size, 8, seed=0), data)
    summary = train(cfg)
    assert summary["val_loss"] < 0.5 * before
    assert abs(summary["lr_x_wd_x_steps"] - 1e-2 * 0.1 * summary["steps"]) < 1e-9
    model, saved = load_model(cfg.out)
    assert saved["latent"] == 8 and abs(evaluate(model, data) - summary["val_loss"]) < 1e-6


class _Stop(Exception):
    pass


def test_interrupted_run_resumes_to_same_weights(tmp_path, monkeypatch):
    import sys

    T = sys.modules["superposition.train"]  # the package re-exports train() under the same name

    data_dir = _tiny_data(tmp_path, monkeypatch)
    base = dict(data=data_dir, latent=4, weight_decay=0.5, lr=1e-2, epochs=3, batch_size=32,
                progress=False, checkpoint_every=7, precision="fp32")
    train(TrainConfig(out=str(tmp_path / "a"), **base))
    original = T._checkpoint

    def stop_after_checkpoint(*args):
        original(*args)
        raise _Stop

    monkeypatch.setattr(T, "_checkpoint", stop_after_checkpoint)
    try:
        train(TrainConfig(out=str(tmp_path / "b"), **base))
        raise AssertionError("the run should have been interrupted")
    except _Stop:
        pass
    monkeypatch.setattr(T, "_checkpoint", original)
    assert (tmp_path / "b" / "checkpoint.safetensors").exists()
    train(TrainConfig(out=str(tmp_path / "b"), **base))
    a, _ = load_model(tmp_path / "a")
    b, _ = load_model(tmp_path / "b")
    assert torch.equal(a.E, b.E) and torch.equal(a.b, b.b)  # fp32 on CPU is deterministic


def test_cli_flags_come_from_the_dataclass(capsys):
    import dataclasses

    import pytest

    from bagofdims.cli.app import parse
    from superposition.cli import COMMANDS

    argv = ["train", "--latent", "7", "--weight-decay", "0.5", "--no-relu"]
    name, cfg, _ = parse(COMMANDS, argv, "bows")
    assert name == "train" and type(cfg) is TrainConfig
    assert (cfg.latent, cfg.weight_decay, cfg.relu) == (7, 0.5, False)
    with pytest.raises(SystemExit):
        parse(COMMANDS, ["train", "--help"], "bows")
    text = capsys.readouterr().out
    assert all(f"--{f.name.replace('_', '-')}" in text for f in dataclasses.fields(TrainConfig))
