"""Every ``bagofdims`` command on tiny models, through ``main([...])``, and the same configs
through the Python API."""

import pytest
import torch

import bagofdims as bd
import tiny
from bagofdims.cli import CacheConfig, build_cache
from bagofdims.cli.options import run_dir, safe_name
from bagofdims.models import ModelNotAvailable, load_model
from bagofdims.stream import ActivationStore


def test_capture_info_and_sites_from_a_local_dir(model_dir, tmp_path, cli):
    out = tmp_path / "cache"
    code, text, _ = cli("capture", "--model", model_dir, "--sites", "resid.*", "final",
                        "--out", out, "--device", "cpu")
    assert code == 0
    assert "resid.0..2, final" in text and "KiB (float32 states would take" in text
    cache = bd.SignCache.load(out)
    assert len(cache) == tiny.VOCAB and cache.sites == ["resid.0", "resid.1", "resid.2", "final"]
    assert not (tmp_path / "cache.partial").exists()
    code, text, _ = cli("info", out)
    assert code == 0 and "sign cache of" in text and "each after <bos> (id 1)" in text
    code, text, _ = cli("sites", "--model", model_dir)
    assert code == 0 and "neurons.0..2" in text
    code, text, _ = cli("sites", "--model", model_dir, "-v")
    assert code == 0 and "model.layers.0.mlp.down_proj" in text


def test_defaults_follow_the_model(model_dir, encoder_dir, categories_file, tmp_path,
                                   monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    assert cli("capture", "--model", model_dir, "--device", "cpu")[0] == 0
    cache = bd.SignCache.load(tmp_path / "runs" / "tiny-llama" / "cache")
    assert cache.sites == ["resid.0", "resid.1", "resid.2", "final"]  # decoder: resid.* final
    assert cli("capture", "--model", encoder_dir, "--device", "cpu")[0] == 0
    enc = bd.SignCache.load(tmp_path / "runs" / "tiny-bert" / "cache")
    assert enc.sites == ["resid.0", "resid.1", "resid.2"] and not enc.meta.bos  # encoder: no final
    code, _, _ = cli("catalog", "--model", model_dir, "--categories", categories_file,
                     "--n-anchors", "12", "-k", "8")
    assert code == 0 and (tmp_path / "runs" / "tiny-llama" / "catalog" / "catalog.json").exists()
    code, text, _ = cli("steer", "--model", model_dir, "--feature", "low", "--prompt", "w3 w4",
                        "--max-new-tokens", "3", "--device", "cpu")
    assert code == 0 and "baseline" in text and "intervened" in text


def test_catalog_without_model_names_its_directory_after_the_cache(built, categories_file,
                                                                   tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    code, text, _ = cli("catalog", "--cache", built[0], "--categories", categories_file,
                        "--n-anchors", "12", "-k", "8", "--sites", "resid.1")
    assert code == 0 and "runs/tiny-llama/catalog" in text
    assert bd.Catalog.load(tmp_path / "runs" / "tiny-llama" / "catalog").sites == ["resid.1"]


def test_model_names_become_safe_directories(tmp_path):
    assert run_dir("HuggingFaceTB/SmolLM2-135M", "cache") == "runs/HuggingFaceTB--SmolLM2-135M/cache"
    assert safe_name("smollm2") == "smollm2"
    (tmp_path / "my model").mkdir()
    assert safe_name(str(tmp_path / "my model")) == "my_model"  # a local dir: its own name
    assert "/" not in safe_name("/abs/path/that/does/not/exist")


def test_existing_cache_is_reused_only_when_it_matches(model_dir, encoder_dir, tmp_path, cli):
    out = tmp_path / "cache"
    base = ["capture", "--model", model_dir, "--out", out, "--device", "cpu"]
    assert cli(*base)[0] == 0
    code, text, _ = cli(*base)
    assert code == 0 and "reusing it" in text
    for extra, what in ((["--sites", "resid.1"], "sites"), (["--no-bos"], "start token"),
                        (["--tokens", "40"], "tokens"), (["--magnitudes"], "magnitudes")):
        code, _, err = cli(*base, *extra)
        line = err.strip().splitlines()[-1]
        assert code == 2 and line.startswith("bagofdims capture: error:"), err
        assert "other settings" in line and what in line and "--overwrite" in line
    code, _, err = cli("capture", "--model", encoder_dir, "--out", out, "--device", "cpu")
    assert code == 2 and "another model" in err and "--overwrite" in err
    assert bd.SignCache.load(out).sites == ["resid.0", "resid.1", "resid.2", "final"]  # untouched
    assert cli(*base, "--sites", "resid.1", "--tokens", "40", "--magnitudes", "--overwrite")[0] == 0
    cache = bd.SignCache.load(out)
    assert cache.sites == ["resid.1"] and len(cache) == 40 and cache.meta.magnitudes


def test_damaged_cache_in_out_is_one_line(model_dir, tmp_path, cli):
    out = tmp_path / "cache"
    assert cli("capture", "--model", model_dir, "--out", out, "--device", "cpu", "--tokens", "8")[0] == 0
    (out / "meta.json").write_text("{not json")
    code, _, err = cli("capture", "--model", model_dir, "--out", out, "--device", "cpu", "--tokens", "8")
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("bagofdims capture: error: ") and "damaged" in line
    assert "--overwrite" in line and "Traceback" not in err


def test_directory_that_is_not_a_cache_is_refused_before_the_build(model_dir, tmp_path, cli):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("mine")
    code, _, err = cli("capture", "--model", model_dir, "--out", tmp_path / "notes")
    assert code == 2 and "is not a sign cache" in err and (tmp_path / "notes" / "a.txt").exists()


def test_python_api_takes_the_same_config(model_dir, tmp_path):
    cfg = CacheConfig(model=str(model_dir), sites=["k.1", "v.1"], out=str(tmp_path / "c"),
                      tokens=10, batch_size=4, device="cpu")
    cache = build_cache(cfg)
    assert cache.sites == ["k.1", "v.1"] and len(cache) == 10
    assert torch.equal(cache.token_ids, torch.arange(10))


def test_activations_readme_line(model_dir, tmp_path, cli):
    texts = tmp_path / "docs.txt"
    texts.write_text("w3 w4 w5\n\nw6 w7\n")
    code, text, _ = cli("activations", "--model", model_dir, "--sites", "resid.1", "--texts", texts,
                        "--out", tmp_path / "acts", "--device", "cpu")
    assert code == 0 and "5 tokens" in text
    store = ActivationStore(tmp_path / "acts")
    assert store.sites == ["resid.1"] and store.n_tokens == 5
    code, _, err = cli("activations", "--model", model_dir, "--texts", tmp_path / "none.txt",
                       "--out", tmp_path / "acts2")
    assert code == 2 and "no such file" in err


def test_query_by_name_search_and_dim(built, cli):
    catalog = built[1]
    code, text, _ = cli("query", catalog, "low", "-k", "3")
    assert code == 0 and text.startswith("low  [") and "top tokens" in text
    assert len(text.splitlines()[-1].split()) == 2 + 3  # "top tokens" + 3 tokens
    code, text, _ = cli("query", catalog, "low", "--site", "resid.0")
    assert code == 0 and "dims at resid.0" in text


@pytest.mark.parametrize("site", ["resid.0", "resid.1", "resid.2"])
def test_query_found_by_search_uses_the_site_given(built, site, cli):
    # 'w45' is a member word of 'mid', not a feature name: the search hit must be read at --site
    code, text, _ = cli("query", built[1], "w45", "--site", site)
    assert code == 0 and "matches: mid" in text and f"dims at {site}" in text


def test_query_explains_a_dim(built, cli):
    code, text, _ = cli("query", built[1], "--dim", "5", "--site", "resid.1")
    assert code == 0 and text.startswith("resid.1 dim 5: positive on") and "in features:" in text


def test_unknown_model_names_the_fix(tmp_path):
    with pytest.raises(ModelNotAvailable, match="embedded model"):
        load_model("no-such-org/no-such-model-xyz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotAvailable, match="config.json"):
        load_model(str(tmp_path / "empty"))


def test_catalog_minimum_members_is_a_flag_with_a_clear_error(built, categories_file, tmp_path, cli):
    args = ("catalog", "--cache", built[0], "--categories", categories_file, "--n-anchors", "12",
            "--out", tmp_path / "cat")
    code, _, err = cli(*args, "--n-min-held-out", "40")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "12 anchors + 40 held-out" in err and "--n-min-held-out" in err
    assert cli(*args, "--n-min-held-out", "5")[0] == 0


def test_query_and_catalog_show_the_evidence(built, categories_file, tmp_path, cli):
    code, text, _ = cli("query", built[1], "low")
    assert code == 0 and "CI (held-out members)" in text and "random listed words" in text
    code, text, _ = cli("catalog", "--cache", built[0], "--categories", categories_file,
                        "--n-anchors", "12", "--out", tmp_path / "cat")
    assert code == 0 and "above it (p < 0.05)" in text
