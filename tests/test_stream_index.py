"""The activation store's index: every malformed field, shard name and shard header refused."""

import json
import os
import shutil
import struct

import pytest

import bagofdims as bd
from bagofdims.errors import StoreError
from bagofdims.stream import ActivationStore

from test_stream import copy, full, llama, _index, _set_index  # noqa: F401 (fixtures)


# -- 4. shard names stay inside the store --------------------------------------------------------
@pytest.mark.parametrize("name", ["../outside.safetensors", "/etc/passwd", "sub/shard-00000.safetensors",
                                  "..", "", "index.json", 7])
def test_shard_names_outside_the_store_are_refused(copy, tmp_path, name):
    index = _index(copy)
    index["shards"][0]["file"] = name
    _set_index(copy, index)
    with pytest.raises(StoreError, match="not a plain shard file name"):
        ActivationStore(copy)


def test_shard_symlink_out_of_the_store_is_refused(copy, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.move(copy / "shard-00000.safetensors", outside)
    os.symlink(outside, copy / "shard-00000.safetensors")
    with pytest.raises(StoreError, match="links outside the store"):
        ActivationStore(copy)


def _drop(key):
    def edit(index):
        del index[key]
    return edit


@pytest.mark.parametrize("raw_or_edit", [
    b"[]", b"null", b"\xff\xfe{}", b"{", b"{}",
    _drop("shards"), _drop("complete"), _drop("settings"), _drop("format"),
    lambda ix: ix["settings"].pop("texts_sha256"),
    lambda ix: ix["settings"].update(dtype="bfloat16"),
    lambda ix: ix["settings"].update(n_docs="13"),
    lambda ix: ix["settings"].update(sites="resid.0"),
    lambda ix: ix.update(complete="yes"),
    lambda ix: ix.update(shards={}),
    lambda ix: ix["shards"][1].update(tokens="16"),
    lambda ix: ix["shards"][1].update(sha256=None),
    lambda ix: ix["shards"][1].pop("bytes"),
    lambda ix: ix["shards"][1].update(docs=[5, 8]),
    lambda ix: ix["shards"].pop(1),
    lambda ix: ix["shards"].append(ix["shards"][0]),
    lambda ix: ix["widths"].update({"resid.0": -1}),
    lambda ix: ix["shards"].__setitem__(0, None),
])
def test_malformed_index_is_a_store_error(copy, raw_or_edit):
    if isinstance(raw_or_edit, bytes):
        (copy / "index.json").write_bytes(raw_or_edit)
    else:
        index = _index(copy)
        raw_or_edit(index)
        _set_index(copy, index)
    with pytest.raises(StoreError, match="index.json"):
        ActivationStore(copy)


def _rewrite_header(path, edit):
    """Edit a shard's safetensors header in place, keeping its data."""
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * ((-len(text)) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + hlen:])


@pytest.mark.parametrize("edit, match", [
    (lambda h: h["doc"].pop("data_offsets"), "unreadable"),
    (lambda h: h["resid.0"].update(dtype="BF16"), "unreadable"),
    (lambda h: h["resid.0"].update(dtype="F64", shape=[h["resid.0"]["shape"][0],
                                                       h["resid.0"]["shape"][1] // 2]), "expects"),
    (lambda h: h.pop("token_id"), "expects"),
])
@pytest.mark.parametrize("verify", [True, False])
def test_bad_shard_header_is_a_store_error(copy, edit, match, verify):
    path = copy / "shard-00001.safetensors"
    _rewrite_header(path, edit)
    index = _index(copy)  # a matching checksum, so the header itself is what is checked
    index["shards"][1].update(bytes=path.stat().st_size, sha256=bd.storage.sha256(path))
    _set_index(copy, index)
    with pytest.raises(StoreError, match=f"shard-00001.safetensors .*{match}"):
        ActivationStore(copy, verify=verify).load("resid.0")
