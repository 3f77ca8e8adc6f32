"""Top activating contexts: where in real text each catalog feature's score is highest.

Computed once per catalog by running the model over a corpus (the packaged Wikipedia summaries
by default; any ``datasets`` text dataset or a file otherwise, see
:mod:`bagofdims.serve.corpus`) and stored beside the catalog as
``contexts.json`` inside its directory. Per feature it keeps the ``top`` best positions, one per
document, each with a few tokens around it. Each text follows the catalog's start token, as the
cache's tokens did, and that start token is never a candidate.

The pass saves a checkpoint (``contexts.partial.json``) after every batch of documents and
resumes from it; a resume with other settings (catalog, corpus, sizes) is refused. Both files are
written atomically and carry a sha256 of their content, checked on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from bagofdims.devices import input_device
from bagofdims.errors import CatalogError, InvalidArgument, ResumeError
from bagofdims.storage import atomic_write_bytes

log = logging.getLogger(__name__)

FILE = "contexts.json"
PARTIAL = "contexts.partial.json"


@dataclass
class ContextSettings:
    """What a contexts pass depends on (a resume must match all of it)."""

    catalog: str  # sha256 of the catalog's catalog.json
    corpus: str  # sha256 of the texts
    n_docs: int
    source: str = "texts"  # the corpus as named (Corpus.key): another name is another corpus
    max_tokens: int = 128
    top: int = 5
    left: int = 12  # tokens shown before the position
    right: int = 4  # and after


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _write(path: Path, body: dict) -> None:
    atomic_write_bytes(path, json.dumps({**body, "sha256": _sha(body)}).encode())


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CatalogError(f"{path} is unreadable ({err}); delete it and rerun to recompute.") from err
    body = {k: v for k, v in data.items() if k != "sha256"} if isinstance(data, dict) else {}
    if not body or data.get("sha256") != _sha(body):
        raise CatalogError(f"{path} was edited or damaged (checksum differs); delete it and rerun.")
    return body


def catalog_digest(catalog_dir) -> str:
    from bagofdims.storage import sha256

    return sha256(Path(catalog_dir) / "catalog.json")


def load_contexts(catalog_dir) -> dict | None:
    """``{feature index (str): [context, ...]}`` if computed for this very catalog, else None."""
    path = Path(catalog_dir) / FILE
    if not path.exists():
        return None
    body = _read(path)
    if body["settings"]["catalog"] != catalog_digest(catalog_dir):
        log.warning("%s belongs to an earlier version of the catalog; recompute it.", path)
        return None
    return body["contexts"]


def stored_settings(catalog_dir) -> dict | None:
    """The settings the stored contexts were computed with (None: none stored)."""
    path = Path(catalog_dir) / FILE
    return _read(path)["settings"] if path.exists() else None


def compute_contexts(cat, model, tok, texts: list[str], max_tokens: int = 128, top: int = 5,
                     batch_size: int = 8, progress: bool = True, source: str = "texts") -> dict:
    """Compute (or resume) the contexts of ``cat`` (saved at ``cat.path``) and return them.

    ``source`` names the corpus (``Corpus.key``); it is part of the settings a resume must match.
    """
    from bagofdims.capture import Capture
    from bagofdims.inputs import TextStart
    from bagofdims.signs import bits

    if cat.path is None:
        raise InvalidArgument("Save the catalog first: contexts are stored beside it.")
    cat.check_model(model)
    settings = ContextSettings(catalog_digest(cat.path), _sha(texts), len(texts), str(source),
                               max_tokens, top)
    final, partial = cat.path / FILE, cat.path / PARTIAL
    if final.exists():
        done = load_contexts(cat.path)
        if done is not None and _read(final)["settings"] == asdict(settings):
            return done
    n_feat = len(cat.features)
    best = torch.full((n_feat, top), float("-inf"))
    where = torch.full((n_feat, top, 2), -1, dtype=torch.int64)  # (doc, position)
    start = 0
    if partial.exists():
        state = _read(partial)
        if state["settings"] != asdict(settings):
            raise ResumeError(f"{partial} was made with other settings ({state['settings']}); "
                              "delete it to start over, or rerun with the same settings.")
        start = state["next_doc"]
        best, where = torch.tensor(state["best"]), torch.tensor(state["where"])
    begin = TextStart(tok, cat.meta.bos_id)
    encoded = [begin(tok(t)["input_ids"], max_tokens) for t in texts]
    by_site = {s: [f.index for f in cat.at(s)] for s in cat.sites}
    mats = {s: bits.feature_matrix([(cat.features[i].dims, cat.features[i].signs) for i in ix],
                                   cat.features[ix[0]].width or 1) for s, ix in by_site.items() if ix}
    device = input_device(model)
    bar = tqdm(total=len(texts), initial=start, desc="contexts", unit="doc", disable=not progress)
    for b0 in range(start, len(texts), batch_size):
        chunk = encoded[b0:b0 + batch_size]
        length = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), length), tok.pad_token_id or 0, dtype=torch.int64)
        valid = torch.zeros(len(chunk), length, dtype=torch.bool)
        for r, (row, lead) in enumerate(chunk):
            ids[r, :len(row)] = torch.tensor(row)
            valid[r, lead:len(row)] = True
        mask = (torch.arange(length)[None] < torch.tensor([len(r) for r, _ in chunk])[:, None]).long()
        with torch.no_grad(), Capture(model, list(mats), stop=True) as cap:
            cap.run(input_ids=ids.to(device), attention_mask=mask.to(device))
        for site, w in mats.items():
            s = bits.feature_scores(cap[site].float().cpu().reshape(-1, w.shape[0]), w)
            s = s.reshape(len(chunk), length, -1).masked_fill(~valid[..., None], float("-inf"))
            val, pos = s.max(1)  # [docs, k]: each document's best position per feature
            ix = torch.tensor(by_site[site])
            docs = torch.arange(b0, b0 + len(chunk))[:, None].expand_as(pos)
            cand_v = torch.cat([best[ix], val.T], 1)
            cand_w = torch.cat([where[ix], torch.stack([docs, pos], -1).transpose(0, 1)], 1)
            keep = cand_v.topk(top, dim=1)  # ties: earlier documents first
            best[ix] = keep.values
            where[ix] = cand_w.gather(1, keep.indices[..., None].expand(-1, -1, 2))
        _write(partial, {"settings": asdict(settings), "next_doc": b0 + len(chunk),
                         "best": best.tolist(), "where": where.tolist()})
        bar.update(len(chunk))
    bar.close()
    contexts = {}
    for i in range(n_feat):
        rows = []
        for v, (doc, pos) in zip(best[i].tolist(), where[i].tolist()):
            if doc < 0 or v == float("-inf"):
                continue
            row = encoded[doc][0]
            rows.append({"score": v, "doc": doc, "pos": pos,
                         "left": tok.decode(row[max(encoded[doc][1], pos - settings.left):pos]),
                         "token": tok.decode(row[pos:pos + 1]),
                         "right": tok.decode(row[pos + 1:pos + 1 + settings.right])})
        contexts[str(i)] = rows
    _write(final, {"settings": asdict(settings), "contexts": contexts})
    partial.unlink(missing_ok=True)
    return contexts
