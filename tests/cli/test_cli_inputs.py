"""``bagofdims capture --inputs``: example caches from folders, tables and datasets, through
catalog, query and info; one-line errors for bad inputs; resumes refuse other inputs."""

import json
import wave

import numpy as np
import pytest
import torch
import transformers as T

import bagofdims.models
from bagofdims.cli.main import main
from bagofdims.errors import InvalidArgument
from bagofdims.example_sources import read_examples, to_mono_float
from bagofdims.signs.cache import SignCache

try:
    from PIL import Image
except ImportError:  # images then come as .npy arrays
    Image = None

WORDS = {"low": range(3, 40), "high": range(60, 96)}


def write_texts(root, n=8, seed=0):
    g = np.random.default_rng(seed)
    for label, ids in WORDS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            words = " ".join(f"w{w}" for w in g.choice(list(ids), size=4))
            (root / label / f"{i:02d}.txt").write_text(words + "\n")
    return root


def write_wav(path, samples: np.ndarray, rate: int):
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def one_error_line(err: str) -> str:
    """The one error line, last on stderr (a library's loading bar may come before it)."""
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
    assert errors[0].startswith("bagofdims capture: error: ")
    return errors[0]


# -- texts on a tiny BERT ----------------------------------------------------------------------
def test_text_folder_round_trip(tmp_path, encoder_dir, cli):
    src = write_texts(tmp_path / "texts")
    cache, catalog = tmp_path / "cache", tmp_path / "catalog"
    code, out, err = cli("capture", "--model", encoder_dir, "--inputs", src, "--out", cache,
                         "--pool", "cls", "--device", "cpu")
    assert code == 0, err
    assert "example cache" in out and "16" in out and "high (8), low (8)" in out
    built = SignCache.load(cache)
    assert built.is_examples and built.meta.pool == "cls" and len(built) == 16
    assert built.meta.labels == ["high"] * 8 + ["low"] * 8  # sorted sub-folder names
    sources = json.loads((cache / "sources.json").read_text())
    assert sources["kind"] == "text" and sources["sources"][0].endswith("high/00.txt")

    code, out, err = cli("info", cache)
    assert code == 0 and "labels      2: high (8), low (8)" in out and "pooling     cls" in out

    code, out, err = cli("catalog", "--cache", cache, "--out", catalog, "--n-min-held-out", "2",
                         "-k", "4")
    assert code == 0, err
    code, out, err = cli("query", catalog, "low", "-k", "5")
    assert code == 0, err
    assert "top examples" in out and "top tokens" not in out
    rows = [line for line in out.splitlines() if line.strip().startswith("#")]
    assert len(rows) == 5 and all(".txt" in r and "label " in r for r in rows)
    assert any("low/" in r for r in rows)
    code, out, err = cli("query", catalog, "--dim", "3", "-k", "2")
    assert code == 0, err
    assert "of the examples" in out and out.count(".txt") == 4


def test_rerun_reuses_and_other_inputs_are_refused(tmp_path, encoder_dir, cli):
    src = write_texts(tmp_path / "texts", n=4)
    cache = tmp_path / "cache"
    args = ["capture", "--model", encoder_dir, "--inputs", src, "--out", cache, "--device", "cpu"]
    assert cli(*args)[0] == 0
    code, out, _ = cli(*args)
    assert code == 0 and "reusing it" in out
    (src / "low" / "new.txt").write_text("w5 w6")
    code, _, err = cli(*args)
    assert code == 2 and "other examples" in one_error_line(err)
    code, _, err = cli(*args, "--pool", "last")
    assert code == 2 and "pooling" in one_error_line(err)
    assert cli(*args, "--overwrite")[0] == 0 and len(SignCache.load(cache)) == 9


def test_an_interrupted_build_resumes_only_with_the_same_inputs(tmp_path, encoder_dir, cli):
    src = write_texts(tmp_path / "texts", n=4)
    cache = tmp_path / "cache"
    model, tok = bagofdims.models.load_model(str(encoder_dir), device="cpu")
    ex = read_examples(str(src), tok)
    # a build that stopped before saving leaves its checkpoint beside --out
    SignCache.build_inputs(model, tok, ex.items, sites=["resid.*"], labels=ex.labels,
                           batch_size=32, progress=False,
                           checkpoint=tmp_path / "cache.partial")
    assert (tmp_path / "cache.partial").exists()
    (src / "high" / "00.txt").write_text("w90 w91")
    args = ["capture", "--model", encoder_dir, "--inputs", src, "--out", cache, "--device", "cpu"]
    code, _, err = cli(*args)
    assert code == 2 and not cache.exists()
    assert "example_sha256" in one_error_line(err) and "interrupted build" in err
    (src / "high" / "00.txt").write_text(ex.items[0] + "\n")
    code, _, err = cli(*args)
    assert code == 0, err
    assert SignCache.load(cache).meta.labels == ex.labels


def test_tables_datasets_and_hub_streams(tmp_path, encoder_dir, cli, monkeypatch):
    rows = [{"text": f"w{3 + i} w{4 + i}", "label": ("a", "b")[i % 2], "speaker": f"s{i // 4}"}
            for i in range(12)]
    table = tmp_path / "rows.jsonl"
    table.write_text("\n".join(json.dumps(r) for r in rows))
    base = ["--model", encoder_dir, "--device", "cpu"]
    code, out, err = cli("capture", *base, "--inputs", table, "--groups", "speaker",
                         "--out", tmp_path / "c1")
    assert code == 0, err
    meta = SignCache.load(tmp_path / "c1").meta
    assert meta.labels == [r["label"] for r in rows] and meta.groups[4] == "s1"

    import datasets

    ds = datasets.Dataset.from_dict({"sentence": [r["text"] for r in rows],
                                     "y": [i % 3 for i in range(12)]})
    ds.save_to_disk(str(tmp_path / "ds"))
    code, out, err = cli("capture", *base, "--inputs", tmp_path / "ds", "--labels", "y",
                         "--limit", "9", "--out", tmp_path / "c2")
    assert code == 0, err
    assert SignCache.load(tmp_path / "c2").meta.labels == ["0", "1", "2"] * 3

    asked = {}

    def fake_stream(name, config=None, split=None, streaming=False):
        asked.update(name=name, config=config, split=split, streaming=streaming)
        return iter([{"text": r["text"], "label": r["label"]} for r in rows * 100])

    monkeypatch.setattr(datasets, "load_dataset", fake_stream)
    code, out, err = cli("capture", *base, "--inputs", "hf:org/set:cfg@test", "--limit", "6",
                         "--out", tmp_path / "c3")
    assert code == 0, err
    assert asked == {"name": "org/set", "config": "cfg", "split": "test", "streaming": True}
    assert len(SignCache.load(tmp_path / "c3")) == 6


def test_bad_inputs_give_one_line(tmp_path, encoder_dir, cli):
    base = ["capture", "--model", encoder_dir, "--device", "cpu", "--out", tmp_path / "c"]
    (tmp_path / "empty").mkdir()
    mixed = write_texts(tmp_path / "mixed", n=2)
    np.save(mixed / "low" / "x.npy", np.zeros(3))
    odd = write_texts(tmp_path / "odd", n=2)
    (odd / "low" / "notes.doc").write_text("?")
    blank = write_texts(tmp_path / "blank", n=2)
    (blank / "high" / "00.txt").write_text("  \n")
    table = tmp_path / "t.csv"
    table.write_text("words,cls\nw3 w4,a\n")
    cases = [
        (tmp_path / "missing", "no such file or folder"),
        (tmp_path / "empty", "holds no files"),
        (mixed, "mixes array and text"),
        (odd, "notes.doc: unsupported file type"),
        (blank, "00.txt is empty"),
        (table, "--column"),
    ]
    for src, message in cases:
        code, out, err = cli(*base, "--inputs", src)
        assert code == 2 and message in one_error_line(err), (src, err)
    code, _, err = cli(*base, "--inputs", table, "--column", "text")
    assert code == 2 and "no such column; it has words, cls" in one_error_line(err)
    code, _, err = cli(*base, "--inputs", table, "--column", "words", "--labels", "nope")
    assert code == 2 and "--labels nope" in one_error_line(err)
    code, _, err = cli(*base, "--inputs", mixed, "--column", "x")
    assert code == 2 and "Drop --column" in one_error_line(err)
    for flags, message in ((["--pool", "cls"], "go with --inputs"),
                           (["--inputs", mixed, "--pool", "first"], "--pool 'first'"),
                           (["--inputs", mixed, "--tokens", "5"], "vocabulary caches")):
        code, _, err = cli(*base, *flags)
        assert code == 2 and message in one_error_line(err)
    assert not (tmp_path / "c").exists()


# -- images on a tiny ViT, clips on a tiny wav2vec2 --------------------------------------------
def test_image_folder_round_trip(tmp_path, cli):
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-vit"
    T.ViTModel(T.ViTConfig(image_size=16, patch_size=4, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=37)).save_pretrained(model_dir)
    T.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(model_dir)
    g = np.random.default_rng(0)
    src = tmp_path / "images"
    for c, label in enumerate(("red", "green")):
        (src / label).mkdir(parents=True)
        for i in range(8):
            im = g.integers(0, 150, size=(16, 16, 3))
            im[..., c] += 100
            im = im.astype(np.uint8)
            if Image is not None:
                Image.fromarray(im).save(src / label / f"{i}.png")
            else:
                np.save(src / label / f"{i}.npy", im)
    suffix = ".png" if Image is not None else ".npy"
    if Image is not None:
        (src / "red" / "broken.png").write_bytes(b"not a png")
        code, _, err = cli("capture", "--model", model_dir, "--inputs", src, "--device", "cpu",
                           "--out", tmp_path / "cache")
        assert code == 2 and "broken.png cannot be read as image" in one_error_line(err)
        (src / "red" / "broken.png").unlink()
    cache, catalog = tmp_path / "cache", tmp_path / "catalog"
    code, out, err = cli("capture", "--model", model_dir, "--inputs", src, "--pool", "cls",
                         "--device", "cpu", "--out", cache, "--batch-size", "5")
    assert code == 0, err
    built = SignCache.load(cache)
    assert built.meta.labels == ["green"] * 8 + ["red"] * 8 and built.meta.batch_size == 5
    code, out, err = cli("catalog", "--cache", cache, "--out", catalog, "--n-min-held-out", "2")
    assert code == 0, err
    code, out, err = cli("query", catalog, "red", "-k", "3")
    assert code == 0, err
    assert out.count(suffix) == 3 and "label " in out


def test_audio_folder_is_resampled_and_round_trips(tmp_path, cli):
    torch.manual_seed(0)
    model_dir = tmp_path / "tiny-wav2vec2"
    T.Wav2Vec2Model(T.Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
        do_stable_layer_norm=True)).save_pretrained(model_dir)
    T.Wav2Vec2FeatureExtractor(sampling_rate=16000, return_attention_mask=True).save_pretrained(
        model_dir)
    src = tmp_path / "clips"
    t = np.arange(400) / 8000  # 50 ms at 8 kHz: resampled to 800 samples at 16 kHz
    for label, hz in (("low", 200), ("high", 2000)):
        (src / label).mkdir(parents=True)
        for i in range(6):
            write_wav(src / label / f"{i}.wav", 0.5 * np.sin(2 * np.pi * (hz + 20 * i) * t), 8000)
    ex = read_examples(str(src), T.Wav2Vec2FeatureExtractor(sampling_rate=16000))
    assert ex.kind == "audio" and ex.items[0].shape == (800,) and ex.items[0].dtype == np.float32
    assert ex.processor_kwargs == {"sampling_rate": 16000}
    cache, catalog = tmp_path / "cache", tmp_path / "catalog"
    code, out, err = cli("capture", "--model", model_dir, "--inputs", src, "--pool", "2:-2",
                         "--device", "cpu", "--out", cache)
    assert code == 0, err
    assert "audio from" in out and "pooling     range:2:-2" in out
    assert SignCache.load(cache).meta.processor_kwargs["sampling_rate"] == 16000
    (src / "low" / "bad.wav").write_bytes(b"RIFF0000WAVE")
    code, _, err = cli("capture", "--model", model_dir, "--inputs", src, "--device", "cpu",
                       "--out", tmp_path / "other")
    assert code == 2 and "bad.wav cannot be read as audio" in one_error_line(err)
    assert cli("catalog", "--cache", cache, "--out", catalog, "--n-min-held-out", "2")[0] == 0
    code, out, err = cli("query", catalog, "high", "-k", "2")
    assert code == 0 and out.count(".wav") == 2


def test_samples_become_mono_float_at_the_processor_rate():
    stereo = np.stack([np.full(100, 16384, np.int16), np.full(100, -16384, np.int16)], axis=1)
    out = to_mono_float(stereo, 8000, 16000, "x.wav")
    assert out.shape == (200,) and out.dtype == np.float32 and np.allclose(out, 0, atol=1e-6)
    same = to_mono_float(np.full(10, 128, np.uint8), 16000, 16000, "y.wav")
    assert np.array_equal(same, np.zeros(10, np.float32))
    with pytest.raises(InvalidArgument, match="holds no samples"):
        to_mono_float(np.zeros(0, np.int16), 8000, 16000, "z.wav")
