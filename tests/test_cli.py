import pytest

import bagofdims as bd
from bagofdims.cli.main import CacheConfig, main
from bagofdims.config import add_arguments, from_args
from bagofdims.models import ModelNotAvailable, load_model

import tiny


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama")
    tiny.make("llama").save_pretrained(path)
    tiny.tokenizer().save_pretrained(path)
    return path


def test_capture_info_and_sites_from_a_local_dir(model_dir, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["capture", "--model", str(model_dir), "--sites", "resid.*", "final",
                 "--out", str(out), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "resid.0..2, final" in text and "KiB (float32 states would take" in text
    cache = bd.SignCache.load(out)
    assert len(cache) == tiny.VOCAB and cache.sites == ["resid.0", "resid.1", "resid.2", "final"]
    assert not (tmp_path / "cache.partial").exists()
    assert main(["info", str(out)]) == 0
    assert "sign cache of" in capsys.readouterr().out
    assert main(["sites", "--model", str(model_dir)]) == 0
    assert "neurons.0..2" in capsys.readouterr().out


def test_bad_site_is_a_clean_error(model_dir, tmp_path, capsys):
    code = main(["capture", "--model", str(model_dir), "--sites", "resid.9", "--out",
                 str(tmp_path / "x"), "--device", "cpu"])
    assert code == 2 and "Valid sites" in capsys.readouterr().err


def test_config_dataclass_is_the_cli():
    import argparse

    p = argparse.ArgumentParser()
    add_arguments(p, CacheConfig)
    cfg = from_args(CacheConfig, p.parse_args(["--sites", "k.1", "v.1", "--bos", "--batch-size", "7"]))
    assert cfg.sites == ["k.1", "v.1"] and cfg.bos is True and cfg.batch_size == 7
    assert from_args(CacheConfig, p.parse_args([])) == CacheConfig()
    cfg = from_args(CacheConfig, p.parse_args(["--bos-token", "<|endoftext|>"]))
    assert cfg.bos is None and cfg.bos_token == "<|endoftext|>"


def test_unknown_model_names_the_fix(tmp_path):
    with pytest.raises(ModelNotAvailable, match="embedded model"):
        load_model("no-such-org/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="config.json"):
        load_model(str(tmp_path / "empty"))
