import pytest
import torch

import bagofdims as bd
from bagofdims.sites import describe

import tiny

KINDS = {"embed", "resid", "attn", "mlp", "k", "v", "neurons"}


@pytest.mark.parametrize("family", list(tiny.FAMILIES))
def test_every_family_resolves_all_site_kinds(family):
    model = tiny.make(family)
    sites = bd.all_sites(model)
    kinds = {s.kind for s in sites.values()}
    assert KINDS <= kinds, f"{family} misses {KINDS - kinds}"
    assert len([s for s in sites.values() if s.kind == "resid"]) == tiny.LAYERS
    # BERT has no norm after its last block; every other family has a final norm.
    assert ("final" in sites) == (family != "bert")


@pytest.mark.parametrize("family", list(tiny.FAMILIES))
def test_parity_with_output_hidden_states(family):
    model = tiny.make(family)
    x = tiny.inputs(family)
    with torch.no_grad():
        out = model(**x, output_hidden_states=True)
        ref = out.hidden_states
        with bd.Capture(model, ["embed", "resid.*", "final"] if family != "bert"
                        else ["embed", "resid.*"]) as cap:
            model(**x)
    torch.testing.assert_close(cap["embed"], ref[0], atol=1e-5, rtol=0)
    for layer in range(tiny.LAYERS - 1):
        torch.testing.assert_close(cap[f"resid.{layer}"], ref[layer + 1], atol=1e-5, rtol=0)
    last = cap[f"resid.{tiny.LAYERS - 1}"]
    if family == "bert":
        torch.testing.assert_close(last, ref[-1], atol=1e-5, rtol=0)
        return
    # Decoders and Whisper report the post-norm state as their last hidden state; ViT reports the
    # last block output and applies its final norm afterwards (last_hidden_state).
    if family == "vit":
        torch.testing.assert_close(last, ref[-1], atol=1e-5, rtol=0)
        torch.testing.assert_close(cap["final"], out.last_hidden_state, atol=1e-5, rtol=0)
    else:
        torch.testing.assert_close(cap["final"], ref[-1], atol=1e-5, rtol=0)
    norm = model.get_submodule(bd.all_sites(model)["final"].module_path)
    with torch.no_grad():
        torch.testing.assert_close(norm(last), cap["final"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3", "gpt2", "bert"])
def test_k_and_v_are_the_projections(family):
    """k.L / v.L are the key / value projections (after the per-head k-norm where present)."""
    model = tiny.make(family)
    x = tiny.inputs(family)
    sites = bd.all_sites(model)
    with torch.no_grad(), bd.Capture(model, ["k.1", "v.1", "resid.0"]) as cap:
        model(**x)
    block = bd.sites.find_blocks(model)[1][1]
    if family == "gpt2":
        with torch.no_grad():
            qkv = block.attn.c_attn(block.ln_1(cap["resid.0"]))
        d = qkv.shape[-1] // 3
        torch.testing.assert_close(cap["k.1"], qkv[..., d:2 * d])
        torch.testing.assert_close(cap["v.1"], qkv[..., 2 * d:])
        return
    if family == "bert":
        with torch.no_grad():
            torch.testing.assert_close(cap["k.1"], block.attention.self.key(cap["resid.0"]))
        return
    with torch.no_grad():
        h = block.input_layernorm(cap["resid.0"])
        k = block.self_attn.k_proj(h)
        if hasattr(block.self_attn, "k_norm"):
            assert sites["k.1"].module_path.endswith("k_norm")
            k = block.self_attn.k_norm(k.view(*k.shape[:-1], -1, block.self_attn.head_dim)).flatten(-2)
        torch.testing.assert_close(cap["k.1"], k, atol=1e-5, rtol=0)
        torch.testing.assert_close(cap["v.1"], block.self_attn.v_proj(h), atol=1e-5, rtol=0)


def test_neurons_feed_the_down_projection():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    with torch.no_grad(), bd.Capture(model, ["neurons.2", "mlp.2"]) as cap:
        model(**x)
    block = model.model.layers[2]
    assert cap["neurons.2"].shape[-1] == model.config.intermediate_size
    torch.testing.assert_close(block.mlp.down_proj(cap["neurons.2"]), cap["mlp.2"])


def test_gemma_attn_site_is_the_post_attention_norm():
    model = tiny.make("gemma3")
    assert bd.all_sites(model)["attn.0"].module_path.endswith("post_attention_layernorm")
    assert bd.all_sites(model)["mlp.0"].module_path.endswith("post_feedforward_layernorm")
    # In Llama blocks post_attention_layernorm is the MLP's input norm, not the attention output.
    assert bd.all_sites(tiny.make("llama"))["attn.0"].module_path.endswith("self_attn")


def test_globs_select_in_forward_order():
    model = tiny.make("llama")
    names = [s.name for s in bd.resolve(model, ["final", "resid.*", "k.1"])]
    assert names == ["resid.0", "k.1", "resid.1", "resid.2", "final"]
    assert [s.name for s in bd.resolve(model, "resid.?")] == ["resid.0", "resid.1", "resid.2"]


def test_unknown_site_lists_valid_ones():
    model = tiny.make("llama")
    with pytest.raises(bd.UnknownSite) as err:
        bd.resolve(model, ["resid.7"])
    msg = str(err.value)
    assert "resid.7" in msg and "resid.0..2" in msg and "final" in msg
    with pytest.raises(bd.UnknownSite):
        bd.resolve(model, [])
    with pytest.raises(bd.UnknownSite):
        bd.resolve(model, "bogus.*")


def test_describe_compacts_ranges():
    assert describe(["embed", "resid.0", "resid.1", "resid.2", "final"]) == "embed, resid.0..2, final"
