import numpy as np
import torch

from superposition.corpus import FORCED_WORDS, tokenize
from superposition.data import BowsData, DataConfig, build_vocab, lines_matrix, make_windows, rows_to_batch, window_matrix

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
    assert train.shape[0] == 15 * 3 - 4 + 1  # 45 lines, window 4, stride 1
    monkeypatch.setattr("superposition.data.load_corpus", lambda name: docs)
    from superposition.data import build_data
    build_data(cfg)
    data = BowsData(cfg.out)
    assert (data.split("train") != train).nnz == 0 and data.vocab == vocab
    b = rows_to_batch(data.split("train"), np.array([3, 0]))
    assert torch.equal(b.dense(len(vocab)), torch.from_numpy(train[[3, 0]].toarray()))
    assert data.meta["train"]["windows"] == train.shape[0]
