"""Top activating contexts: where in real text each catalog feature's score is highest.

Computed once per catalog by running the model over a corpus (the packaged Wikipedia summaries
by default; any ``datasets`` text dataset or a file otherwise, see
:mod:`bagofdims.serve.corpus`) and stored beside the catalog as
``contexts.json`` inside its directory. Per feature it keeps the ``top`` best positions, one per
document, each with a few tokens around it. Each text follows the catalog's start token, as the
cache's tokens did, and that start token is never a candidate.

The pass saves each batch of documents' best positions in a checkpoint directory
(``contexts.partial/``, :class:`bagofdims.signs.checkpoint.Checkpoint`) and resumes from it; a
resume with other settings (catalog, corpus, sizes) is refused. Under ``accelerate launch`` the
batches are shared between the processes (``bagofdims contexts``). Files are written atomically
and carry a sha256 of their content, checked on load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bagofdims.devices import input_device
from bagofdims.errors import CatalogError, InvalidArgument
from bagofdims.storage import atomic_write_bytes

log = logging.getLogger(__name__)

FILE = "contexts.json"
PARTIAL = "contexts.partial"  # checkpoint directory: one file per finished batch of documents


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


@dataclass
class BatchBest:
    """One batch of documents' best positions per feature (a checkpoint chunk): ``val`` float32
    ``[features, c]`` by score, descending (ties: earlier documents first), ``where`` int64
    ``[features, c, 2]`` (document, position); ``c`` = min(top, documents in the batch)."""

    val: np.ndarray
    where: np.ndarray

    def tensors(self) -> dict[str, np.ndarray]:
        return {"val": self.val, "where": self.where}

    @classmethod
    def from_tensors(cls, arrays: dict) -> "BatchBest":
        return cls(np.array(arrays["val"]), np.array(arrays["where"]))


def _keep(val: torch.Tensor, where: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``top`` best columns per row by score; a stable sort keeps earlier columns (earlier
    documents) first among ties, so merging batch by batch equals one pass over all."""
    order = torch.sort(val, dim=1, descending=True, stable=True).indices[:, :top]
    return val.gather(1, order), where.gather(1, order[..., None].expand(-1, -1, 2))


def compute_contexts(cat, model, tok, texts: list[str], max_tokens: int = 128, top: int = 5,
                     batch_size: int = 8, progress: bool = True, source: str = "texts"
                     ) -> dict | None:
    """Compute (or resume) the contexts of ``cat`` (saved at ``cat.path``) and return them.

    ``source`` names the corpus (``Corpus.key``); it is part of the settings a resume must match.
    Under several processes (``accelerate launch``, :mod:`bagofdims.parallel`) the batches of
    documents are shared between them, each saves its own to the checkpoint directory, and the
    main process merges them in document order (the same bytes as one process) and returns the
    contexts; the other processes return None.
    """
    from bagofdims.capture import Capture
    from bagofdims.inputs import TextStart
    from bagofdims.parallel import world
    from bagofdims.signs import bits
    from bagofdims.signs.checkpoint import Checkpoint, run_chunks

    if cat.path is None:
        raise InvalidArgument("Save the catalog first: contexts are stored beside it.")
    cat.check_model(model)
    settings = ContextSettings(catalog_digest(cat.path), _sha(texts), len(texts), str(source),
                               max_tokens, top)
    here = world()
    final = cat.path / FILE

    def stored():
        if final.exists():
            done = load_contexts(cat.path)
            if done is not None and _read(final)["settings"] == asdict(settings):
                return done
        return None

    done = here.on_main(f"reading {final}", stored)
    if done is not None:
        return done if here.is_main else None
    n_feat = len(cat.features)
    begin = TextStart(tok, cat.meta.bos_id)
    encoded = [begin(tok(t)["input_ids"], max_tokens) for t in texts]
    by_site = {s: [f.index for f in cat.at(s)] for s in cat.sites}
    mats = {s: bits.feature_matrix([(cat.features[i].dims, cat.features[i].signs) for i in ix],
                                   cat.features[ix[0]].width or 1) for s, ix in by_site.items() if ix}
    device = input_device(model)
    starts = list(range(0, len(texts), batch_size))

    def batch(bi: int) -> BatchBest:
        b0 = starts[bi]
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
        c = min(top, len(chunk))
        val = torch.full((n_feat, c), float("-inf"))
        where = torch.full((n_feat, c, 2), -1, dtype=torch.int64)
        for site, w in mats.items():
            s = bits.feature_scores(cap[site].float().cpu().reshape(-1, w.shape[0]), w)
            s = s.reshape(len(chunk), length, -1).masked_fill(~valid[..., None], float("-inf"))
            v, pos = s.max(1)  # [docs, k]: each document's best position per feature
            docs = torch.arange(b0, b0 + len(chunk))[:, None].expand_as(pos)
            ix = torch.tensor(by_site[site])
            val[ix], where[ix] = _keep(v.T, torch.stack([docs, pos], -1).transpose(0, 1), c)
        return BatchBest(val.numpy(), where.numpy())

    ckpt = Checkpoint(cat.path / PARTIAL, {**asdict(settings), "batch_size": batch_size},
                      part=BatchBest)
    bar = tqdm(total=len(texts), desc="contexts", unit="doc", disable=not (progress and here.is_main))
    parts = run_chunks(ckpt, [len(encoded[b:b + batch_size]) for b in starts], batch, bar,
                       what="batches of documents")
    bar.close()
    if parts is None:  # another process than the main one: its share is saved
        return None
    best = torch.full((n_feat, top), float("-inf"))
    where = torch.full((n_feat, top, 2), -1, dtype=torch.int64)
    for part in parts:  # in document order
        best, where = _keep(torch.cat([best, torch.from_numpy(part.val)], 1),
                            torch.cat([where, torch.from_numpy(part.where)], 1), top)
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
    shutil.rmtree(cat.path / PARTIAL, ignore_errors=True)
    return contexts
