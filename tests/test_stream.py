import json

import pytest
import torch

import bagofdims as bd
from bagofdims.stream import ActivationStore, write_activations

import tiny

TEXTS = [" ".join(f"w{(7 * i + j) % 90 + 3}" for j in range(3 + i % 5)) for i in range(13)]


@pytest.fixture(scope="module")
def llama():
    return tiny.make("llama"), tiny.tokenizer()


def _direct(model, tok, site):
    rows = []
    for text in TEXTS:
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad(), bd.Capture(model, [site]) as cap:
            model(ids)
        rows.append(cap[site][0])
    return torch.cat(rows)


def test_streamed_states_equal_direct_capture(llama, tmp_path):
    model, tok = llama
    out = write_activations(model, tok, TEXTS, ["resid.1", "k.2"], tmp_path / "acts", batch_size=4,
                            shard_tokens=16, dtype=torch.float32, progress=False)
    store = ActivationStore(out)
    assert store.sites == ["resid.1", "k.2"] and len(store.index["shards"]) > 2
    n_tokens = sum(len(t.split()) for t in TEXTS)
    assert store.n_tokens == n_tokens
    torch.testing.assert_close(store.load("resid.1"), _direct(model, tok, "resid.1"), atol=1e-5, rtol=0)
    docs = store.load("doc")
    assert docs.tolist() == sorted(docs.tolist()) and int(docs.max()) == len(TEXTS) - 1
    assert store.load("pos")[:3].tolist() == [0, 1, 2]
    assert bd.hook_count(model) == 0


def test_resume_after_interruption_gives_the_same_shards(llama, tmp_path):
    model, tok = llama
    kw = dict(batch_size=4, shard_tokens=16, dtype=torch.float32, progress=False)
    full = write_activations(model, tok, TEXTS, ["resid.0"], tmp_path / "full", **kw)
    part = write_activations(model, tok, TEXTS, ["resid.0"], tmp_path / "part", **kw)
    # simulate a kill after the first shard: drop the later shards from the index and disk
    index = json.loads((part / "index.json").read_text())
    for shard in index["shards"][1:]:
        (part / shard["file"]).unlink()
    index["shards"] = index["shards"][:1]
    (part / "index.json").write_text(json.dumps(index))
    write_activations(model, tok, TEXTS, ["resid.0"], part, **kw)
    for a, b in zip(sorted(full.glob("shard-*")), sorted(part.glob("shard-*"))):
        assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="other settings"):
        write_activations(model, tok, TEXTS, ["resid.1"], part, **kw)
    with pytest.raises(FileNotFoundError, match="write_activations"):
        ActivationStore(tmp_path / "nowhere")
