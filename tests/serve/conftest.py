"""A live browser over the tiny Llama's catalog (built through the CLI), served on loopback."""

from types import SimpleNamespace

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from cli.conftest import built, categories_file, model_dir  # noqa: E402,F401  (shared fixtures)


@pytest.fixture(scope="session")
def live(built, model_dir, tmp_path_factory):
    """``(server, catalog dir, texts)``: the tiny catalog with contexts, served with its model
    (``server.url``; ``server.app``, whose ``state.model_lock`` guards the model)."""
    from bagofdims.catalog import Catalog
    from bagofdims.models import load_model
    from bagofdims.serve import CatalogViews, compute_contexts, create_app
    from bagofdims.serve.server import running

    _, catalog = built
    model, tok = load_model(str(model_dir), device="cpu")
    cat = Catalog.load(catalog, model=model, tokenizer=tok)
    texts = [" ".join(f"w{(7 * d + 3 * i) % 90 + 3}" for i in range(20)) for d in range(12)]
    contexts = compute_contexts(cat, model, tok, texts, max_tokens=24, top=3, batch_size=4,
                                progress=False)
    app = create_app(CatalogViews(cat, contexts), model, tok)
    with running(app) as url:
        yield SimpleNamespace(url=url, app=app), catalog, texts
