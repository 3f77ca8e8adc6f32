"""A labelled set of spoken words, generated with Debian's ``espeak-ng``.

Each member word of a few categories (numbers, colours, animals, countries, ...) is spoken by
several voices at several speeds, resampled to 16 kHz mono float32 and stored once as
``audio.safetensors`` (the clips concatenated, ``offsets`` [n + 1]) beside ``index.json`` (settings,
one record per clip: word, category, voice, speed; sha256 of the audio file). Synthesis is
deterministic, so the same settings give the same set; a build resumes from finished categories
and returns at once when a complete set with the same settings exists. :func:`split_by_word`
keeps every clip of a word on one side (anchors or held out), so no word is evaluated that the
anchors contain in another voice.
"""

from __future__ import annotations

import calendar
import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from math import gcd
from pathlib import Path

import numpy as np
from bagofdims.errors import InvalidArgument, MissingFile, StorageError

logger = logging.getLogger(__name__)

FORMAT = "bagofdims-spoken-words/1"
DEFAULT_VOICES = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-scotland")
DEFAULT_SPEEDS = (130, 175)  # words per minute (espeak-ng's default is 175)
WORDS_PER_CATEGORY = 40
_AUDIO, _INDEX = "audio.safetensors", "index.json"
_SILENCE = 1e-3  # |amplitude| below this at either end is trimmed (20 ms margin kept)

# Category -> (shipped set, shipped category, words put first, words left out). WordNet lists
# hold rare senses and the category's own name; what could not be heard as a member is dropped.
_SOURCES: dict[str, tuple[str, str, tuple[str, ...], frozenset[str]]] = {
    "number": ("default", "number_word", tuple(
        "zero one two three four five six seven eight nine ten eleven twelve".split()),
        frozenset({"dozen", "half"})),
    "colour": ("default", "color", (), frozenset(
        "color shade complexion bleach blackness whiteness tint complementary sanguine snow "
        "peru wheat linen chocolate salmon tomato lemon olive orchid thistle lime plum gold "
        "silver tan navy fawn".split())),
    "animal": ("default", "placental", (), frozenset(
        "mankind livestock humankind beef cattle charger dun fitch takin pinto equine rodent "
        "doggy hound swine bullock stag mare puppy mustang".split())),
    "bird": ("default", "bird", (), frozenset(
        "bird poultry chick brent mina ani daw merle reeve brant fowl moa jaeger mavis guan "
        "cochin raptor waterfowl songbird snipe gander bantam firebird kea turkey".split())),
    "country": ("default", "country", (), frozenset(
        "Jersey Georgia Jordan Guinea Chad Turkey Israel Cuba Sudan Congo Niger".split())),
    "body_part": ("default", "body_part", (), frozenset(
        "vessel costa tissue organ facial lid receptor pathway sticker tract optic valve flesh "
        "nerve lap gut vagina prostate palm wing tail bone muscle breast fist".split())),
    "vehicle": ("default", "vehicle", (), frozenset(
        "vehicle fighter carrier vessel gig clarence convertible cruiser destroyer pickup auto "
        "tank rocket missile airbus brig starship galley transporter shay shipwreck hackney "
        "balloon".split())),
    "instrument": ("default", "musical_instrument", (), frozenset(
        "string fife chime clarion tabor bombard virginal woodwind pipework bourdon chanter "
        "diapason syrinx helicon gamba viol uke tympani musette koto gong".split())),
    "food": ("default", "dish", (), frozenset(
        "hash patty grinder mulligan gyro poi marmite zep scouse barbeque slaw gruel "
        "omelet lasagne bouillon".split())),
    "clothing": ("default", "garment", (), frozenset(
        "garment laundry turtle mac mini mack jean aba maxi boa ironing ascot chino panty "
        "mending newmarket bolo bola capote raglan wraparound undies nappy".split())),
    "sport": ("default", "sport", (), frozenset(
        "sport racing riding fishing hunting jumping hoops trolling tumbling hurling ducking "
        "angling coursing shinny pallone sumo".split())),
}
_SEASONS = ("spring", "summer", "autumn", "winter")
_TIMES = tuple("morning evening night afternoon week year month hour minute today tomorrow "
               "yesterday weekend noon midnight dawn dusk decade century sunrise sunset "
               "fortnight daytime".split())


def default_categories(per_category: int = WORDS_PER_CATEGORY) -> dict[str, list[str]]:
    """The default categories (12 x ``per_category`` words) from the shipped word lists, with
    ``calendar`` (days, months, seasons, times of day) from the standard library. A word listed
    under two categories is dropped from both, so every label is unambiguous."""
    from bagofdims.categories import load_categories

    raw: dict[str, list[str]] = {}
    sets = {cat_set: load_categories(cat_set) for cat_set, *_ in _SOURCES.values()}
    for name, (cat_set, source, first, drop) in _SOURCES.items():
        members = sets[cat_set][source]
        # proper names and acronyms in common-noun lists are WordNet oddities (Lucy, SAM)
        words = [w for w in members if w.isalpha() and w not in drop
                 and (w.islower() or name == "country")]
        raw[name] = list(dict.fromkeys([*first, *words]))
    raw["calendar"] = [*calendar.day_name, *calendar.month_name[1:], *_SEASONS, *_TIMES]
    seen: dict[str, int] = {}
    for words in raw.values():
        for w in {w.lower() for w in words}:
            seen[w] = seen.get(w, 0) + 1
    out = {}
    for name, words in raw.items():
        kept = [w for w in words if seen[w.lower()] == 1][:per_category]
        if len(kept) < per_category:
            raise InvalidArgument(f"category {name!r} has only {len(kept)} usable words; pass "
                                  f"per_category <= {len(kept)}.")
        out[name] = kept
    return out


@dataclass(frozen=True)
class SpokenItem:
    """One clip's labels."""

    word: str
    category: str
    voice: str
    speed: int


@dataclass
class SpokenWords:
    """A loaded spoken-word set: ``clip(i)`` is a float32 array at ``sample_rate``."""

    path: Path
    sample_rate: int
    items: list[SpokenItem]
    audio: np.ndarray
    offsets: np.ndarray
    settings: dict

    def __len__(self) -> int:
        return len(self.items)

    def clip(self, i: int) -> np.ndarray:
        return np.asarray(self.audio[self.offsets[i]:self.offsets[i + 1]], dtype=np.float32)

    def clips(self, indices=None) -> list[np.ndarray]:
        return [self.clip(int(i)) for i in (range(len(self)) if indices is None else indices)]

    @property
    def categories(self) -> list[str]:
        return list(dict.fromkeys(it.category for it in self.items))

    def labels(self, field: str = "category") -> list:
        return [getattr(it, field) for it in self.items]


@dataclass(frozen=True)
class WordSplit:
    """Clip indices on each side; every clip of a word is on the side of that word."""

    anchors: np.ndarray
    held_out: np.ndarray


def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise MissingFile("espeak-ng is not installed: run `apt-get install espeak-ng` "
                          "(Debian/Ubuntu) to generate the spoken-word set.")
    return exe


def _espeak_version(exe: str) -> str:
    return subprocess.run([exe, "--version"], capture_output=True, text=True).stdout.strip()


def _speak(exe: str, word: str, voice: str, speed: int, sample_rate: int, tmp: Path) -> np.ndarray:
    wav = tmp / f"{abs(hash((word, voice, speed)))}.wav"
    done = subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(wav), word],
                          capture_output=True, text=True)
    if done.returncode != 0 or not wav.exists():
        raise InvalidArgument(f"espeak-ng could not speak {word!r} with voice {voice!r} "
                              f"({done.stderr.strip()[:200]}): pick voices from "
                              "`espeak-ng --voices=en`.")
    with wave.open(io.BytesIO(wav.read_bytes())) as w:
        rate, frames = w.getframerate(), w.readframes(w.getnframes())
    wav.unlink()
    x = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    loud = np.flatnonzero(np.abs(x) > _SILENCE)
    if loud.size:  # trim the silence espeak-ng pads around a word, keep a 20 ms margin
        pad = rate // 50
        x = x[max(loud[0] - pad, 0):loud[-1] + pad]
    from scipy.signal import resample_poly

    g = gcd(sample_rate, rate)
    return resample_poly(x, sample_rate // g, rate // g).astype(np.float32)


def _settings(categories, voices, speeds, sample_rate, exe) -> dict:
    return {"format": FORMAT, "categories": {k: list(v) for k, v in categories.items()},
            "voices": list(voices), "speeds": [int(s) for s in speeds],
            "sample_rate": int(sample_rate), "trim_below": _SILENCE,
            "espeak": _espeak_version(exe)}


def _check_args(categories, voices, speeds, sample_rate) -> None:
    if not categories or not all(isinstance(w, list) and w and all(
            isinstance(x, str) and x.strip() for x in w) for w in categories.values()):
        raise InvalidArgument("categories must map each name to a non-empty list of words.")
    if not voices or not speeds:
        raise InvalidArgument("pass at least one voice and one speed.")
    if not all(isinstance(s, int) and 80 <= s <= 450 for s in speeds):
        raise InvalidArgument(f"speeds {speeds!r}: espeak-ng speeds are words per minute, "
                              "integers from 80 to 450.")
    if not isinstance(sample_rate, int) or sample_rate < 8000:
        raise InvalidArgument(f"sample_rate {sample_rate!r}: pass an integer >= 8000 (16000 "
                              "for Whisper).")


def _load_chunk(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from safetensors.numpy import load_file

    d = load_file(str(path))
    return d["audio"], d["offsets"]


def build_spoken_words(out_dir=None, categories=None, voices=DEFAULT_VOICES,
                       speeds=DEFAULT_SPEEDS, sample_rate: int = 16000,
                       progress: bool = True) -> SpokenWords:
    """Build (or reuse) the spoken-word set in ``out_dir`` and load it.

    ``out_dir``: default ``bagofdims.embedded.home()/data/spoken-words``; ``categories``: a dict
    name -> words (default :func:`default_categories`). A complete set with the same settings is
    returned as is; a set with other settings, or a damaged one, is rebuilt. Finished
    categories are kept in ``.NAME.parts`` beside ``out_dir``, so an interrupted build resumes.
    """
    from safetensors.numpy import save
    from tqdm.auto import tqdm

    from bagofdims.storage import atomic_dir, atomic_write_bytes, sha256, write_json

    if out_dir is None:
        from bagofdims.embedded import home

        out_dir = home() / "data" / "spoken-words"
    out = Path(out_dir)
    categories = {str(k): list(v) for k, v in (categories or default_categories()).items()}
    voices, speeds = [str(v) for v in voices], list(speeds)
    _check_args(categories, voices, speeds, sample_rate)
    exe = _espeak()
    settings = _settings(categories, voices, speeds, sample_rate, exe)
    if (out / _INDEX).exists():
        try:
            found = load_spoken_words(out)
            if found.settings == settings:
                return found
            logger.info("%s holds a spoken-word set with other settings: rebuilding it", out)
        except StorageError as err:
            logger.warning("rebuilding the damaged spoken-word set in %s (%s)", out, err)
    elif out.exists() and any(out.iterdir()):
        raise StorageError(f"{out} exists and is not a spoken-word set: pass an empty or new "
                           "directory.")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    parts = out.parent / f".{out.name}.parts"
    if parts.exists() and _read_json(parts / "settings.json").get("hash") != digest:
        shutil.rmtree(parts)  # partial work of other settings
    parts.mkdir(parents=True, exist_ok=True)
    write_json(parts / "settings.json", {"hash": digest})
    jobs = [(c, w, v, s) for c, words in categories.items() for w in words
            for v in voices for s in speeds]
    bar = tqdm(total=len(jobs), desc="speaking words", unit="clip", disable=not progress)
    workers = max(1, min(4, os.cpu_count() or 1))  # espeak-ng runs as separate processes
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(workers) as pool:
        for ci, (cat, words) in enumerate(categories.items()):
            chunk = parts / f"{ci:03d}.safetensors"
            todo = [j for j in jobs if j[0] == cat]
            if not chunk.exists():
                clips = list(pool.map(lambda j: _speak(exe, j[1], j[2], j[3], sample_rate,
                                                       Path(tmp)), todo))
                offsets = np.cumsum([0] + [len(c) for c in clips]).astype(np.int64)
                atomic_write_bytes(chunk, save({"audio": np.concatenate(clips),
                                                "offsets": offsets}))
            bar.update(len(todo))
    bar.close()

    def fill(tmp_dir: Path) -> None:
        audio, offsets, base = [], [np.zeros(1, np.int64)], 0
        for ci in range(len(categories)):
            a, o = _load_chunk(parts / f"{ci:03d}.safetensors")
            audio.append(a)
            offsets.append(o[1:] + base)
            base += int(o[-1])
        atomic_write_bytes(tmp_dir / _AUDIO, save({"audio": np.concatenate(audio),
                                                   "offsets": np.concatenate(offsets)}))
        index = {"format": FORMAT, "settings": settings, "n": len(jobs),
                 "items": [asdict(SpokenItem(w, c, v, s)) for c, w, v, s in jobs],
                 "checksums": {_AUDIO: sha256(tmp_dir / _AUDIO)}, "complete": True}
        write_json(tmp_dir / _INDEX, index)

    atomic_dir(out, fill, overwrite=True)
    shutil.rmtree(parts, ignore_errors=True)
    logger.info("built %d spoken words (%d categories) into %s", len(jobs), len(categories), out)
    return load_spoken_words(out)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_spoken_words(path) -> SpokenWords:
    """Load a set written by :func:`build_spoken_words`, checking its checksum and index."""
    from bagofdims.storage import open_mmap, sha256

    path = Path(path)
    fix = "run build_spoken_words with the same settings to rebuild it."
    index = _read_json(path / _INDEX)
    if index.get("format") != FORMAT or not index.get("complete"):
        raise StorageError(f"{path / _INDEX} is missing, unreadable or incomplete: {fix}")
    if not (path / _AUDIO).exists() or sha256(path / _AUDIO) != index["checksums"].get(_AUDIO):
        raise StorageError(f"{path / _AUDIO} is missing or does not match its checksum: {fix}")
    arrays = open_mmap(path / _AUDIO)
    audio, offsets = arrays["audio"], np.asarray(arrays["offsets"])
    items = [SpokenItem(**it) for it in index["items"]]
    if len(items) != index["n"] or len(offsets) != len(items) + 1 or offsets[-1] != len(audio) \
            or np.any(np.diff(offsets) <= 0):
        raise StorageError(f"{path}: the index and the audio offsets disagree: {fix}")
    settings = index["settings"]
    return SpokenWords(path, settings["sample_rate"], items, audio, offsets, settings)


def split_by_word(spoken: SpokenWords, held_out: float = 0.5, seed: int = 0) -> WordSplit:
    """Split clips by word within each category: a word's clips (all voices and speeds) are all
    anchors or all held out; ``held_out`` of each category's words (at least one) are held out."""
    if not 0 < held_out < 1:
        raise InvalidArgument(f"held_out={held_out!r}: pass a fraction between 0 and 1.")
    rng = np.random.default_rng(seed)
    side: dict[tuple[str, str], bool] = {}
    for cat in sorted(spoken.categories):
        words = sorted({it.word for it in spoken.items if it.category == cat})
        if len(words) < 2:
            raise InvalidArgument(f"category {cat!r} has {len(words)} word(s); a split by word "
                                  "needs at least 2.")
        n_out = min(max(1, round(held_out * len(words))), len(words) - 1)
        for j, w in enumerate(rng.permutation(words)):
            side[(cat, str(w))] = j < n_out
    out = np.array([side[(it.category, it.word)] for it in spoken.items])
    return WordSplit(np.flatnonzero(~out), np.flatnonzero(out))
