"""Models larger than one device: a tiny Llama offloaded to disk through accelerate (device_map,
max_memory) captures, caches, reads, flips and fingerprints exactly as when loaded whole."""

import gc
import os

import pytest
import torch
from accelerate.hooks import AlignDevicesHook, remove_hook_from_submodules

import bagofdims.models as models
import tiny
from bagofdims import Capture, active_hooks
from bagofdims.devices import execution_device, input_device, is_offloaded, real_tensor
from bagofdims.errors import InvalidArgument, InvalidType
from bagofdims.features.feature import Feature
from bagofdims.models import fingerprint_info, load_model, weight_fingerprint
from bagofdims.readers import sign_lm_head, unembedding_signs
from bagofdims.signs.cache import SignCache
from bagofdims.steering.interventions import sign_flip
from bagofdims.steering.tracing import down_proj

# layers 1-2, the final norm and the LM head on disk; the embeddings and layer 0 in memory
SPLIT = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
         "model.layers.2": "disk", "model.norm": "disk", "model.rotary_emb": "cpu",
         "lm_head": "disk"}
# the embeddings on disk too: the first parameter says "meta", the inputs still go to the CPU
EMBED_ON_DISK = dict(SPLIT, **{"model.embed_tokens": "disk", "model.layers.2": "cpu"})
SITES = ["embed", "k.*", "neurons.*", "mlp.*", "resid.*", "final"]


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BAGOFDIMS_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny.make("llama").save_pretrained(path)
    tiny.tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def whole(llama_dir):
    return load_model(llama_dir, device="cpu")


@pytest.fixture(scope="module", params=["max_memory", "split", "embed_on_disk"])
def offloaded(request, llama_dir, whole, home):
    if request.param == "max_memory":  # accelerate plans: ~85% of the weights fit in "memory"
        size = sum(t.numel() * t.element_size() for t in whole[0].state_dict().values())
        return load_model(llama_dir, device_map="auto", max_memory={"cpu": int(size * 0.85)})
    return load_model(llama_dir, device_map=SPLIT if request.param == "split" else EMBED_ON_DISK)


def _on_disk(model) -> list[str]:
    return [n for n, p in model.named_parameters() if p.device.type == "meta"]


def test_offload_really_happens(offloaded, home):
    model, _ = offloaded
    assert "disk" in set(model.hf_device_map.values()) and "cpu" in set(model.hf_device_map.values())
    meta = _on_disk(model)
    assert meta and len(meta) < len(list(model.parameters()))  # some weights on disk, some not
    hooks = [m._hf_hook for m in model.modules() if isinstance(getattr(m, "_hf_hook", None),
                                                               AlignDevicesHook)]
    assert any(h.offload for h in hooks) and is_offloaded(model)
    assert input_device(model) == torch.device("cpu")
    assert execution_device(model.lm_head) == torch.device("cpu")  # computes on CPU, stored on disk
    # the safetensors checkpoint is read in place: the folder made for offload was not needed
    assert not any((home / "offload").iterdir())


def test_forward_and_capture_equal_whole_model(whole, offloaded):
    inp = tiny.inputs("llama", seq=6)
    with torch.no_grad():
        with Capture(whole[0], SITES) as a:
            ref = whole[0](**inp).logits
        with Capture(offloaded[0], SITES) as b:
            out = offloaded[0](**inp).logits
            # accelerate's hooks and ours side by side while the capture is on
            assert active_hooks(offloaded[0]) and hasattr(offloaded[0].lm_head, "_hf_hook")
    assert torch.equal(ref, out)
    assert set(a.keys()) == set(b.keys()) and len(a.keys()) == 3 * 4 + 2
    for site in a.keys():
        assert b[site].device == torch.device("cpu")
        assert torch.equal(a[site], b[site]), site
    assert active_hooks(offloaded[0]) == [] and hasattr(offloaded[0].lm_head, "_hf_hook")


def test_early_stop_leaves_offloaded_weights_on_disk(whole, offloaded):
    model = offloaded[0]
    before = _on_disk(model)
    inp = tiny.inputs("llama")
    for site in ("resid.1", "neurons.2", "mlp.2"):  # an output hook, an input hook, a parent
        with torch.no_grad(), Capture(model, site, stop=True) as cap:
            assert cap.run(**inp) is None
        with torch.no_grad(), Capture(whole[0], site, stop=True) as ref:
            ref.run(**inp)
        assert torch.equal(cap[site], ref[site])
        assert _on_disk(model) == before  # nothing stayed loaded in memory
    assert active_hooks(model) == []


def test_sign_cache_is_byte_identical(whole, offloaded, tmp_path):
    kwargs = dict(sites=("resid.*", "neurons.2", "final"), batch_size=16, chunk_size=32,
                  magnitudes=True, progress=False)
    a = SignCache.build(*whole, **kwargs)
    b = SignCache.build(*offloaded, **kwargs)
    assert a.sites == b.sites and len(a) == len(b) == tiny.VOCAB
    for site in a.sites:
        assert a.packed(site).numpy().tobytes() == b.packed(site).numpy().tobytes(), site
        assert a.magnitudes(site).numpy().tobytes() == b.magnitudes(site).numpy().tobytes(), site
    assert a.meta.weights == b.meta.weights and a.meta.weights_hashed == b.meta.weights_hashed
    a.save(tmp_path / "a")
    b.save(tmp_path / "b")
    for name in ("signs.safetensors", "magnitudes.safetensors"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # either model is accepted by the other's cache: same weights
    SignCache.load(tmp_path / "b", model=whole[0], tokenizer=whole[1])
    SignCache.load(tmp_path / "a", model=offloaded[0], tokenizer=offloaded[1])
    assert active_hooks(offloaded[0]) == []


def test_sign_flip_changes_logits_identically(whole, offloaded):
    inp = tiny.inputs("llama", seq=6)
    feats = [Feature("a", "resid.1", list(range(0, 32, 2)), [1, -1] * 8),
             Feature("b", "neurons.2", list(range(0, 48, 3)), [-1, 1] * 8)]  # an input site
    out = {}
    for name, (model, _) in (("whole", whole), ("offloaded", offloaded)):
        with torch.no_grad():
            plain = model(**inp).logits
            with sign_flip(model, feats, mode="set", strength=2.0, positions="last") as flip:
                flipped = model(**inp).logits
            gen = dict(max_new_tokens=4, do_sample=False, pad_token_id=2)
            with sign_flip(model, feats, mode="away"):
                tokens = model.generate(**inp, **gen)
        assert not torch.equal(plain, flipped)
        assert flip.calls == {"resid.1": 1, "neurons.2": 1} and all(flip.touched.values())
        assert active_hooks(model) == []
        out[name] = plain, flipped, tokens, flip.touched
    assert out["whole"][3] == out["offloaded"][3]
    for ref, got in zip(out["whole"][:3], out["offloaded"][:3]):
        assert torch.equal(ref, got)


def test_readers_and_weights_read_from_disk(whole, offloaded):
    a, b = whole[0], offloaded[0]
    assert b.lm_head.weight.device.type == "meta"
    assert torch.equal(real_tensor(b.lm_head), a.lm_head.weight)
    assert torch.equal(unembedding_signs(a), unembedding_signs(b))
    states = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    for mode in ("all", "top", "scaled"):
        with torch.no_grad():
            assert torch.equal(sign_lm_head(a, states, mode=mode), sign_lm_head(b, states, mode=mode))
    assert torch.equal(down_proj(a, 2), down_proj(b, 2))
    assert _on_disk(b)  # reading did not load the weights into the modules


def test_fingerprint_reads_offloaded_weights(whole, offloaded, monkeypatch):
    a, b = whole[0], offloaded[0]
    assert fingerprint_info(b) == fingerprint_info(a)
    # accelerate swaps the meta stand-ins at every forward: the cached fingerprint still holds
    calls = []
    real = models._digest
    monkeypatch.setattr(models, "_digest", lambda raw: calls.append(1) or real(raw))
    with torch.no_grad():
        b(**tiny.inputs("llama"))
    assert weight_fingerprint(b) == weight_fingerprint(a) and calls == []
    assert weight_fingerprint(b, refresh=True) == weight_fingerprint(a)
    assert len(calls) == len(b.state_dict())


def test_fingerprint_of_other_dtype_checkpoint_and_refusal(tmp_path, whole, home):
    src = tmp_path / "bf16"
    tiny.make("llama").to(torch.bfloat16).save_pretrained(src)
    tiny.tokenizer().save_pretrained(src)
    ref, _ = load_model(src, device="cpu")  # bf16 on disk, fp32 in memory
    model, _ = load_model(src, device_map=SPLIT)
    assert _on_disk(model) and fingerprint_info(model) == fingerprint_info(ref)
    with torch.no_grad():
        x = tiny.inputs("llama")
        assert torch.equal(model(**x).logits, ref(**x).logits)
    remove_hook_from_submodules(model)  # weights on meta that nothing can load any more
    with pytest.raises(InvalidArgument, match="meta device.*load it with real weights"):
        weight_fingerprint(model, refresh=True)
    with pytest.raises(InvalidArgument, match="meta device"):
        real_tensor(model.lm_head)


def test_offload_folder_holds_what_the_checkpoint_cannot_serve(tmp_path, home):
    # a .bin checkpoint cannot be read in place: accelerate writes the offloaded weights out
    src = tmp_path / "bin"
    src.mkdir()
    net = tiny.make("llama")
    net.config.save_pretrained(src)
    torch.save(net.state_dict(), src / "pytorch_model.bin")
    tiny.tokenizer().save_pretrained(src)
    model, _ = load_model(src, device_map=SPLIT)
    made = [p for p in (home / "offload").iterdir()]
    assert len(made) == 1 and any(made[0].iterdir())
    with torch.no_grad():
        x = tiny.inputs("llama")
        assert torch.equal(model(**x).logits, net(**x).logits)
    assert weight_fingerprint(model) == weight_fingerprint(net)
    del model
    gc.collect()
    assert not made[0].exists()  # the default folder goes with the model
    mine = tmp_path / "mine"
    model, _ = load_model(src, device_map=SPLIT, offload_folder=mine)
    assert any(mine.iterdir())
    del model
    gc.collect()
    assert any(mine.iterdir())  # a folder the caller gave is the caller's


def test_tied_weights_count_once(tmp_path, home):
    # GPT-2 ties its LM head to the embeddings; accelerate unties their meta stand-ins at the
    # first forward, and a .bin checkpoint is written out to the offload folder under each name
    src = tmp_path / "gpt2"
    src.mkdir()
    net = tiny.make("gpt2")
    net.config.save_pretrained(src)
    torch.save(net.state_dict(), src / "pytorch_model.bin")
    tiny.tokenizer().save_pretrained(src)
    split = {"transformer.wte": "disk", "transformer.wpe": "cpu", "transformer.h": "disk",
             "transformer.ln_f": "cpu", "lm_head": "disk"}
    model, _ = load_model(src, device_map=split)
    with torch.no_grad():
        x = tiny.inputs("gpt2")
        assert torch.equal(model(**x).logits, net(**x).logits)
    assert model.lm_head.weight is not model.transformer.wte.weight  # untied stand-ins
    assert model.lm_head.weight.device.type == "meta"
    assert fingerprint_info(model, refresh=True) == fingerprint_info(net)


def test_bad_placement_arguments_are_refused(llama_dir, home):
    before = set((home / "offload").iterdir()) if (home / "offload").exists() else set()
    with pytest.raises(InvalidArgument, match="only apply with a device map"):
        load_model(llama_dir, max_memory={"cpu": "1GB"})
    with pytest.raises(InvalidArgument, match="only apply with a device map"):
        load_model(llama_dir, offload_folder=os.fspath(home))
    with pytest.raises(InvalidArgument, match="pass only one of them"):
        load_model(llama_dir, device="cpu", device_map="auto")
    with pytest.raises(InvalidArgument, match=r"max_memory\['cpu'\]='lots' is not a size"):
        load_model(llama_dir, device_map="auto", max_memory={"cpu": "lots"})
    with pytest.raises(InvalidType, match="dict of device -> size"):
        load_model(llama_dir, device_map="auto", max_memory=["1GB"])
    with pytest.raises(InvalidType, match="device_map=3"):
        load_model(llama_dir, device_map=3)
    if not torch.cuda.is_available():
        with pytest.raises(InvalidArgument, match="CUDA is not available"):
            load_model(llama_dir, device_map="cuda:0")
    assert set((home / "offload").iterdir()) == before  # refused before anything was made
