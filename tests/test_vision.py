"""Vision encoders (ViT, DINOv2, CLIP vision) saved as directories: loaded with their image
processor, sites resolved, pooled into example caches, and steered over patches."""

import numpy as np
import pytest
import torch
import transformers as T

import bagofdims as bd
from bagofdims.processors import is_tokenizer, preprocessor_kind
from bagofdims.sites import all_sites, resolve

SIZE, PATCH, D, LAYERS = 16, 4, 32, 2
SITES = ["embed", "final", *(f"{k}.{i}" for k in ("resid", "attn", "mlp", "k", "v")
                             for i in range(LAYERS))]


def _vit():
    return (T.ViTModel(T.ViTConfig(image_size=SIZE, patch_size=PATCH, hidden_size=D,
                                   num_hidden_layers=LAYERS, num_attention_heads=4,
                                   intermediate_size=37)),
            T.ViTImageProcessor(size={"height": SIZE, "width": SIZE}))


def _dinov2():
    return (T.Dinov2Model(T.Dinov2Config(image_size=SIZE, patch_size=PATCH, hidden_size=D,
                                         num_hidden_layers=LAYERS, num_attention_heads=4,
                                         mlp_ratio=2)),
            T.BitImageProcessor(size={"shortest_edge": SIZE},
                                crop_size={"height": SIZE, "width": SIZE}))


def _clip():
    return (T.CLIPVisionModel(T.CLIPVisionConfig(image_size=SIZE, patch_size=PATCH, hidden_size=D,
                                                 num_hidden_layers=LAYERS, num_attention_heads=4,
                                                 intermediate_size=37)),
            T.CLIPImageProcessor(size={"shortest_edge": SIZE},
                                 crop_size={"height": SIZE, "width": SIZE}))


FAMILIES = {"vit": _vit, "dinov2": _dinov2, "clip": _clip}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def saved(request, tmp_path_factory):
    torch.manual_seed(0)
    model, proc = FAMILIES[request.param]()
    where = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(where)
    proc.save_pretrained(where)
    return request.param, where


def _images(n=24, seed=0):
    g = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        im = g.integers(0, 150, size=(SIZE, SIZE, 3))
        im[..., i % 2] += 90  # class = which colour channel is raised
        images.append(im.clip(0, 255).astype(np.uint8))
        labels.append(f"c{i % 2}")
    return images, labels


def test_load_model_returns_the_image_processor_of_a_vision_directory(saved):
    family, where = saved
    assert preprocessor_kind(where) == "image_processor"
    model, proc = bd.load_model(where, device="cpu")
    assert not is_tokenizer(proc) and isinstance(proc, T.BaseImageProcessor)
    assert not model.training and type(model).__name__.lower().startswith(family[:4])
    ref, _ = FAMILIES[family]()  # same class as saved; the processor gives the saved size
    assert type(model) is type(ref)
    pixels = proc(_images(2)[0], return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (2, 3, SIZE, SIZE)


def test_every_site_kind_resolves(saved):
    family, where = saved
    model, _ = bd.load_model(where, device="cpu")
    names = set(all_sites(model))
    assert set(SITES) <= names, sorted(set(SITES) - names)
    assert len(resolve(model, ["resid.*"])) == LAYERS


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_build_inputs_pools_each_family(saved, pool):
    family, where = saved
    model, proc = bd.load_model(where, device="cpu")
    images, labels = _images()
    cache = bd.SignCache.build_inputs(model, proc, images, sites=["resid.*", "final"], pool=pool,
                                      labels=labels, batch_size=8, progress=False)
    assert len(cache) == len(images) and cache.meta.pool == pool
    assert cache.meta.labels == labels and set(cache.meta.sites) == {"resid.0", "resid.1", "final"}
    # parity with HF: the last block's output, pooled by the rule, gives the cached signs
    with torch.no_grad():
        out = model(**proc(images, return_tensors="pt"), output_hidden_states=True)
    last = out.hidden_states[-1]
    want = last[:, 0] if pool == "cls" else last.mean(1)
    got = cache.signs("resid.1") > 0  # ±1
    assert torch.equal(got, want > 0)


def test_pools_differ_and_final_is_clip_cls_only(saved):
    family, where = saved
    model, proc = bd.load_model(where, device="cpu")
    images, labels = _images()
    caches = {p: bd.SignCache.build_inputs(model, proc, images, sites=["final"], pool=p,
                                           labels=labels, batch_size=8, progress=False)
              for p in ("cls", "mean")}
    same = torch.equal(caches["cls"].signs("final"), caches["mean"].signs("final"))
    # CLIP's final norm reads the CLS state alone, so both pools see one position there
    assert same == (family == "clip")


def test_sign_flip_over_patches_changes_the_output(saved):
    family, where = saved
    model, proc = bd.load_model(where, device="cpu")
    images, labels = _images()
    cache = bd.SignCache.build_inputs(model, proc, images, sites=["resid.0"], pool="mean",
                                      labels=labels, batch_size=8, progress=False)
    cat = bd.Catalog.build(cache, sites=["resid.0"], n_min_held_out=4, evidence=None,
                           progress=False)
    inputs = proc(images[:4], return_tensors="pt")
    with torch.no_grad():
        base = model(**inputs).last_hidden_state
        n_pos = base.shape[1]
        patches = torch.zeros(4, n_pos, dtype=torch.bool)
        patches[:, 1:] = True  # every patch, the CLS left alone
        with bd.sign_flip(model, cat["c0"], mode="away", positions=patches):
            flipped = model(**inputs).last_hidden_state
        again = model(**inputs).last_hidden_state
    assert not torch.allclose(base, flipped, atol=1e-4)
    assert torch.equal(base, again)  # the flip ends with the block
