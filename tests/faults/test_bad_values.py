"""Bad values given to public functions end in the project's own error, raised from its code.

One table, one row per (call, bad value): each must raise a ``BagOfDimsError`` (also the matching
built-in) whose message is one or two sentences, and leave no hook on the model.
"""

import pytest
import torch

import bagofdims as bd
import planted
import tiny
from bagofdims import models, readers, stats
from bagofdims.errors import BagOfDimsError
from bagofdims.features.discovery import DiscoveryConfig, discover, discover_unsupervised
from bagofdims.features.feature import Feature
from bagofdims.signs import bits
from bagofdims.signs.hamming import HammingIndex, hamming_topk
from bagofdims.steering.interventions import sign_flip

M = tiny.make("llama")
TOK = tiny.tokenizer()
CACHE, _, _ = planted.make_cache()
F = Feature("f", "resid.1", [0, 1, 2], [1, -1, 1])
KEYS = bits.pack_signs(torch.randn(50, 16))


def build(**kw):
    args = dict(sites=["resid.1"], progress=False, tokens=list(range(8)))
    return bd.SignCache.build(M, TOK, **{**args, **kw})


CASES = {
    "build batch_size 0": lambda: build(batch_size=0),
    "build batch_size -4": lambda: build(batch_size=-4),
    "build batch_size 1.5": lambda: build(batch_size=1.5),
    "build float tokens": lambda: build(tokens=[1.5, 2.0]),
    "build tokens out of vocab": lambda: build(tokens=[100000]),
    "build negative tokens": lambda: build(tokens=[-5]),
    "build empty tokens": lambda: build(tokens=[]),
    "build site [5]": lambda: build(sites=[5]),
    "build unknown site": lambda: build(sites=["resid.42"]),
    "build bos_token unknown": lambda: build(bos_token="<nope>"),
    "capture site None": lambda: bd.Capture(M, [None]),
    "capture position 1.5": lambda: bd.Capture(M, ["resid.1"], position=1.5),
    "capture dtype bogus": lambda: bd.Capture(M, ["resid.1"], dtype="float17"),
    "capture missing value": lambda: bd.Capture(M, ["resid.1"])["resid.1"],
    "capture unrequested site": lambda: bd.Capture(M, ["resid.1"])["resid.2"],
    "flip strength nan": lambda: sign_flip(M, F, strength=float("nan")),
    "flip strength inf": lambda: sign_flip(M, F, strength=float("inf")),
    "flip strength -1": lambda: sign_flip(M, F, strength=-1),
    "flip mode bogus": lambda: sign_flip(M, F, mode="sideways"),
    "flip positions bogus": lambda: sign_flip(M, F, positions="first"),
    "flip control bogus": lambda: sign_flip(M, F, control="maybe"),
    "flip no features": lambda: sign_flip(M, []),
    "feature float dims": lambda: Feature("f", "resid.1", [0.5, 1], [1, 1]),
    "feature sign 2": lambda: Feature("f", "resid.1", [0, 1], [1, 2]),
    "feature duplicate dims": lambda: Feature("f", "resid.1", [1, 1], [1, 1]),
    "feature signs length": lambda: Feature("f", "resid.1", [0, 1], [1]),
    "cache signs unknown site": lambda: CACHE.signs("resid.9"),
    "cache rows float": lambda: CACHE.rows([1.5]),
    "cache rows out of vocab": lambda: CACHE.rows([10**6]),
    "discover anchors string": lambda: discover(CACHE, "red", "resid.0", tokenizer=TOK),
    "discover one anchor": lambda: discover(CACHE, [100], "resid.0"),
    "discover float anchors": lambda: discover(CACHE, [100.0, 101.5], "resid.0"),
    "discover words without tokenizer": lambda: discover(CACHE, ["w1", "w2", "w3"], "resid.0"),
    "discover unknown site": lambda: discover(CACHE, list(range(100, 120)), "resid.7"),
    "discovery method bogus": lambda: DiscoveryConfig(method="magic"),
    "discovery k 0": lambda: DiscoveryConfig(k=0),
    "unsupervised seeds 0": lambda: discover_unsupervised(CACHE, "resid.0", n_seeds=0),
    "catalog build without tokenizer": lambda: bd.Catalog.build(CACHE, categories=planted.categories()),
    "catalog unknown category set": lambda: bd.Catalog.build(CACHE, categories="nope", tokenizer=TOK),
    "hamming k float": lambda: HammingIndex(KEYS, 16).search(KEYS[:2], 2.5),
    "hamming k too large": lambda: hamming_topk(KEYS[:2], KEYS, 16, 51),
    "hamming width wrong": lambda: HammingIndex(KEYS, 24),
    "readers nan states": lambda: readers.score_features(torch.full((2, 16), float("nan")),
                                                         [Feature("f", "x", [0], [1])]),
    "stats auc non-binary labels": lambda: stats.auc(torch.rand(5, 1), torch.rand(5, 1)),
    "stats auc shape mismatch": lambda: stats.auc(torch.rand(5, 2), torch.ones(4, 2, dtype=torch.bool)),
    "load_model dtype bogus": lambda: models.load_model("smollm2", dtype="float17"),
    "load_model missing dir": lambda: models.load_model("/no/such/model/dir"),
    "load_model unknown hub id offline": lambda: models.load_model("no-such-org/no-such-model"),
}
if not torch.cuda.is_available():
    CASES["load_model cuda without cuda"] = lambda: models.load_model("smollm2", device="cuda")


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_value_is_our_clear_error(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BagOfDimsError) as info:
        CASES[name]()
    msg = str(info.value)
    assert msg and len(msg) < 600 and "\n" not in msg.strip(), msg
    assert bd.hook_count(M) == 0


def test_the_table_is_large():
    assert len(CASES) >= 47
