"""Sign caches over examples: texts (BERT), images (ViT), audio (Whisper encoder)."""

import json

import numpy as np
import pytest
import torch
import transformers as T

import bagofdims as bd
from bagofdims.errors import CacheError, InvalidArgument, OutOfRange, ResumeError
from bagofdims.signs import bits
from bagofdims.signs import checkpoint as checkpoint_mod
from bagofdims.signs.examples import processor_fingerprint
from bagofdims.signs.meta import CacheMeta
from bagofdims.signs.pooling import parse_pool, pool_states

import tiny

RULES = ["mean", "cls", "last", 1, -2, (1, 3), (None, -1)]


def manual_pool(h: torch.Tensor, valid: torch.Tensor, rule) -> torch.Tensor:
    """Pool one example's ``[positions, width]`` states by hand (positions among the valid)."""
    x = h[valid.bool()].float()
    if rule == "mean":
        return x.mean(0)
    if rule == "cls":
        return x[0]
    if rule == "last":
        return x[-1]
    if isinstance(rule, int):
        return x[rule]
    return x[slice(*rule)].mean(0)


def manual_packed(states: dict, mask: torch.Tensor, rule) -> dict:
    return {site: bits.pack_signs(torch.stack([manual_pool(h[i], mask[i], rule)
                                               for i in range(len(h))]))
            for site, h in states.items()}


@pytest.fixture(scope="module")
def bert():
    return tiny.make("bert"), tiny.tokenizer()


@pytest.fixture(scope="module")
def texts():
    g = np.random.default_rng(0)
    return [" ".join(f"w{i}" for i in g.integers(3, tiny.VOCAB, size=int(g.integers(3, 9))))
            for _ in range(14)]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = T.ViTModel(T.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=37)).eval()
    return model, T.ViTImageProcessor(size=16)


@pytest.fixture(scope="module")
def images():
    g = np.random.default_rng(1)
    return [g.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(10)]


@pytest.mark.parametrize("rule", RULES)
def test_text_pooled_signs_equal_a_manual_forward(bert, texts, rule):
    model, tok = bert
    cache = bd.SignCache.build_inputs(model, tok, texts, sites=["resid.*"], pool=rule,
                                      batch_size=len(texts), progress=False)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = model(**enc, output_hidden_states=True).hidden_states
    want = manual_packed({f"resid.{i}": hs[i + 1] for i in range(tiny.LAYERS)},
                         enc["attention_mask"], rule)
    assert cache.is_examples and cache.meta.pool == parse_pool(rule).name
    for site, packed in want.items():
        assert torch.equal(cache.packed(site), packed), site


def test_padding_does_not_leak_into_the_pool(bert, texts):
    """Batches of 3 (other padding) match each text forwarded alone, up to float rounding."""
    model, tok = bert
    cache = bd.SignCache.build_inputs(model, tok, texts, sites=["resid.2"], pool="mean",
                                      batch_size=3, progress=False, magnitudes=True)
    for i, text in enumerate(texts):
        with torch.no_grad():
            h = model(**tok([text], return_tensors="pt"), output_hidden_states=True).hidden_states[3]
        alone = h[0].mean(0)
        clear = alone.abs() > 1e-4
        got = cache.signs("resid.2", [i])[0]
        assert torch.equal((got[clear] > 0), (alone[clear] > 0))
        assert torch.allclose(cache.magnitudes("resid.2", [i])[0].float(), alone.abs(), atol=2e-3)


@pytest.mark.parametrize("rule", RULES)
def test_image_pooled_signs_equal_a_manual_forward(vit, images, rule):
    model, proc = vit
    cache = bd.SignCache.build_inputs(model, proc, images, sites=["resid.*", "final"], pool=rule,
                                      batch_size=len(images), progress=False)
    with torch.no_grad():
        out = model(**proc(images, return_tensors="pt"), output_hidden_states=True)
    states = {"resid.0": out.hidden_states[1], "resid.1": out.hidden_states[2],
              "final": out.last_hidden_state}
    want = manual_packed(states, torch.ones(out.last_hidden_state.shape[:2]), rule)
    assert cache.width("final") == 32 and len(cache) == len(images)
    for site, packed in want.items():
        assert torch.equal(cache.packed(site), packed), site


@pytest.fixture(scope="module")
def whisper():
    torch.manual_seed(0)
    cfg = T.WhisperConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=1,
                          encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
                          decoder_ffn_dim=48, num_mel_bins=8, max_source_positions=50,
                          max_target_positions=16, pad_token_id=2, bos_token_id=1, eos_token_id=2,
                          decoder_start_token_id=1)
    encoder = T.WhisperModel(cfg).encoder.eval()
    return encoder, T.WhisperFeatureExtractor(feature_size=8, chunk_length=1)  # 1 s = 100 frames


@pytest.mark.parametrize("rule", ["mean", "last", (2, 6)])
def test_audio_pooled_over_the_clip_not_its_padding(whisper, rule):
    model, fe = whisper
    g = np.random.default_rng(2)
    clips = [g.standard_normal(n).astype(np.float32) for n in (16000, 8000, 3000, 12345)]
    cache = bd.SignCache.build_inputs(model, fe, clips, sites=["resid.0", "final"], pool=rule,
                                      batch_size=4, progress=False,
                                      processor_kwargs={"sampling_rate": 16000})
    assert cache.meta.processor_kwargs == {"sampling_rate": 16000, "return_attention_mask": True}
    feats = fe(clips, sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
    with torch.no_grad():
        hs = model(feats["input_features"], output_hidden_states=True).hidden_states
    frames = feats["attention_mask"].sum(1)
    positions = (frames + 1) // 2  # the stride-2 convolution: a position per two frames
    assert positions.tolist() == [50, 25, 10, 39]
    valid = torch.arange(50)[None, :] < positions[:, None]
    # HF's last hidden state of the Whisper encoder is after its final layer norm
    want = manual_packed({"resid.0": hs[1], "final": hs[2]}, valid, rule)
    for site, packed in want.items():
        assert torch.equal(cache.packed(site), packed), site


def test_pool_positions_count_among_valid_ones_with_left_padding():
    value = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1) + 1
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])  # row 0 is left-padded
    assert pool_states(value, mask, parse_pool("cls"))[:, 0].tolist() == [3.0, 5.0]
    assert pool_states(value, mask, parse_pool("last"))[:, 0].tolist() == [4.0, 8.0]
    assert pool_states(value, mask, parse_pool("mean"))[:, 0].tolist() == [3.5, 6.5]
    assert pool_states(value, mask, parse_pool((1, None)))[:, 0].tolist() == [4.0, 7.0]
    with pytest.raises(OutOfRange, match="valid positions"):
        pool_states(value, mask, parse_pool(2))
    with pytest.raises(OutOfRange, match="selects no position"):
        pool_states(value, mask, parse_pool((2, 3)))
    frames = torch.tensor([[1, 1, 1, 1, 1, 0, 0, 0], [1] * 8])  # two frames a position
    assert pool_states(value, frames, parse_pool("last"))[:, 0].tolist() == [3.0, 8.0]
    with pytest.raises(InvalidArgument, match="attention mask has 7 positions"):
        pool_states(value, frames[:, :7], parse_pool("mean"))
    for name in ("mean", "cls", "last", "pos:-3", "range:2:", "range::-1", "range:1:4"):
        assert parse_pool(parse_pool(name).name) == parse_pool(name)
    for bad in ("max", 1.5, (1, 2, 3), True, "range:a:b"):
        with pytest.raises(InvalidArgument, match="pooling rule"):
            parse_pool(bad)


def test_save_load_roundtrip_keeps_labels_groups_and_pool(vit, images, tmp_path):
    model, proc = vit
    labels = ["cat", "dog", None, "cat", "dog", "cat", "dog", "cat", "dog", "cat"]
    groups = [f"g{i // 2}" for i in range(len(images))]
    cache = bd.SignCache.build_inputs(model, proc, images, sites=["resid.*"], pool=(1, None),
                                      labels=labels, groups=groups, batch_size=4,
                                      magnitudes=True, progress=False)
    cache.save(tmp_path / "c")
    back = bd.SignCache.load(tmp_path / "c", model=model)
    assert back.meta == cache.meta and back.is_examples and "examples=10" in repr(back)
    assert back.meta.labels == labels and back.meta.groups == groups
    assert back.meta.pool == "range:1:" and back.meta.vocab_size == 10 and back.meta.full_vocab
    assert back.meta.tokenizer == processor_fingerprint(proc) and not back.meta.bos
    assert back.token_ids.tolist() == list(range(10))
    for site in cache.sites:
        assert torch.equal(back.packed(site), cache.packed(site))
        assert torch.equal(back.magnitudes(site), cache.magnitudes(site))


def test_processor_fingerprint_follows_its_settings(vit, tmp_path):
    _, proc = vit
    proc.save_pretrained(tmp_path / "p")
    again = T.ViTImageProcessor.from_pretrained(tmp_path / "p")
    assert processor_fingerprint(again) == processor_fingerprint(proc)
    assert processor_fingerprint(T.ViTImageProcessor(size=32)) != processor_fingerprint(proc)
    tok = tiny.tokenizer()
    assert processor_fingerprint(tok) == bd.models.tokenizer_fingerprint(tok)


def test_a_dataset_column_gives_the_list_result(bert, texts):
    datasets = pytest.importorskip("datasets")
    model, tok = bert
    names = ["even", "odd"]
    ds = datasets.Dataset.from_dict(
        {"text": texts, "label": [i % 2 for i in range(len(texts))]},
        features=datasets.Features({"text": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=names)}))
    kw = dict(sites=["resid.1"], batch_size=5, progress=False)
    from_ds = bd.SignCache.build_inputs(model, tok, ds, column="text", labels="label", **kw)
    from_list = bd.SignCache.build_inputs(model, tok, texts, **kw)
    assert torch.equal(from_ds.packed("resid.1"), from_list.packed("resid.1"))
    assert from_ds.meta.example_sha256 == from_list.meta.example_sha256
    assert from_ds.meta.labels == [names[i % 2] for i in range(len(texts))]
    with pytest.raises(InvalidArgument, match="column="):
        bd.SignCache.build_inputs(model, tok, ds, **kw)


def _interrupted(monkeypatch, after: int):
    original = checkpoint_mod.Checkpoint.save
    saved = []

    def save_then_stop(self, i, part):
        original(self, i, part)
        saved.append(i)
        if len(saved) == after:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_mod.Checkpoint, "save", save_then_stop)
    return saved


def test_resume_after_an_interrupted_build_is_byte_identical(vit, images, tmp_path, monkeypatch):
    model, proc = vit
    kw = dict(sites=["resid.*", "final"], pool="mean", batch_size=2, chunk_size=4,
              magnitudes=True, labels=[str(i % 3) for i in range(len(images))], progress=False)
    bd.SignCache.build_inputs(model, proc, images, **kw).save(tmp_path / "ref")
    saved = _interrupted(monkeypatch, after=2)
    with pytest.raises(KeyboardInterrupt):
        bd.SignCache.build_inputs(model, proc, images, checkpoint=tmp_path / "ck", **kw)
    assert saved == [0, 1] and not (tmp_path / "run").exists()
    monkeypatch.undo()
    resumed = bd.SignCache.build_inputs(model, proc, images, checkpoint=tmp_path / "ck", **kw)
    resumed.save(tmp_path / "run")
    for name in ("signs.safetensors", "magnitudes.safetensors"):
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()
    ref = json.loads((tmp_path / "ref" / "meta.json").read_text())
    run = json.loads((tmp_path / "run" / "meta.json").read_text())
    differ = {k for k in ref if ref[k] != run[k]}
    assert differ <= {"created", "build_seconds", "meta_sha256"}
    assert not (tmp_path / "ck").exists()  # the checkpoint is cleaned after save


def test_a_resume_with_other_examples_or_pooling_is_refused(vit, images, tmp_path):
    model, proc = vit
    kw = dict(sites=["resid.0"], batch_size=5, chunk_size=5, progress=False,
              checkpoint=tmp_path / "ck")
    bd.SignCache.build_inputs(model, proc, images, pool="mean", **kw)
    with pytest.raises(ResumeError, match="example_sha256"):
        bd.SignCache.build_inputs(model, proc, images[::-1], pool="mean", **kw)
    with pytest.raises(ResumeError, match="pool"):
        bd.SignCache.build_inputs(model, proc, images, pool="cls", **kw)
    with pytest.raises(ResumeError, match="tokenizer"):
        bd.SignCache.build_inputs(model, T.ViTImageProcessor(size=16, do_normalize=False),
                                  images, pool="mean", **kw)


def _example_meta(**over) -> CacheMeta:
    base = dict(model="m", weights="w", tokenizer="t", vocab_size=3, full_vocab=True, n_tokens=3,
                sites={"resid.0": 8}, bos=False, bos_id=None, bos_token=None, bos_rule="off",
                dtype="float32", magnitudes=False, batch_size=1, chunk_size=1, tokens_sha256="x",
                inputs="examples", pool="mean", example_sha256="0" * 64,
                labels=["a", "b", None], groups=["g", "g", "h"])
    return CacheMeta(**{**base, **over})


def test_meta_validation_refuses_inconsistent_example_fields():
    _example_meta().validate()
    for over, match in [(dict(labels=["a", "b"]), "labels has 2 entries for 3"),
                        (dict(groups=["g", None, "h"]), "groups must be strings"),
                        (dict(pool=None), "pool name"),
                        (dict(example_sha256="abc"), "sha256"),
                        (dict(full_vocab=False), "vocab_size == n_tokens"),
                        (dict(inputs="pixels"), "inputs is 'pixels'"),
                        (dict(inputs="tokens"), "a token cache has example fields")]:
        with pytest.raises(CacheError, match=match):
            _example_meta(**over).validate()
    back = CacheMeta.from_json(_example_meta().to_json())
    assert back == _example_meta()


def test_bad_arguments_fail_clearly(vit, images):
    model, proc = vit
    with pytest.raises(InvalidArgument, match="labels has 3 entries for 10"):
        bd.SignCache.build_inputs(model, proc, images, labels=["a", "b", "c"], progress=False)
    with pytest.raises(InvalidArgument, match="empty"):
        bd.SignCache.build_inputs(model, proc, [], progress=False)
    with pytest.raises(bd.BagOfDimsError, match="not a list|pass a list"):
        bd.SignCache.build_inputs(model, proc, 42, progress=False)
    with pytest.raises(InvalidArgument, match="pooling rule"):
        bd.SignCache.build_inputs(model, proc, images, pool="max", progress=False)
    with pytest.raises(OutOfRange, match="valid positions"):
        bd.SignCache.build_inputs(model, proc, images, pool=40, progress=False)
    with pytest.raises(InvalidArgument, match="JSON"):
        bd.SignCache.build_inputs(model, proc, images, processor_kwargs={"x": object()},
                                  progress=False)


def test_sample_level_masks_map_to_positions_by_the_models_rule():
    """wav2vec2 masks samples; its conv stack gives fewer positions (the model's own length rule)."""
    torch.manual_seed(0)
    model = T.Wav2Vec2Model(T.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm="layer")).eval()
    fe = T.Wav2Vec2FeatureExtractor(return_attention_mask=True)
    g = np.random.default_rng(4)
    clips = [g.standard_normal(n).astype(np.float32) for n in (800, 400, 610)]
    cache = bd.SignCache.build_inputs(model, fe, clips, sites=["resid.1"], pool="mean",
                                      batch_size=3, magnitudes=True, progress=False,
                                      processor_kwargs={"sampling_rate": 16000})
    assert cache.meta.processor_kwargs["padding"] is True
    for i, clip in enumerate(clips):  # each clip alone: no padding at all
        with torch.no_grad(), bd.Capture(model, ["resid.1"]) as cap:
            model(torch.from_numpy(fe(clip, sampling_rate=16000)["input_values"][0])[None])
        alone = cap["resid.1"][0].mean(0)
        assert torch.allclose(cache.magnitudes("resid.1", [i])[0].float(), alone.abs(), atol=2e-3)
        clear = alone.abs() > 1e-3
        assert torch.equal(cache.signs("resid.1", [i])[0][clear] > 0, alone[clear] > 0)
