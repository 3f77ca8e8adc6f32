"""``capture --subset categories[:SET] --background N``: built, reused, refused, and reported by
``info``, ``catalog`` and ``query``."""

import pytest

import bagofdims as bd
import tiny


def test_subset_capture_catalog_query_and_info(model_dir, categories_file, tmp_path, cli):
    out, catalog = tmp_path / "cache", tmp_path / "catalog"
    base = ["capture", "--model", model_dir, "--out", out, "--device", "cpu", "--sites", "resid.1",
            "--subset", f"categories:{categories_file}", "--background", "40"]
    code, text, err = cli(*base)
    assert code == 0, err
    cache = bd.SignCache.load(out)
    sub = cache.meta.subset
    assert sub["categories"] == str(categories_file)
    assert sub["background"] == 40 and sub["seed"] == 0
    assert sub["n_members"] == 87 and len(cache) == sub["n_tokens"] < tiny.VOCAB  # w3..w89
    assert "subset" in text and "87 single-token members of 3 categories" in text
    code, text, _ = cli("info", out)
    assert code == 0 and "40 random background tokens (seed 0)" in text and "not the whole" in text
    code, text, _ = cli(*base)
    assert code == 0 and "reusing it" in text
    code, _, err = cli(*base, "--background-seed", "1")
    assert code == 2 and "other settings" in err and "tokens" in err and "seed 1" in err
    code, text, err = cli("catalog", "--cache", out, "--out", catalog, "--categories",
                          categories_file, "--n-anchors", "12", "-k", "8", "--sites", "resid.1")
    assert code == 0, err
    assert "subset cache: " in text and "background sample: 40 random vocabulary tokens" in text
    assert bd.Catalog.load(catalog).meta.subset["token_null"].startswith("the background sample")
    code, text, _ = cli("query", catalog, "low")
    assert code == 0 and "subset cache: " in text and f"(of the {len(cache)} cached)" in text
    code, text, _ = cli("query", catalog, "--dim", "3", "--site", "resid.1")
    assert code == 0 and f"of the {len(cache)} cached subset tokens" in text


@pytest.mark.parametrize("extra, match", [
    (["--background", "5"], "go with --subset"),
    (["--subset", "words"], "categories:broad"),
    (["--subset", "categories:"], "categories:broad"),
    (["--subset", "categories", "--tokens", "5"], "contradicts"),
    (["--subset", "categories", "--background", "-1"], ">= 0"),
    (["--subset", "categories:broad", "--background", "1000"], "more than the 96-token"),
])
def test_subset_flags_are_checked(model_dir, tmp_path, cli, extra, match):
    code, _, err = cli("capture", "--model", model_dir, "--out", tmp_path / "c", "--device", "cpu",
                       *extra)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("bagofdims capture: error:") and match in line, err
    assert not (tmp_path / "c").exists()
