"""The one hook lifecycle: removal, listing, thread isolation, compiled models, bad arguments."""

import threading

import pytest
import torch

import bagofdims as bd
import tiny
from bagofdims.errors import BagOfDimsError, HookError, InvalidArgument, InvalidType, OutOfRange
from bagofdims.features.feature import Feature
from bagofdims.hooks import HookSet, active_objects
from bagofdims.steering.interventions import active_interventions, sign_flip


def _feature(site="resid.1", dims=(0, 3, 5), signs=(1, -1, 1)):
    return Feature(name="f", site=site, dims=list(dims), signs=list(signs))


def test_capture_and_flip_share_one_registry_and_leave_nothing():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    with bd.Capture(model, ["resid.2"]) as cap, sign_flip(model, _feature()) as flip:
        owners = [o for _, o in bd.active_hooks(model)]
        assert any(o.startswith("capture:") for o in owners)
        assert any(o.startswith("sign_flip:") for o in owners)
        assert active_objects(model) == [cap, flip]
        assert active_interventions(model) == [flip]
        model(**x)
    assert bd.hook_count(model) == 0 and active_objects(model) == []


def test_hooks_removed_when_block_raises():
    model = tiny.make("llama")
    with pytest.raises(ZeroDivisionError):
        with bd.Capture(model, ["resid.*"]), sign_flip(model, _feature()):
            1 / 0
    assert bd.hook_count(model) == 0 and active_objects(model) == []


def test_failed_attach_leaves_no_hook():
    model = tiny.make("llama")
    hooks = HookSet(model, "test")
    hooks.add("model.layers.0", lambda m, a, o: None)
    hooks.add("model.no_such_module", lambda m, a, o: None)
    with pytest.raises(AttributeError):
        hooks.attach()
    assert bd.hook_count(model) == 0


def test_same_object_cannot_be_entered_twice():
    model = tiny.make("llama")
    cap = bd.Capture(model, ["resid.1"])
    with cap:
        with pytest.raises(HookError, match="already active"):
            cap.__enter__()
    flip = sign_flip(model, _feature())
    with flip:
        with pytest.raises(HookError, match="already active"):
            flip.__enter__()
    assert bd.hook_count(model) == 0


@pytest.mark.parametrize("compile_in_place", [False, True])
def test_compiled_models_are_refused_not_silently_ignored(compile_in_place):
    model = tiny.make("llama")
    if compile_in_place:
        model.compile()  # lazy: nothing compiles until called, and we refuse before that
        target = model
    else:
        target = torch.compile(model)
    with pytest.raises(HookError, match="compile"):
        with bd.Capture(target, ["resid.1"]):
            pass
    with pytest.raises(HookError, match="compile"):
        with sign_flip(target, _feature()):
            pass
    assert bd.hook_count(model) == 0


def test_threads_each_capture_their_own_forward_passes():
    model = tiny.make("llama")
    ids = [torch.randint(3, tiny.VOCAB, (1, 6), generator=torch.Generator().manual_seed(i))
           for i in range(6)]
    with torch.no_grad():
        expected = [model(input_ids=x, output_hidden_states=True).hidden_states[2] for x in ids]
    barrier = threading.Barrier(len(ids))
    errors, got = [], {}

    def work(i):
        try:
            with torch.no_grad(), bd.Capture(model, ["resid.1"]) as cap:
                barrier.wait()  # every capture attached before anyone runs
                for _ in range(5):
                    model(input_ids=ids[i])
                    got[i] = cap["resid.1"].clone()
                    assert torch.allclose(got[i], expected[i], atol=1e-5)
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ids))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(got) == len(ids)
    assert bd.hook_count(model) == 0


def test_flip_in_one_thread_does_not_touch_another_threads_pass():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    with torch.no_grad():
        clean = model(**x).logits
    inside, outside = threading.Event(), threading.Event()
    other = {}

    def bystander():
        inside.wait()
        with torch.no_grad():
            other["logits"] = model(**x).logits
        outside.set()

    t = threading.Thread(target=bystander)
    t.start()
    with torch.no_grad(), sign_flip(model, _feature(dims=range(16), signs=[1] * 16), mode="set",
                                    strength=3.0) as flip:
        flipped = model(**x).logits
        inside.set()
        outside.wait()
    t.join()
    assert flip.touched["resid.1"] > 0
    assert not torch.allclose(flipped, clean)
    assert torch.allclose(other["logits"], clean)


@pytest.mark.parametrize("sites, err", [([5], InvalidType), ([None], InvalidType),
                                        (["resid.99"], bd.UnknownSite)])
def test_capture_bad_sites(sites, err):
    with pytest.raises(err):
        bd.Capture(tiny.make("llama"), sites)


def test_capture_position_and_dtype_arguments():
    model = tiny.make("llama")
    with pytest.raises(InvalidType, match="position"):
        bd.Capture(model, ["resid.1"], position=1.5)
    with pytest.raises(InvalidArgument, match="dtype"):
        bd.Capture(model, ["resid.1"], dtype="float17")
    with torch.no_grad(), bd.Capture(model, ["resid.1"], dtype="float16", position=-1) as cap:
        model(**tiny.inputs("llama"))
    assert cap["resid.1"].dtype == torch.float16 and cap["resid.1"].dim() == 2


@pytest.mark.parametrize("strength", [float("nan"), float("inf"), -1.0, "2"])
def test_flip_refuses_non_finite_or_negative_strength(strength):
    with pytest.raises(BagOfDimsError, match="strength"):
        sign_flip(tiny.make("llama"), _feature(), strength=strength)


@pytest.mark.parametrize("positions", [7, -8, slice(9, 12)])
def test_flip_out_of_range_positions_are_an_error(positions):
    model = tiny.make("llama")
    x = {"input_ids": torch.tensor([[5, 6, 7, 8, 9, 10]])}
    with pytest.raises(OutOfRange, match="positions"):
        with torch.no_grad(), sign_flip(model, _feature(), positions=positions):
            model(**x)
    assert bd.hook_count(model) == 0


def test_flip_mask_of_wrong_shape_is_an_error_not_broadcast():
    model = tiny.make("llama")
    x = {"input_ids": torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])}
    with pytest.raises(InvalidArgument, match="shape"):
        with torch.no_grad(), sign_flip(model, _feature(), positions=torch.ones(1, 4, dtype=torch.bool)):
            model(**x)
    ok = torch.zeros(2, 4, dtype=torch.bool)
    ok[:, 1] = True
    with torch.no_grad(), sign_flip(model, _feature(), positions=ok) as flip:
        model(**x)
    assert flip.calls["resid.1"] == 1


def test_any_thread_lets_a_streaming_thread_be_flipped_and_captured():
    model = tiny.make("llama")
    x = tiny.inputs("llama")
    feat = _feature(dims=range(16), signs=[1] * 16)
    with torch.no_grad():
        clean = model(**x).logits
    out = {}

    def stream():  # e.g. generate() run by a TextIteratorStreamer's thread
        with torch.no_grad():
            out["logits"] = model(**x).logits

    for any_thread, changed in ((False, False), (True, True)):
        with sign_flip(model, feat, mode="set", strength=3.0, any_thread=any_thread), \
                bd.Capture(model, ["resid.1"], any_thread=any_thread) as cap:
            t = threading.Thread(target=stream)
            t.start()
            t.join()
        assert (not torch.allclose(out["logits"], clean)) == changed
        assert ("resid.1" in cap) == changed
    assert bd.hook_count(model) == 0
