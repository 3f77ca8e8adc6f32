"""Top activating contexts (stored, checked, resumable), their corpora (packaged, ``datasets``,
files), and the export-html / serve commands."""

import json

import pytest

from bagofdims.catalog import Catalog
from bagofdims.errors import CatalogError, InvalidArgument, MissingFile, ResumeError
from bagofdims.models import load_model
from bagofdims.serve import compute_contexts, corpus_texts, load_contexts, parse_corpus
from bagofdims.serve.contexts import FILE, PARTIAL, stored_settings


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


class _Stop(Exception):
    pass


def _stop_after(monkeypatch, n: int, seen: list):
    """Make the checkpoint raise after its ``n``-th saved batch (a killed pass)."""
    from bagofdims.signs.checkpoint import Checkpoint

    real = Checkpoint.save

    def save(self, i, part):
        real(self, i, part)
        seen.append(i)
        if len(seen) == n:
            raise _Stop

    monkeypatch.setattr(Checkpoint, "save", save)


def test_resume_continues_and_refuses_other_settings(copy, model_dir, monkeypatch):
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)
    saved = []
    with monkeypatch.context() as m:
        _stop_after(m, 1, saved)
        with pytest.raises(_Stop):
            compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    assert saved == [0] and (copy / PARTIAL / "chunk-000000.safetensors").exists()
    with pytest.raises(ResumeError, match="other settings"):
        compute_contexts(cat, model, tok, TEXTS, max_tokens=12, batch_size=4, progress=False)
    with pytest.raises(ResumeError, match="batch_size"):
        compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=3, progress=False)
    saved.clear()
    with monkeypatch.context() as m:
        _stop_after(m, 99, saved)  # only records what the resume computes
        resumed = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4,
                                   progress=False)
    assert saved == [1, 2] and not (copy / PARTIAL).exists()  # batch 0 was not recomputed
    (copy / FILE).unlink()
    fresh = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    assert resumed == fresh
    # a damaged batch in the checkpoint is recomputed, not trusted
    with monkeypatch.context() as m:
        _stop_after(m, 2, [])
        (copy / FILE).unlink()
        with pytest.raises(_Stop):
            compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    part = copy / PARTIAL / "chunk-000001.safetensors"
    raw = bytearray(part.read_bytes())
    raw[-3] ^= 0xFF
    part.write_bytes(bytes(raw))
    assert compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4,
                            progress=False) == fresh


def test_two_threads_on_one_catalog_one_is_refused(copy, model_dir, monkeypatch):
    """A second pass over the same catalog while the first is computing (another thread; an
    un-launched second process is refused the same way) fails with a clear error; the first
    finishes with the same contexts as a pass alone."""
    import threading

    from bagofdims.signs.checkpoint import Checkpoint

    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)
    alone = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    (copy / FILE).unlink()
    first_saved, go_on = threading.Event(), threading.Event()
    real = Checkpoint.save

    def save(self, i, part):
        real(self, i, part)
        if threading.current_thread().name == "first":
            first_saved.set()
            assert go_on.wait(60)

    monkeypatch.setattr(Checkpoint, "save", save)
    out = {}
    first = threading.Thread(name="first", target=lambda: out.setdefault("ctx", compute_contexts(
        cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)))
    first.start()
    try:
        assert first_saved.wait(60)
        with pytest.raises(ResumeError, match="being computed into by another"):
            compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False)
    finally:
        go_on.set()
        first.join(60)
    assert out["ctx"] == alone and load_contexts(copy) == alone
    assert not (copy / PARTIAL).exists()


def test_batch_size_does_not_change_the_contexts(copy, model_dir):
    """Batches are merged in document order with ties to the earlier document: any batch size
    gives the same contexts (scores equal to float tolerance)."""
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)
    by = {}
    for b in (1, 3, 10):
        (copy / FILE).unlink(missing_ok=True)
        by[b] = compute_contexts(cat, model, tok, TEXTS, max_tokens=16, top=4, batch_size=b,
                                 progress=False)
    for b in (3, 10):
        for i, rows in by[1].items():
            assert [(r["doc"], r["pos"]) for r in by[b][i]] == [(r["doc"], r["pos"]) for r in rows]
            assert [r["score"] for r in by[b][i]] == pytest.approx([r["score"] for r in rows])


def test_resume_refuses_another_corpus(copy, model_dir, monkeypatch):
    """The same texts named as another corpus are another corpus: the resume is refused."""
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(copy, model=model, tokenizer=tok)
    with monkeypatch.context() as m:
        _stop_after(m, 1, [])
        with pytest.raises(_Stop):
            compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False,
                             source="a.jsonl#text")
    with pytest.raises(ResumeError, match="other settings"):
        compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False,
                         source="hf:other")
    compute_contexts(cat, model, tok, TEXTS, max_tokens=16, batch_size=4, progress=False,
                     source="a.jsonl#text")
    assert stored_settings(copy)["source"] == "a.jsonl#text"


# -- corpora ---------------------------------------------------------------------------------
ROWS = [{"id": i, "text": f"w{i + 3} w{i + 4} w{i + 5}", "title": f"t{i}"} for i in range(12)]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5] + [{**ROWS[5], "text": "  "}]
                            + ROWS[6:]))
    return path


def test_corpus_from_a_jsonl_file(jsonl, tmp_path):
    texts = corpus_texts(f"{jsonl}#text", 4)
    assert texts == [r["text"] for r in ROWS[:4]]
    assert corpus_texts(f"{jsonl}#text", 7)[-1] == ROWS[7]["text"]  # the empty text is skipped
    with pytest.raises(InvalidArgument, match=r"several string columns \(text, title\).*#COLUMN"):
        corpus_texts(str(jsonl), 4)
    with pytest.raises(InvalidArgument, match="'id' is not a string column.*text, title"):
        corpus_texts(f"{jsonl}#id", 4)
    with pytest.raises(InvalidArgument, match="'body' is not a column"):
        corpus_texts(f"{jsonl}#body", 4)
    one = tmp_path / "one.jsonl"  # a single string column needs no #COLUMN
    one.write_text("".join(json.dumps({"n": i, "body": f"w{i + 3}"}) + "\n" for i in range(3)))
    assert corpus_texts(str(one), 10) == ["w3", "w4", "w5"]
    assert parse_corpus(f"{jsonl}#text").key == f"{jsonl.resolve()}#text"
    lines = tmp_path / "docs.txt"  # any other file: one text per line
    lines.write_text("w3 w4\n\n  w5 w6  \nw7\n")
    assert corpus_texts(str(lines), 5) == ["w3 w4", "w5 w6", "w7"]
    with pytest.raises(InvalidArgument, match="one text per line"):
        parse_corpus(f"{lines}#text")


def test_corpus_from_a_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"n": r["id"], "body": r["text"]} for r in ROWS])
    ds.save_to_disk(str(tmp_path / "one"))
    assert corpus_texts(str(tmp_path / "one"), 3) == [r["text"] for r in ROWS[:3]]
    datasets.DatasetDict({"train": ds, "test": ds.select(range(8, 12))}).save_to_disk(
        str(tmp_path / "both"))
    assert corpus_texts(str(tmp_path / "both"), 2) == [ROWS[0]["text"], ROWS[1]["text"]]
    assert corpus_texts(f"{tmp_path / 'both'}@test#body", 2) == [ROWS[8]["text"], ROWS[9]["text"]]
    assert corpus_texts(f"hf:{tmp_path / 'both'}@test", 1) == [ROWS[8]["text"]]
    with pytest.raises(InvalidArgument, match="has train, test"):
        corpus_texts(f"{tmp_path / 'both'}@dev", 2)
    with pytest.raises(InvalidArgument, match="without splits"):
        corpus_texts(f"{tmp_path / 'one'}@train", 2)
    datasets.Dataset.from_list([{"n": 1}]).save_to_disk(str(tmp_path / "nums"))
    with pytest.raises(InvalidArgument, match="no string column"):
        corpus_texts(str(tmp_path / "nums"), 2)


def test_hub_names_are_parsed_and_streamed(monkeypatch):
    """hf:NAME is streamed and cut at n_docs (a stand-in for the hub: no network in tests)."""
    datasets = pytest.importorskip("datasets")
    c = parse_corpus("hf:org/wiki:raw-v1@validation#text")
    assert (c.kind, c.name, c.config, c.split, c.column) == ("hub", "org/wiki", "raw-v1",
                                                             "validation", "text")
    assert c.key == "hf:org/wiki:raw-v1@validation#text"
    assert parse_corpus("hf:org/wiki").split is None
    calls, pulled = [], []

    def rows():
        for r in ROWS:
            pulled.append(r["id"])
            yield {"text": r["text"], "title": r["title"]}

    def fake_load(name, config=None, split=None, streaming=False, **kw):
        calls.append((name, config, split, streaming))
        return datasets.IterableDataset.from_generator(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    assert corpus_texts("hf:org/wiki#text", 3) == [r["text"] for r in ROWS[:3]]
    assert calls == [("org/wiki", None, "train", True)]
    assert len(pulled) <= 4  # only what n_docs needs was read
    for spec, words in [("hf:", "names no dataset"), ("hf:org/wiki#", "Nothing follows '#'"),
                        ("hf:org/wiki@#text", "Nothing follows '@'"),
                        ("no/such/file.txt", "neither wiki, bbc")]:
        with pytest.raises(InvalidArgument, match=words):
            parse_corpus(spec)

    def offline(*a, **kw):
        raise ConnectionError("Couldn't reach 'org/none' on the Hub")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(MissingFile, match="could not be opened.*Couldn't reach"):
        corpus_texts("hf:org/none", 2)


def test_export_html_computes_contexts_from_a_dataset_file(copy, model_dir, jsonl, cli, tmp_path):
    out = tmp_path / "site"
    code, _, err = cli("export-html", copy, out, "--model", model_dir, "--device", "cpu",
                       "--corpus", jsonl)  # several string columns: refused, nothing stored
    assert code == 2 and "#COLUMN" in err and not (copy / FILE).exists()
    code, stdout, err = cli("export-html", copy, out, "--model", model_dir, "--device", "cpu",
                            "--corpus", f"{jsonl}#text", "--n-docs", "6", "--max-tokens", "8")
    assert code == 0, err
    body = json.loads((copy / FILE).read_text())
    assert body["settings"]["source"] == f"{jsonl.resolve()}#text"
    assert body["settings"]["n_docs"] == 6
    page = (out / "feature" / "0.html").read_text()
    assert "<mark>" in page and f"{jsonl.name}#text</code>" in page
    code, stdout, _ = cli("export-html", copy, tmp_path / "again", "--corpus", "wiki")
    assert code == 0 and "come from" in stdout and "delete" in stdout


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
