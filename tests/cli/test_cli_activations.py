"""``bagofdims activations --texts SRC``: a text file, a data file, a save_to_disk folder or hf:NAME
(streamed) give the same store for the same texts."""

import pytest

from bagofdims.stream import ActivationStore

datasets = pytest.importorskip("datasets")

TEXTS = [f"w{3 + i} w{4 + i} w{5 + 2 * i}" for i in range(12)]


def _store(cli, model_dir, src, out, *extra):
    code, text, err = cli("activations", "--model", model_dir, "--sites", "resid.1", "--texts",
                          src, "--out", out, "--device", "cpu", "--batch-size", "4",
                          "--shard-tokens", "8", *extra)
    assert code == 0, err
    return ActivationStore(out)


def test_datasets_give_the_store_of_the_same_lines(model_dir, tmp_path, cli):
    lines = tmp_path / "docs.txt"
    lines.write_text("\n".join(TEXTS[:10]) + "\n")
    ref = _store(cli, model_dir, lines, tmp_path / "ref")
    ds = datasets.Dataset.from_dict({"text": TEXTS, "n": list(range(12))})
    ds.save_to_disk(tmp_path / "saved")
    ds.to_parquet(tmp_path / "docs.parquet")
    (tmp_path / "folder").mkdir()
    ds.to_json(tmp_path / "folder" / "part.jsonl")
    for name, src in [("saved", tmp_path / "saved"), ("parquet", tmp_path / "docs.parquet"),
                      ("hub", f"hf:{tmp_path / 'folder'}#text")]:  # hf:FOLDER of data files
        store = _store(cli, model_dir, src, tmp_path / f"acts-{name}", "--limit", "10")
        assert store.n_docs == 10 and store.n_shards == ref.n_shards > 1
        for i in range(ref.n_shards):
            assert (tmp_path / f"acts-{name}" / f"shard-{i:05d}.safetensors").read_bytes() == \
                (tmp_path / "ref" / f"shard-{i:05d}.safetensors").read_bytes(), name


def test_a_streamed_dataset_needs_a_limit_and_a_bad_column_is_named(model_dir, tmp_path, cli):
    (tmp_path / "folder").mkdir()
    datasets.Dataset.from_dict({"text": TEXTS}).to_json(tmp_path / "folder" / "part.jsonl")
    code, _, err = cli("activations", "--model", model_dir, "--texts", f"hf:{tmp_path / 'folder'}",
                       "--out", tmp_path / "a")
    assert code == 2 and "--limit N" in err and "--corpus" not in err
    code, _, err = cli("activations", "--model", model_dir, "--texts", f"{tmp_path}/x.parquet#body",
                       "--out", tmp_path / "b")
    assert code == 2 and "--texts" in err and "--corpus" not in err
    code, _, err = cli("activations", "--model", model_dir, "--dataset", tmp_path / "nothing",
                       "--out", tmp_path / "c")
    assert code == 2 and "no such file" in err
