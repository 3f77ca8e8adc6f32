"""Keys after the rotary embedding (E5 'after RoPE'): equal to what the model's own KV cache holds,
on every rotary family; a model without a rotary embedding is refused; no hook outlives the call."""

import pytest
import torch

import tiny
from bagofdims.errors import InvalidArgument
from bagofdims.steering.tracing import rotary_keys


@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3", "gemma3", "mistral"])
def test_rotary_keys_are_the_keys_attention_caches(family):
    model = tiny.make(family).eval()
    ids = torch.randint(5, tiny.VOCAB, (3, 7), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = rotary_keys(model, [1, 0], input_ids=ids)
        cached = model(input_ids=ids, use_cache=True).past_key_values
    assert sorted(got) == ["k.0", "k.1", "k_rot.0", "k_rot.1"]
    for L in (0, 1):
        want = cached.layers[L].keys.transpose(1, 2).flatten(-2)  # [b, s, heads * head_dim]
        assert got[f"k_rot.{L}"].shape == got[f"k.{L}"].shape == want.shape
        torch.testing.assert_close(got[f"k_rot.{L}"], want, rtol=1e-5, atol=1e-6)
        # position 0 is not rotated (cos 1, sin 0); later positions are
        torch.testing.assert_close(got[f"k_rot.{L}"][:, 0], got[f"k.{L}"][:, 0])
        assert not torch.allclose(got[f"k_rot.{L}"][:, 3:], got[f"k.{L}"][:, 3:])
    hooks = [m for m in model.modules() if m._forward_pre_hooks or m._forward_hooks]
    assert hooks == []


def test_a_model_without_rotary_keys_is_refused():
    model = tiny.make("gpt2").eval()
    with pytest.raises(InvalidArgument, match="no self_attn"):
        rotary_keys(model, [0], input_ids=torch.tensor([[5, 6]]))
    assert not any(m._forward_pre_hooks or m._forward_hooks for m in model.modules())
