import pytest
import torch

import bagofdims as bd

import tiny


def test_capture_many_sites_one_pass_and_no_hooks_left():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    assert bd.hook_count(model) == 0
    with bd.Capture(model, ["resid.*", "k.1", "neurons.2"]) as cap:
        assert bd.hook_count(model) > 0
        assert any("resid.1" in owner for _, owner in bd.active_hooks(model))
        with torch.no_grad():
            model(**x)
    assert bd.hook_count(model) == 0
    assert cap["k.1"].shape == (2, 5, 16)
    assert cap["neurons.2"].shape == (2, 5, 48)


def test_hooks_removed_after_exception_and_model_unchanged():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    with torch.no_grad():
        before = model(**x).logits
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with bd.Capture(model, ["resid.*", "final"]):
            with torch.no_grad():
                model(**x)
            raise RuntimeError("boom")
    assert bd.hook_count(model) == 0
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, before, atol=0, rtol=0)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])


def test_early_stop_skips_later_layers():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    calls = []
    handle = model.model.layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad(), bd.Capture(model, ["resid.0", "k.1"], stop=True) as cap:
            out = cap.run(**x)
        assert out is None and calls == []
        with torch.no_grad(), bd.Capture(model, ["resid.0"], stop=False) as cap:
            model(**x)
        assert calls == [1]
        # the with statement itself also swallows the early stop
        with torch.no_grad(), bd.Capture(model, ["resid.0"], stop=True) as cap:
            model(**x)
        assert cap["resid.0"].shape == (2, 5, 32)
    finally:
        handle.remove()


def test_early_stop_repeats_over_many_passes():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    with torch.no_grad():
        ref = model(**x, output_hidden_states=True).hidden_states
        with bd.Capture(model, ["resid.1"], stop=True) as cap:
            for _ in range(3):
                cap.run(**x)
                torch.testing.assert_close(cap["resid.1"], ref[2])


def test_position_dtype_and_device_options():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    with torch.no_grad(), bd.Capture(model, ["resid.1"], to="cpu", dtype=torch.float16,
                                     position=-1) as cap:
        ref = model(**x, output_hidden_states=True).hidden_states
    assert cap["resid.1"].dtype == torch.float16 and cap["resid.1"].shape == (2, 32)
    torch.testing.assert_close(cap["resid.1"].float(), ref[2][:, -1], atol=2e-3, rtol=2e-3)


def test_keep_all_records_every_decode_step():
    model = tiny.make("llama")
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad(), bd.Capture(model, ["resid.1"], keep_all=True) as cap:
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, min_new_tokens=4,
                       do_sample=False, pad_token_id=2)
    steps = cap.history("resid.1")
    assert len(steps) == 4  # prefill + 3 decode steps (the 4th token needs no forward)
    assert steps[0].shape[1] == 3 and all(s.shape[1] == 1 for s in steps[1:])


def test_errors_are_clear():
    model = tiny.make("llama")
    cap = bd.Capture(model, ["resid.1"])
    with pytest.raises(KeyError, match="not been computed"):
        cap["resid.1"]
    with pytest.raises(KeyError, match="not requested"):
        cap["resid.0"]
    with cap, pytest.raises(RuntimeError, match="already active"):
        cap.__enter__()
    assert bd.hook_count(model) == 0
