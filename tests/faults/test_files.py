"""Damaged and hand-edited files of every format are refused with a clear error, never read."""

import json
import struct

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import bagofdims as bd
import planted
import tiny
from bagofdims.errors import CacheError, CatalogError, SafetensorsError
from bagofdims.storage import open_mmap


@pytest.fixture(scope="module")
def saved_cache(tmp_path_factory):
    model, tok = tiny.make("llama"), tiny.tokenizer()
    path = tmp_path_factory.mktemp("c") / "cache"
    bd.SignCache.build(model, tok, sites=["resid.0", "resid.1"], progress=False).save(path)
    return path, model, tok


def _copy(src, dst):
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _edit_meta(path, **changes):
    meta = json.loads((path / "meta.json").read_text())
    for k, v in changes.items():
        if k == "site_width":
            meta["sites"]["resid.0"] = v
        else:
            meta[k] = v
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("change", [
    {"site_width": 33}, {"bit_order": "big"}, {"bos_id": 5}, {"bos_token": "<x>"},
    {"vocab_size": 95}, {"n_tokens": 10}, {"model": "other"}, {"weights": "sha256:0"},
])
def test_cache_meta_edits_are_refused(saved_cache, tmp_path, change):
    path = _copy(saved_cache[0], tmp_path / "c")
    _edit_meta(path, **change)
    with pytest.raises(CacheError, match="edited or damaged"):
        bd.SignCache.load(path)


@pytest.mark.parametrize("text", ["[]", "null", "3", '"meta"'])
def test_cache_meta_of_the_wrong_kind(saved_cache, tmp_path, text):
    path = _copy(saved_cache[0], tmp_path / "c")
    (path / "meta.json").write_text(text)
    with pytest.raises(CacheError):
        bd.SignCache.load(path)


def test_cache_meta_not_utf8(saved_cache, tmp_path):
    path = _copy(saved_cache[0], tmp_path / "c")
    (path / "meta.json").write_bytes(b"\xff\xfe{\x00")
    with pytest.raises(CacheError, match="UTF-8"):
        bd.SignCache.load(path)


def test_cache_meta_consistent_edit_with_recomputed_checksum_is_still_validated(saved_cache, tmp_path):
    """Someone recomputing the checksum still cannot make inconsistent metadata load."""
    from bagofdims.signs.meta import _digest

    path = _copy(saved_cache[0], tmp_path / "c")
    meta = json.loads((path / "meta.json").read_text())
    meta.pop("meta_sha256")
    meta["bos_id"] = 10_000
    meta["bos"] = True
    meta["meta_sha256"] = _digest(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CacheError, match="bos_id"):
        bd.SignCache.load(path)


def test_cache_signs_file_from_another_cache_is_refused(saved_cache, tmp_path):
    path = _copy(saved_cache[0], tmp_path / "c")
    other = bd.SignCache.build(tiny.make("llama", seed=3), tiny.tokenizer(), sites=["resid.0", "resid.1"],
                               progress=False).save(tmp_path / "other")
    (path / "signs.safetensors").write_bytes((other / "signs.safetensors").read_bytes())
    with pytest.raises(CacheError, match="checksum"):
        bd.SignCache.load(path)


def _raw_header_file(path, header: dict, data: bytes = b"\x00" * 16):
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("header", [
    {"x": {"dtype": "U8", "shape": [4]}},  # no offsets
    {"x": {"dtype": "U8", "shape": [4], "data_offsets": [0]}},
    {"x": {"dtype": "U8", "shape": [4], "data_offsets": ["a", "b"]}},
    {"x": {"dtype": "U8", "shape": [-4], "data_offsets": [0, 4]}},
    {"x": {"dtype": "C64", "shape": [2], "data_offsets": [0, 16]}},
    {"x": {"dtype": "U8", "shape": [64], "data_offsets": [0, 64]}},  # beyond the file
    {"x": "not a description"},
    [1, 2, 3],
])
def test_safetensors_headers_that_lie(tmp_path, header):
    f = tmp_path / "t.safetensors"
    _raw_header_file(f, header)
    with pytest.raises(SafetensorsError):
        open_mmap(f)


# -- catalogs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_catalog(tmp_path_factory):
    cat, cache, tok, _ = planted.make_catalog()
    path = cat.save(tmp_path_factory.mktemp("k") / "cat")
    return path, cache, tok


def _edit_catalog(path, fn):
    data = json.loads((path / "catalog.json").read_text())
    fn(data)
    (path / "catalog.json").write_text(json.dumps(data))


def _swap(data):
    f = data["features"]
    f[0], f[1] = f[1], f[0]


@pytest.mark.parametrize("edit", [
    _swap,
    lambda d: d["features"][0].__setitem__("threshold", "abc"),
    lambda d: d["features"][0].__setitem__("threshold", float("nan")),
    lambda d: d["features"][0].__setitem__("site", "resid.7"),
    lambda d: d["meta"].__setitem__("weights", "other"),
])
def test_catalog_json_edits_are_refused(saved_catalog, tmp_path, edit):
    path = _copy(saved_catalog[0], tmp_path / "c")
    _edit_catalog(path, edit)
    with pytest.raises(CatalogError, match="edited or damaged"):
        bd.Catalog.load(path)


@pytest.mark.parametrize("what", ["dims", "signs"])
def test_catalog_flipped_dims_or_signs_are_refused(saved_catalog, tmp_path, what):
    path = _copy(saved_catalog[0], tmp_path / "c")
    arrays = load_file(str(path / "features.safetensors"))
    arrays[what] = arrays[what].copy()
    arrays[what][0] = arrays[what][0] + 1 if what == "dims" else -arrays[what][0]
    save_file(arrays, str(path / "features.safetensors"))
    with pytest.raises(CatalogError, match="checksum"):
        bd.Catalog.load(path)


def test_catalog_recomputed_checksums_still_validate_values(saved_catalog, tmp_path):
    """Even with both checksums recomputed, impossible values are refused."""
    from bagofdims.catalog.format import _digest
    from bagofdims.storage import sha256

    path = _copy(saved_catalog[0], tmp_path / "c")
    arrays = load_file(str(path / "features.safetensors"))
    arrays["signs"] = arrays["signs"].copy()
    arrays["signs"][0] = 3
    save_file(arrays, str(path / "features.safetensors"))
    data = json.loads((path / "catalog.json").read_text())
    data["files"]["features.safetensors"] = sha256(path / "features.safetensors")
    data.pop("sha256")
    data["sha256"] = _digest(data)
    (path / "catalog.json").write_text(json.dumps(data))
    with pytest.raises(CatalogError, match="signs must be"):
        bd.Catalog.load(path)


@pytest.mark.parametrize("text", [b"[]", b"null", b"\xff\xfe", b"{}"])
def test_catalog_json_of_the_wrong_kind(saved_catalog, tmp_path, text):
    path = _copy(saved_catalog[0], tmp_path / "c")
    (path / "catalog.json").write_bytes(text)
    with pytest.raises(CatalogError):
        bd.Catalog.load(path)


def test_catalog_finds_its_cache_after_both_move(tmp_path):
    """The cache path survives moving the catalog and cache directories together."""
    model, tok = tiny.make("llama"), tiny.tokenizer()
    cache = bd.SignCache.build(model, tok, sites=["resid.1"], progress=False).save(tmp_path / "a" / "cache")
    cache = bd.SignCache.load(cache)
    cats = {"low": [f"w{i}" for i in range(3, 33)], "high": [f"w{i}" for i in range(50, 80)]}
    cat = bd.Catalog.build(cache, categories=cats, tokenizer=tok, sites="resid.1", n_anchors=12,
                           n_min_held_out=5, progress=False)
    cat.save(tmp_path / "a" / "catalog")
    (tmp_path / "a").rename(tmp_path / "b")
    loaded = bd.Catalog.load(tmp_path / "b" / "catalog", tokenizer=tok)
    assert loaded.cache.path.resolve() == (tmp_path / "b" / "cache").resolve()
    assert len(loaded.top_tokens("low", k=3)) == 3


def test_catalog_without_tokenizer_says_how_to_get_one(saved_catalog):
    cat = bd.Catalog.load(saved_catalog[0], cache=saved_catalog[1])
    with pytest.raises(CatalogError, match="load_tokenizer"):
        cat.top_tokens("alpha")
    with pytest.raises(CatalogError, match="not the one"):
        bd.Catalog.load(saved_catalog[0], tokenizer=tiny.tokenizer(vocab_size=50))
    assert np.isfinite(cat["alpha"].metrics["held_out_auc"])
