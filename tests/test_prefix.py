import pytest
import torch

import tiny
from bagofdims.capture import Capture
from bagofdims.prefix import SingleTokenInputs

SITES = ["resid.0", "resid.2"]


def _two_token_states(model, ids, bos):
    x = torch.stack([torch.full_like(ids, bos), ids], 1)
    with torch.inference_mode(), Capture(model, SITES, position=-1) as cap:
        model(input_ids=x, attention_mask=torch.ones_like(x))
    return {s: cap[s].clone() for s in SITES}


@pytest.mark.parametrize("family,cached", [
    ("llama", True), ("qwen2", True), ("qwen3", True), ("gemma3", True), ("mistral", True),
    ("gpt2", True), ("bert", False)])
def test_bos_prefix_matches_the_two_token_input(family, cached):
    model = tiny.make(family)
    ids = torch.tensor([5, 9, 40, 77, 3])
    inputs = SingleTokenInputs(model, bos_id=1)
    assert inputs.cached is cached  # decoders reuse the BOS key/values, encoders cannot
    want = _two_token_states(model, ids, 1)
    for rows in (slice(0, 2), slice(2, 5)):  # the prefix is reused, unchanged, across batches
        with torch.inference_mode(), Capture(model, SITES, stop=True, position=-1) as cap:
            cap.run(**inputs(ids[rows]))
            for s in SITES:
                torch.testing.assert_close(cap[s], want[s][rows], atol=1e-5, rtol=1e-4)


def test_without_bos_each_token_is_alone():
    model = tiny.make("llama")
    ids = torch.tensor([5, 9])
    kw = SingleTokenInputs(model, bos_id=None)(ids)
    assert kw["input_ids"].shape == (2, 1) and "cache" not in kw and "past_key_values" not in kw
    assert kw.get("use_cache") is False
