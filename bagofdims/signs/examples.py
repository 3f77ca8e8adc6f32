"""Sign caches over examples (images, audio clips, texts) instead of vocabulary tokens.

>>> cache = SignCache.build_inputs(model, processor, images, sites=["resid.*"], pool="mean",
...                                labels=names, groups=sources)

One forward pass per batch of examples, all sites in one pass (early stop after the last), each
site's ``[batch, positions, width]`` states pooled to one vector per example by a rule of
:mod:`bagofdims.signs.pooling`, then packed one bit per dimension exactly as a token cache
(:func:`bagofdims.signs.bits.pack_signs`). The result is a :class:`SignCache` in the one cache
format: row ``i`` is example ``i`` (``token_ids`` = ``0..n-1``), ``meta.inputs == "examples"``,
with the labels, groups, pooling rule, processor fingerprint and a sha256 over every example's
bytes in ``meta.json``. Saving, loading, checksums and resuming (``checkpoint=``) are those of a
token cache; a resume with other examples, pooling or processing is refused.

``examples``: a list (or tuple) of what ``processor`` reads (strings for a tokenizer, numpy arrays
for an image processor or a feature extractor), a numpy array whose first axis runs over the
examples, or a ``datasets.Dataset`` with ``column=`` naming the input column (images are turned
into arrays, audio columns into their sample arrays). A multimodal ``ProcessorMixin`` is reduced
to the part that reads the examples (its tokenizer for strings, else its image processor or
feature extractor). Images are best given as ``uint8`` arrays: HF image processors rescale by
1/255 whatever the dtype unless told ``processor_kwargs={"do_rescale": False}``. A Dataset is read
twice (once to hash the examples, once to run them).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from bagofdims.capture import Capture, no_cache_kwargs
from bagofdims.checks import positive_int
from bagofdims.devices import input_device
from bagofdims.errors import CacheError, InvalidArgument, InvalidType, NumericalError
from bagofdims.models import fingerprint_info, model_name, tokenizer_fingerprint, weight_fingerprint
from bagofdims.signs import bits
from bagofdims.signs.checkpoint import Checkpoint, Chunk, now, run_chunks
from bagofdims.signs.meta import CacheMeta
from bagofdims.signs.pooling import Pool, parse_pool
from bagofdims.signs.pooling import pool_states
from bagofdims.sites import resolve

log = logging.getLogger(__name__)


# -- processors --------------------------------------------------------------------------------
def _is_tokenizer(proc) -> bool:
    from transformers import PreTrainedTokenizerBase

    return isinstance(proc, PreTrainedTokenizerBase)


def reader_of(processor, example):
    """The part of ``processor`` that reads ``example`` (a multimodal processor holds several)."""
    if _is_tokenizer(processor) or not hasattr(processor, "tokenizer") and not any(
            hasattr(processor, a) for a in ("image_processor", "feature_extractor")):
        return processor
    if isinstance(example, str):
        return processor.tokenizer
    for attr in ("image_processor", "feature_extractor"):
        part = getattr(processor, attr, None)
        if part is not None:
            return part
    raise InvalidType(f"{type(processor).__name__} has no image processor or feature extractor "
                      "for non-text examples; pass the one that reads them.")


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.generic,)):
        return x.item()
    return repr(x)


def processor_fingerprint(processor) -> str:
    """Fingerprint of a processor: its vocabulary for a tokenizer (as
    :func:`bagofdims.models.tokenizer_fingerprint`), else a sha256 of its ``to_dict()`` JSON."""
    if _is_tokenizer(processor):
        return tokenizer_fingerprint(processor)
    if not hasattr(processor, "to_dict"):
        raise InvalidType(f"{type(processor).__name__} is not a Hugging Face processor (no "
                          "to_dict()); pass a tokenizer, image processor or feature extractor.")
    body = json.dumps(processor.to_dict(), sort_keys=True, default=_jsonable, ensure_ascii=True)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def processor_settings(reader, given: dict | None) -> dict:
    """The keyword arguments each batch is processed with (recorded in the cache)."""
    kwargs = dict(given or {})
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise InvalidArgument(f"processor_kwargs must be JSON values (they are recorded in the "
                              f"cache): {err}.") from None
    params = {} if _is_tokenizer(reader) else inspect.signature(reader.__call__).parameters
    if _is_tokenizer(reader) or "padding" in params and params["padding"].default in (False, None):
        kwargs.setdefault("padding", True)  # examples of several lengths in one batch
    if "return_attention_mask" in params:
        kwargs.setdefault("return_attention_mask", True)  # mean pooling skips padded frames
    return kwargs


def encode(reader, batch: list, kwargs: dict, model) -> tuple[dict, torch.Tensor | None]:
    """Model inputs for a batch of examples and their attention mask (``None``: none given)."""
    out = reader(batch, return_tensors="pt", **kwargs)
    params = inspect.signature(model.forward).parameters
    device = input_device(model)
    dtype = next(model.parameters()).dtype
    inputs = {}
    for k, v in out.items():
        if k in params and isinstance(v, torch.Tensor):
            inputs[k] = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
    if not inputs:
        raise InvalidArgument(f"The processor gave {sorted(out)}, none of which {type(model).__name__}"
                              ".forward takes; pass the processor of this model.")
    mask = out.get("attention_mask")
    return {**inputs, **no_cache_kwargs(model)}, mask


def pooled_batch(model, reader, batch: list, kwargs: dict, cap: Capture, sites: list[str],
                 pool: Pool) -> dict[str, torch.Tensor]:
    """``site -> float32 [len(batch), width]``: one forward of a batch, pooled at every site."""
    inputs, mask = encode(reader, batch, kwargs, model)
    cap.run(**inputs)
    out = {}
    for site in sites:
        value = cap[site]
        if not torch.isfinite(value).all():
            raise NumericalError(f"NaN or infinity at site {site}; the model's weights or dtype are "
                                 "broken (try dtype=torch.float32).")
        out[site] = pool_states(value, _site_mask(model, mask, value.shape[1]), pool)
    return out


def _site_mask(model, mask, length: int):
    """The input mask mapped onto a site's positions by the model's own rule where it has one
    (audio encoders: samples or frames -> positions); else left to the pooling's whole-factor rule."""
    lengths = getattr(model, "_get_feat_extract_output_lengths", None)
    if mask is None or mask.shape[1] == length or lengths is None:
        return mask
    n = torch.as_tensor(lengths(mask.sum(1).long())).to(mask.device)
    if int(n.max()) > length:
        return mask
    return torch.arange(length, device=mask.device)[None, :] < n[:, None]


# -- examples ----------------------------------------------------------------------------------
class ExampleSet:
    """A sized, sliceable view of the examples (a list, an array or a dataset column)."""

    def __init__(self, examples, column: str | None = None):
        self.dataset = None
        if _is_dataset(examples):
            if column is None or column not in examples.column_names:
                raise InvalidArgument(f"A datasets.Dataset needs column= naming its input column, "
                                      f"one of {examples.column_names}.")
            self.dataset, self.column = examples, column
            self.n = len(examples)
        elif column is not None:
            raise InvalidArgument("column= is for a datasets.Dataset; a list holds the inputs itself.")
        elif isinstance(examples, np.ndarray) and examples.ndim >= 1:
            self.items, self.n = list(examples), len(examples)
        elif isinstance(examples, (list, tuple)):
            self.items, self.n = list(examples), len(examples)
        else:
            raise InvalidType(f"examples is a {type(examples).__name__}: pass a list of inputs, an "
                              "array whose first axis runs over them, or a Dataset with column=.")
        if self.n == 0:
            raise InvalidArgument("examples is empty: pass at least one input.")

    def __len__(self) -> int:
        return self.n

    def get(self, start: int, stop: int) -> list:
        raw = self.dataset[start:stop][self.column] if self.dataset is not None else \
            self.items[start:stop]
        return [_as_input(x) for x in raw]

    def sha256(self, step: int = 256) -> str:
        """Of every example's type, shape, dtype and bytes, in order (the resume key)."""
        h = hashlib.sha256(b"bagofdims-examples-v1\n")
        for start in range(0, self.n, step):
            for x in self.get(start, min(start + step, self.n)):
                if isinstance(x, str):
                    raw = x.encode("utf-8")
                    h.update(f"str\0{len(raw)}\0".encode() + raw)
                else:
                    a = np.ascontiguousarray(x)
                    h.update(f"array\0{a.dtype.str}\0{a.shape}\0".encode() + a.tobytes())
        return h.hexdigest()


def _is_dataset(x) -> bool:
    return type(x).__name__ == "Dataset" and hasattr(x, "column_names")


def _as_input(x):
    """A processor input from a list or dataset entry (text, array, image or audio record)."""
    if isinstance(x, (str, np.ndarray)):
        return x
    if isinstance(x, dict) and "array" in x:  # a datasets Audio record
        return np.asarray(x["array"])
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "get_all_samples"):  # a torchcodec AudioDecoder (datasets >= 4)
        return x.get_all_samples().data.mean(0).numpy()
    if type(x).__module__.startswith("PIL.") or isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise InvalidType(f"An example is a {type(x).__name__}; pass strings, numpy arrays, PIL "
                      "images or audio records.")


def _strings(values, n: int, what: str, allow_none: bool, examples) -> list | None:
    """Per-example labels or groups as strings; a column name reads them from the dataset."""
    if values is None:
        return None
    if isinstance(values, str):
        if not _is_dataset(examples) or values not in examples.column_names:
            raise InvalidArgument(f"{what}={values!r}: a string names a column of a Dataset; pass "
                                  "one value per example instead.")
        feature = examples.features[values]
        values = [feature.int2str(v) if hasattr(feature, "int2str") else v
                  for v in examples[values]]
    values = list(values)
    if len(values) != n:
        raise InvalidArgument(f"{what} has {len(values)} entries for {n} examples; give one per example.")
    out = []
    for v in values:
        if v is None and allow_none:
            out.append(None)
        elif isinstance(v, (str, int, np.integer)) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise InvalidType(f"{what} holds {v!r}; use strings (or ints){' or None' * allow_none}.")
    return out


# -- build -------------------------------------------------------------------------------------
def build_inputs(cls, model, processor, examples, sites=("resid.*",), pool="mean", labels=None,
                 groups=None, column: str | None = None, batch_size: int = 32,
                 magnitudes: bool = False, checkpoint=None, chunk_size: int = 1024,
                 processor_kwargs: dict | None = None, progress: bool = True):
    """Build a :class:`SignCache` (``cls``) over examples; see the module docstring.

    ``pool``: a rule of :mod:`bagofdims.signs.pooling`. ``labels``: one label per example
    (``None`` for unlabelled) or, for a Dataset, a column name (class labels are turned into
    their names); ``groups``: one group per example (e.g. the spoken word, so every voice of it
    lands on one side of a split). ``processor_kwargs``: passed to the processor with every
    batch (tokenizers pad; feature extractors are asked for an attention mask unless told
    otherwise), e.g. ``{"sampling_rate": 16000}``.
    """
    data = ExampleSet(examples, column)
    n = len(data)
    rule = parse_pool(pool)
    positive_int(batch_size, "batch_size")
    positive_int(chunk_size, "chunk_size")
    if chunk_size % batch_size:
        chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
    label_list = _strings(labels, n, "labels", True, examples)
    group_list = _strings(groups, n, "groups", False, examples)
    resolved = resolve(model, sites)
    reader = reader_of(processor, data.get(0, 1)[0])
    kwargs = processor_settings(reader, processor_kwargs)
    ids = np.arange(n, dtype=np.int64)
    settings = dict(
        model=model_name(model), weights=weight_fingerprint(model),
        tokenizer=processor_fingerprint(reader), vocab_size=n, full_vocab=True, n_tokens=n,
        bos=False, bos_id=None, bos_token=None, bos_rule="off",
        dtype=str(next(model.parameters()).dtype).replace("torch.", ""), magnitudes=magnitudes,
        batch_size=batch_size, chunk_size=chunk_size,
        tokens_sha256=hashlib.sha256(ids.tobytes()).hexdigest()[:16],
        weights_hashed=fingerprint_info(model), inputs="examples", pool=rule.name,
        example_sha256=data.sha256(), processor_kwargs=kwargs)
    t0 = time.perf_counter()
    key = dict(settings, sites=[s.name for s in resolved])
    ckpt = Checkpoint(checkpoint, key) if checkpoint is not None else None
    parts: list[Chunk] = []
    bar = tqdm(total=n, desc=f"sign cache {settings['model']}", unit="ex", disable=not progress)
    names = [s.name for s in resolved]
    starts = list(range(0, n, chunk_size))

    def chunk(ci: int) -> Chunk:
        start = starts[ci]
        return _run_chunk(model, reader, data, start, min(start + chunk_size, n), names, rule,
                          kwargs, batch_size, magnitudes, bar)

    # several processes: each computes its share, the main one assembles (the others get None)
    parts = run_chunks(ckpt, [min(chunk_size, n - s) for s in starts], chunk, bar)
    bar.close()
    if parts is None:
        return None
    signs = {s: np.concatenate([p.signs[s] for p in parts]) for s in names}
    signs["_token_ids"] = ids
    mags = {s: np.concatenate([p.mags[s] for p in parts]) for s in names} if magnitudes else None
    meta = CacheMeta(**settings, sites={s: parts[0].widths[s] for s in names},
                     labels=label_list, groups=group_list,
                     created=ckpt.created if ckpt else now(),
                     build_seconds=round(time.perf_counter() - t0, 1))
    meta.validate("the example cache being built")
    cache = cls(meta, signs, mags)
    if ckpt:
        cache._checkpoint = ckpt.path
    return cache


def _run_chunk(model, reader, data: ExampleSet, start: int, stop: int, sites: list[str],
               pool: Pool, kwargs: dict, batch_size: int, magnitudes: bool, bar) -> Chunk:
    signs: dict[str, list] = {s: [] for s in sites}
    mags: dict[str, list] = {s: [] for s in sites} if magnitudes else {}
    widths: dict[str, int] = {}
    with torch.inference_mode(), Capture(model, sites, stop=True) as cap:
        for b in range(start, stop, batch_size):
            batch = data.get(b, min(b + batch_size, stop))
            for site, x in pooled_batch(model, reader, batch, kwargs, cap, sites, pool).items():
                signs[site].append(bits.pack_signs(x).cpu().numpy())
                widths[site] = x.shape[-1]
                if magnitudes:
                    mags[site].append(x.abs().half().cpu().numpy())
            bar.update(len(batch))
    return Chunk({k: np.concatenate(v) for k, v in signs.items()},
                 {k: np.concatenate(v) for k, v in mags.items()}, widths)


def check_processor(meta: CacheMeta, processor, example) -> object:
    """The part of ``processor`` reading ``example``; raise unless it is the cache's processor."""
    reader = reader_of(processor, example)
    if processor_fingerprint(reader) != meta.tokenizer:
        raise CacheError(f"The processor given is not the one the examples of model "
                         f"'{meta.model}' were cached with; pass that processor.")
    return reader
