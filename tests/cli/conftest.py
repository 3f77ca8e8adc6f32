"""Tiny saved models, a sign cache and a catalog shared by the command-line tests."""

import json

import pytest

import tiny
from bagofdims.cli.main import main

CATEGORIES = {"low": [f"w{i}" for i in range(3, 30)], "mid": [f"w{i}" for i in range(30, 60)],
              "high": [f"w{i}" for i in range(60, 90)]}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """A tiny Llama (decoder, has a ``final`` site) saved with its tokenizer."""
    path = tmp_path_factory.mktemp("models") / "tiny-llama"
    tiny.make("llama").save_pretrained(path)
    tiny.tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def encoder_dir(tmp_path_factory):
    """A tiny BERT (encoder: no ``final`` site, no ``generate``)."""
    path = tmp_path_factory.mktemp("models") / "tiny-bert"
    tiny.make("bert").save_pretrained(path)
    tiny.tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def categories_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "categories.json"
    path.write_text(json.dumps(CATEGORIES))
    return path


@pytest.fixture(scope="session")
def built(tmp_path_factory, model_dir, categories_file):
    """``(cache dir, catalog dir)`` of the tiny Llama, made through the command line."""
    root = tmp_path_factory.mktemp("built")
    cache, catalog = root / "cache", root / "catalog"
    assert main(["capture", "--model", str(model_dir), "--out", str(cache), "--device", "cpu"]) == 0
    assert main(["catalog", "--cache", str(cache), "--out", str(catalog), "--categories",
                 str(categories_file), "--n-anchors", "12", "-k", "8"]) == 0
    return cache, catalog


@pytest.fixture
def cli(capsys):
    """``cli(*argv)`` -> ``(exit code, stdout, stderr)`` of ``bagofdims ARGV``."""
    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run
