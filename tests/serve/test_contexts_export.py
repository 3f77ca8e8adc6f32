"""Top activating contexts (stored, checked, resumable) and the export-html / serve commands."""

import json

import pytest

from bagofdims.catalog import Catalog
from bagofdims.errors import CatalogError, ResumeError
from bagofdims.models import load_model
from bagofdims.serve import compute_contexts, load_contexts
from bagofdims.serve.contexts import FILE, PARTIAL


@pytest.fixture
def copy(built, tmp_path):
    import shutil

    _, catalog = built
    out = tmp_path / "catalog"
    shutil.copytree(catalog, out)
    (out / FILE).unlink(missing_ok=True)
    return out


TEXTS = [" ".join(f"w{(5 * d + 2 * i) % 90 + 3}" for i in range(15)) for d in range(10)]


def test_contexts_are_best_positions_and_stored(copy, model_dir):
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)
    ctx = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, top=3, batch_size=4,
                           progress=False)
    assert set(ctx) == {str(i) for i in range(len(cat))}
    for rows in ctx.values():
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True) and len(rows) == 3
        assert len({r["doc"] for r in rows}) == 3  # one position per document
        assert all(r["token"].strip() == TEXTS[r["doc"]].split()[r["pos"] - 1] for r in rows)
    assert load_contexts(copy) == ctx and not (copy / PARTIAL).exists()
    # the stored scores are the feature's real score at that position
    f, r = cat.features[0], ctx["0"][0]
    import torch
    from bagofdims.capture import Capture
    ids = torch.tensor([[1] + tok(TEXTS[r["doc"]])["input_ids"]])
    with torch.no_grad(), Capture(model, [f.site]) as cap:
        model(input_ids=ids)
    assert f.score(cap[f.site][0, r["pos"]]).item() == pytest.approx(r["score"])


def test_damaged_contexts_are_refused(copy, model_dir):
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)
    compute_contexts(cat, model, tok, TEXTS[:4], max_tokens=16, progress=False)
    data = json.loads((copy / FILE).read_text())
    data["contexts"]["0"][0]["score"] = 9.0
    (copy / FILE).write_text(json.dumps(data))
    with pytest.raises(CatalogError, match="edited or damaged"):
        load_contexts(copy)


def test_resume_continues_and_refuses_other_settings(copy, model_dir):
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)

    class Stop(Exception):
        pass

    import bagofdims.serve.contexts as mod
    real, calls = mod._write, []

    def flaky(path, body):  # dies after the first checkpoint
        real(path, body)
        calls.append(body.get("next_doc"))
        if len(calls) == 1:
            raise Stop

    mod._write = flaky
    try:
        with pytest.raises(Stop):
            compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    finally:
        mod._write = real
    assert json.loads((copy / PARTIAL).read_text())["next_doc"] == 4
    with pytest.raises(ResumeError, match="other settings"):
        compute_contexts(cat, model, tok, TEXTS, max_tokens=12, batch_size=4, progress=False)
    resumed = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4,
                               progress=False)
    (copy / FILE).unlink()
    fresh = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    assert resumed == fresh


def test_export_html_command(built, cli, tmp_path):
    _, catalog = built
    out = tmp_path / "site"
    code, stdout, _ = cli("export-html", catalog, out)
    assert code == 0 and "index.html" in stdout
    assert (out / "index.html").exists() and (out / "feature" / "0.html").exists()
    assert (out / "static" / "style.css").exists()
    dims = list((out / "dim").rglob("*.html"))
    assert dims and 'href="../../feature/' in dims[0].read_text()
    code, _, err = cli("export-html", catalog, out)
    assert code == 2 and "--overwrite" in err
    code, _, err = cli("export-html", tmp_path / "nothing", tmp_path / "x")
    assert code == 2 and "not a catalog" in err


def test_serve_command_checks_before_starting(built, cli):
    _, catalog = built
    code, out, _ = cli("serve", "--help")
    assert "--model" in out and "127.0.0.1" in out
    code, _, err = cli("serve", catalog, "--port", "0")
    assert code == 2 and "--port" in err
    code, _, err = cli("serve", catalog, "--n-docs", "0")
    assert code == 2 and "--n-docs" in err


@pytest.fixture
def cli(capsys):
    from bagofdims.cli.main import main

    def run(*argv):
        capsys.readouterr()
        try:
            code = main([str(a) for a in argv])
        except SystemExit as e:
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err

    return run
