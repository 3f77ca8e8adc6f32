"""The reference loop's form and the trainer's step follow the same loss from the same start."""
import numpy as np
import scipy.sparse as sp
import torch

from superposition.data import rows_to_batch
from superposition.model import BowsModel
from superposition.reference import ReferenceLoop, TrainerLoop


def _batches(V=40, n=64, count=6, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix((rng.random((n * count, V)) < 0.15).astype(np.float32))
    return [rows_to_batch(X, np.arange(k * n, (k + 1) * n)) for k in range(count)]


def test_reference_form_matches_trainer_step_in_loss_and_weights():
    batches = _batches()
    init = BowsModel(40, 6, seed=0)
    ref, ours = ReferenceLoop(init, 1e-2, 1.0, 20), TrainerLoop(init, 1e-2, 1.0, 20, torch.float32)
    lr, lo = [], []
    for s in range(20):
        lr.append(ref.step(batches[s % 6]))
        lo.append(ours.step(batches[s % 6]))
    assert np.allclose(lr, lo, rtol=1e-4)
    assert lr[-1] < 0.9 * lr[0]                      # it trained: the comparison is not of a frozen model
    assert torch.allclose(ref.model.W, ours.model.W, atol=1e-4)
    assert abs(ref.opt.param_groups[0]["lr"] - ours.opt.param_groups[0]["lr"]) < 1e-9   # same schedule


def test_reference_form_differs_when_settings_differ():
    batches = _batches()
    init = BowsModel(40, 6, seed=0)
    ref, ours = ReferenceLoop(init, 1e-2, 1.0, 20), TrainerLoop(init, 3e-2, 1.0, 20, torch.float32)
    lr = [ref.step(batches[s % 6]) for s in range(10)]
    lo = [ours.step(batches[s % 6]) for s in range(10)]
    assert not np.allclose(lr[1:], lo[1:], rtol=1e-3)   # the agreement above is not automatic
