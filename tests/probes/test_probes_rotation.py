"""The rotation control of compare_to_catalog: axis-aligned data vs rotation-invariant data."""

import numpy as np
import pytest
import torch

import tiny
from bagofdims import Catalog
from bagofdims.errors import InvalidArgument
from bagofdims.features.discovery import DiscoveryConfig
from bagofdims.models import tokenizer_fingerprint
from bagofdims.signs import bits
from bagofdims.signs.cache import TOKEN_IDS, SignCache
from bagofdims.signs.meta import CacheMeta
from probes import compare_to_catalog
from probes.alignment import rotated_basis

V, D, K = 2000, 48, 4  # vocabulary, width, prototype dims
MEMBERS = {f"c{c}": range(100 + 150 * c, 190 + 150 * c) for c in range(4)}


def _catalog(x: torch.Tensor):
    tok = tiny.tokenizer(vocab_size=V)
    meta = CacheMeta(model="rot", weights="rot-weights", tokenizer=tokenizer_fingerprint(tok),
                     vocab_size=V, full_vocab=True, n_tokens=V, sites={"resid.0": D}, bos=False,
                     bos_id=None, bos_token=None, bos_rule="off", dtype="float32", magnitudes=True,
                     batch_size=V, chunk_size=V, tokens_sha256="rot", created="now")
    signs = {"resid.0": bits.pack_signs(x).numpy(), TOKEN_IDS: np.arange(V, dtype=np.int64)}
    cache = SignCache(meta, signs, {"resid.0": x.abs().half().numpy()})
    cats = {name: [f"w{i}" for i in rows] for name, rows in MEMBERS.items()}
    cat = Catalog.build(cache, categories=cats, sites=["resid.0"], tokenizer=tok,
                        config=DiscoveryConfig(k=K), progress=False, evidence=None)
    return cache, cat


def _axis_aligned():
    """Each category is a sign pattern on K dims of its own: the signal lives on the axes."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(V, D, generator=g)
    for c, rows in enumerate(MEMBERS.values()):
        r, dims = torch.tensor(list(rows))[:, None], torch.arange(c * K, (c + 1) * K)[None, :]
        x[r, dims] = x[r, dims].abs() + 0.5
    return x


def _gaussian():
    """Isotropic Gaussian with each category shifted along a random direction: no basis is
    special, so a random rotation changes nothing in distribution."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(V, D, generator=g)
    for rows in MEMBERS.values():
        u = torch.randn(D, generator=g)
        x[list(rows)] += 2.0 * u / u.norm()
    return x


def _shares(x):
    cache, cat = _catalog(x)
    rep = compare_to_catalog(cache, cat, "resid.0", inputs=("states",), folds=3, l2=1e-2,
                             rotation_seed=0)
    std = torch.tensor([r["mass_on_dims"] for r in rep.rows])
    rot = torch.tensor([r["rot_mass_on_dims"] for r in rep.rows])
    return rep, std, rot


def test_axis_aligned_data_beats_the_rotated_control():
    rep, std, rot = _shares(_axis_aligned())
    chance = K / D
    assert (std > 0.4).all(), std  # the probe sits on the planted axes (chance K / D = 0.083)
    assert (std > 2 * rot).all(), (std, rot)  # well above the rotated basis
    assert (rot < 4 * chance).all(), rot
    for r in rep.rows:  # the rotated prototype still reads the category (the signal is there)
        assert r["rot_proto_auc"] > 0.75 and r["rot_logistic_auc"] > 0.95


def test_rotation_invariant_data_gives_equal_shares():
    _, std, rot = _shares(_gaussian())
    assert float(std.mean()) > 1.5 * K / D  # both above chance: the dims are chosen on signal
    assert float(rot.mean()) > 1.5 * K / D
    assert 0.75 < float(std.mean() / rot.mean()) < 1.33, (std, rot)


def test_rotated_basis_finds_the_same_prototype_as_discovery_without_rotation():
    x = _axis_aligned()
    anchors = [torch.tensor(list(rows)[:50]) for rows in MEMBERS.values()]
    rb = rotated_basis(x, anchors, DiscoveryConfig(k=K), seed=3)
    assert torch.allclose(rb.rotation @ rb.rotation.T, torch.eye(D), atol=1e-5)
    torch.testing.assert_close(rb.states, x @ rb.rotation)
    assert torch.equal(rb.packed, bits.pack_signs(rb.states))
    assert all(len(d) == K for d in rb.dims) and all(set(s.tolist()) <= {-1.0, 1.0}
                                                      for s in rb.signs)
    # the identity 'rotation' would recover the planted axes; a random one does not
    assert [set(d.tolist()) for d in rb.dims] != [set(range(c * K, (c + 1) * K)) for c in range(4)]


def test_rotated_basis_bad_inputs():
    x = _axis_aligned()
    with pytest.raises(InvalidArgument, match="finite float"):
        rotated_basis(bits.pack_signs(x), [torch.arange(5)])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(InvalidArgument, match="finite float"):
        rotated_basis(bad, [torch.arange(5)])
    with pytest.raises(InvalidArgument, match="anchor_rows is empty"):
        rotated_basis(x, [])
