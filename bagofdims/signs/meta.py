"""CacheMeta: the typed, validated metadata of a sign cache (its ``meta.json``).

Every field is checked on load (type, range, consistency with the others), and ``meta.json``
carries the sha256 of its own canonical content, so a hand edit of a width, the bit order, the
start token or the vocabulary size is refused instead of read silently.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from bagofdims.errors import CacheError

FORMAT_VERSION = 2
BIT_ORDER = "little"
DATA_FILES = ("signs.safetensors", "magnitudes.safetensors")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class CacheMeta:
    """What a sign cache holds and how it was made."""

    model: str  # the name the model was loaded under
    weights: str  # fingerprint of every weight (see bagofdims.models.weight_fingerprint)
    tokenizer: str  # fingerprint of the vocabulary and special tokens
    vocab_size: int
    full_vocab: bool  # rows are ids 0..vocab_size-1 in order
    n_tokens: int
    sites: dict[str, int]  # site -> width (dims)
    bos: bool  # a start token was read before each token
    bos_id: int | None
    bos_token: str | None
    bos_rule: str  # which rule picked it (bagofdims.inputs.document_start), "given" or "off"
    dtype: str  # the model's parameter dtype during the build
    magnitudes: bool  # magnitudes.safetensors holds float16 |values|
    batch_size: int
    chunk_size: int
    tokens_sha256: str  # of the int64 token ids, first 16 hex digits
    bit_order: str = BIT_ORDER
    created: str = ""
    files: dict[str, str] = field(default_factory=dict)  # data file -> sha256
    weights_hashed: dict[str, Any] = field(default_factory=dict)  # what the fingerprint covers
    build_seconds: float | None = None
    # how the forward passes ran (bagofdims.signs.forward)
    autocast: str | None = None  # "bfloat16" / "float16": under torch.autocast; None: in dtype
    batch_size_used: int | None = None  # where the build ended: batch_size, halved on out-of-memory
    peak_memory: int | None = None  # bytes at the build's peak (how: peak_memory_measure)
    peak_memory_measure: str | None = None
    # example caches (bagofdims.signs.examples): rows are examples, not vocabulary tokens
    inputs: str = "tokens"  # "tokens" or "examples"
    labels: list | None = None  # per example: its label (str) or None (unlabelled)
    groups: list | None = None  # per example: its group (str), kept on one side of a split
    pool: str | None = None  # the pooling rule's name (bagofdims.signs.pooling)
    example_sha256: str | None = None  # of every example's bytes, in order
    processor_kwargs: dict = field(default_factory=dict)  # given to the processor with each batch
    # subset caches (bagofdims.signs.subset): rule, categories, seed, sizes and background ids
    subset: dict | None = None
    format_version: int = FORMAT_VERSION

    def to_json(self) -> dict:
        """The ``meta.json`` content, with the checksum of everything else."""
        body = dataclasses.asdict(self)
        return {**body, "meta_sha256": _digest(body)}

    @classmethod
    def from_json(cls, obj: Any, where: str = "meta.json") -> "CacheMeta":
        """Validate a parsed ``meta.json``; raise :class:`CacheError` naming what is wrong."""
        if not isinstance(obj, dict):
            raise CacheError(f"{where} holds {type(obj).__name__}, not a metadata object; the "
                             "cache is corrupt, rebuild it.")
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise CacheError(f"{where}: cache format {version!r}, this bagofdims reads "
                             f"{FORMAT_VERSION}; rebuild the cache.")
        body = {k: v for k, v in obj.items() if k != "meta_sha256"}
        if obj.get("meta_sha256") != _digest(body):
            raise CacheError(f"{where} was edited or damaged after it was written (its checksum "
                             "does not match its content); rebuild the cache.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(body) - names, [f.name for f in dataclasses.fields(cls)
                                               if f.name not in body and _required(f)]
        if unknown or missing:
            raise CacheError(f"{where}: unknown fields {sorted(unknown)}, missing {missing}; "
                             "rebuild the cache.")
        meta = cls(**body)
        meta.validate(where)
        return meta

    def validate(self, where: str = "meta") -> None:
        """Raise :class:`CacheError` unless every field has a valid type and value."""
        def bad(msg: str):
            raise CacheError(f"{where}: {msg}; the cache is corrupt, rebuild it.")

        for name, kinds in _TYPES.items():
            value = getattr(self, name)
            if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
                bad(f"{name} is {value!r}, expected {' or '.join(k.__name__ for k in kinds)}")
        if self.vocab_size < 1 or self.n_tokens < 1:
            bad(f"vocab_size {self.vocab_size} / n_tokens {self.n_tokens} must be >= 1")
        if self.full_vocab and self.n_tokens != self.vocab_size:
            bad(f"a full-vocabulary cache has {self.n_tokens} rows for {self.vocab_size} tokens")
        if self.n_tokens > self.vocab_size:
            bad(f"{self.n_tokens} rows for a {self.vocab_size}-token vocabulary")
        if not self.sites or not all(isinstance(k, str) and isinstance(w, int) and not
                                     isinstance(w, bool) and w >= 1 for k, w in self.sites.items()):
            bad(f"sites must map names to widths >= 1, got {self.sites!r}")
        if self.bos != (self.bos_id is not None):
            bad(f"bos={self.bos} disagrees with bos_id={self.bos_id}")
        if self.bos_id is not None and not 0 <= self.bos_id < self.vocab_size:
            bad(f"bos_id {self.bos_id} is outside the vocabulary 0..{self.vocab_size - 1}")
        if self.bit_order != BIT_ORDER:
            bad(f"bit order {self.bit_order!r}; this bagofdims reads {BIT_ORDER!r}")
        if self.batch_size < 1 or self.chunk_size < 1:
            bad("batch_size and chunk_size must be >= 1")
        self._validate_forward(bad)
        for name, digest in self.files.items():
            if name not in DATA_FILES or not isinstance(digest, str) or not _HEX64.match(digest):
                bad(f"files lists {name!r} -> {digest!r}; expected {DATA_FILES} with sha256 digests")
        if self.magnitudes != ("magnitudes.safetensors" in self.files) and self.files:
            bad("magnitudes flag and the files listed disagree")
        self._validate_inputs(bad)
        if self.subset is not None:
            self._validate_subset(bad)

    def _validate_subset(self, bad) -> None:
        sub, keys = self.subset, dict(SUBSET_KEYS)
        if set(sub) != set(keys) or not all(isinstance(sub[k], t) and not isinstance(sub[k], bool)
                                            for k, t in keys.items()):
            bad(f"subset must map {({k: t.__name__ for k, t in keys.items()})}, got {sub!r:.200}")
        ids = sub["background_ids"]
        if sub["rule"] != SUBSET_RULE or self.full_vocab or self.inputs != "tokens":
            bad(f"subset rule {sub['rule']!r} on a {'full' if self.full_vocab else 'partial'} "
                f"{self.inputs} cache; expected {SUBSET_RULE!r} on a partial token cache")
        lo, hi = max(sub["n_members"], len(ids)), sub["n_members"] + len(ids)
        if sub["n_tokens"] != self.n_tokens or sub["background"] != len(ids) or \
                sub["n_categories"] < 1 or not lo <= self.n_tokens <= hi:
            bad(f"subset sizes disagree: {sub['n_members']} members + {len(ids)} background ids "
                f"(background={sub['background']}) cannot make {self.n_tokens} rows")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or \
                any(b <= a for a, b in zip(ids, ids[1:])) or \
                ids and not 0 <= ids[0] <= ids[-1] < self.vocab_size:
            bad("subset background_ids must be increasing vocabulary ids in "
                f"0..{self.vocab_size - 1}")

    def _validate_forward(self, bad) -> None:
        if self.autocast not in (None, "bfloat16", "float16"):
            bad(f"autocast is {self.autocast!r}, expected None, 'bfloat16' or 'float16'")
        if self.batch_size_used is not None and not 1 <= self.batch_size_used <= self.batch_size:
            bad(f"batch_size_used {self.batch_size_used} is not in 1..batch_size {self.batch_size}")
        if (self.peak_memory is None) != (self.peak_memory_measure is None) or \
                (self.peak_memory or 0) < 0:
            bad(f"peak_memory {self.peak_memory!r} / peak_memory_measure "
                f"{self.peak_memory_measure!r} must both be given (bytes >= 0) or both be None")

    def _validate_inputs(self, bad) -> None:
        example_fields = ("labels", "groups", "pool", "example_sha256")
        if self.inputs == "tokens":
            given = [k for k in example_fields if getattr(self, k) is not None]
            if given or self.processor_kwargs:
                bad(f"a token cache has example fields {given or ['processor_kwargs']}")
            return
        if self.inputs != "examples":
            bad(f"inputs is {self.inputs!r}, expected 'tokens' or 'examples'")
        if not (self.full_vocab and self.vocab_size == self.n_tokens and not self.bos):
            bad("an example cache must have full_vocab=True, vocab_size == n_tokens and bos=False")
        if not isinstance(self.pool, str) or not isinstance(self.example_sha256, str) or \
                not _HEX64.match(self.example_sha256):
            bad(f"an example cache needs a pool name and a sha256 of its examples, got "
                f"{self.pool!r} / {self.example_sha256!r}")
        for name, allow_none in (("labels", True), ("groups", False)):
            values = getattr(self, name)
            if values is None:
                continue
            if len(values) != self.n_tokens:
                bad(f"{name} has {len(values)} entries for {self.n_tokens} examples")
            if not all(isinstance(v, str) or (allow_none and v is None) for v in values):
                bad(f"{name} must be strings{' or None' if allow_none else ''}")

    def resume_key(self) -> dict:
        """The settings an interrupted build must share with its resume (the output depends on them)."""
        keys = ("model", "weights", "tokenizer", "n_tokens", "sites", "bos", "bos_id", "dtype",
                "autocast", "magnitudes", "batch_size", "chunk_size", "tokens_sha256", "inputs", "pool",
                "example_sha256", "processor_kwargs")
        return {k: getattr(self, k) for k in keys}


_TYPES: dict[str, tuple] = {
    "model": (str,), "weights": (str,), "tokenizer": (str,), "vocab_size": (int,),
    "full_vocab": (bool,), "n_tokens": (int,), "sites": (dict,), "bos": (bool,),
    "bos_id": (int, type(None)), "bos_token": (str, type(None)), "bos_rule": (str,),
    "dtype": (str,), "magnitudes": (bool,), "batch_size": (int,), "chunk_size": (int,),
    "tokens_sha256": (str,), "bit_order": (str,), "created": (str,), "files": (dict,),
    "weights_hashed": (dict,), "build_seconds": (int, float, type(None)),
    "autocast": (str, type(None)), "batch_size_used": (int, type(None)),
    "peak_memory": (int, type(None)), "peak_memory_measure": (str, type(None)),
    "inputs": (str,), "labels": (list, type(None)), "groups": (list, type(None)),
    "pool": (str, type(None)), "example_sha256": (str, type(None)), "processor_kwargs": (dict,),
    "subset": (dict, type(None)), "format_version": (int,),
}
SUBSET_RULE = "categories+background"  # members of a category set + a seeded random background
SUBSET_KEYS = {"rule": str, "categories": str, "forms": str, "n_categories": int, "n_members": int,
               "background": int, "seed": int, "n_tokens": int, "background_ids": list}


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _digest(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=True).encode()).hexdigest()
