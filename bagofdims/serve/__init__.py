"""The browser: feature, dim, reader and live steering pages over a catalog, and a static export.

>>> from bagofdims.serve import CatalogViews, create_app, export_site
>>> app = create_app(CatalogViews(cat), model=model, tokenizer=tok)   # an ASGI app (uvicorn)
>>> export_site(CatalogViews(cat), "out/site")                        # plain HTML files
"""

from bagofdims.serve.contexts import compute_contexts, load_contexts
from bagofdims.serve.corpus import Corpus, corpus_texts, parse_corpus
from bagofdims.serve.export import export_site
from bagofdims.serve.server import create_app
from bagofdims.serve.views import CatalogViews

__all__ = ["CatalogViews", "Corpus", "compute_contexts", "corpus_texts", "create_app",
           "export_site", "load_contexts", "parse_corpus"]
