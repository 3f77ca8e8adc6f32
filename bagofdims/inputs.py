"""Which token starts a document for a model, and forward inputs for batches of single tokens.

A decoder LM reads every token of real text after something: in pretraining, documents follow a
document-start token. Alone at position 0 a token sits where the model keeps its attention sink,
and its states there stop depending on the token after a few layers (SmolLM2: they collapse after
resid.11). So by default a decoder reads each single token after its document-start token,
found by :func:`document_start` (first rule that applies):

1. ``tokenizer``: the special token the tokenizer itself puts before text (Llama, Gemma, Mistral);
2. ``endoftext``: the vocabulary's ``<|endoftext|>``, the document separator of GPT-2, Qwen,
   SmolLM, Pythia and Phi pretraining (an instruct model's ``bos_token`` can be a chat marker
   instead: SmolLM2-Instruct's is ``<|im_start|>``, which is followed by a role name);
3. ``bos`` / ``eos``: the tokenizer's declared BOS, else its EOS.

Encoders (models that do not generate) read the token alone unless asked.

The sign cache and the probes' raw states run one forward pass per vocabulary token. With a BOS
first, every input is ``[BOS, token]``: the BOS part is identical for all of them, so for decoder
LMs its key/value cache is computed once and repeated across each batch, and every forward then
runs one position instead of two (about half the work). The result is the same computation up to
float rounding (tests compare it with the two-token input). Models whose forward takes no cache
(encoders) get the two-token input.
"""
from __future__ import annotations

import copy
import inspect

import torch
from torch import nn

from bagofdims.capture import no_cache_kwargs
from bagofdims.devices import input_device
from bagofdims.errors import InvalidArgument

DOCUMENT_SEPARATOR = "<|endoftext|>"


def prepended(tokenizer) -> int | None:
    """The special token id the tokenizer puts before plain text, if any."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    if len(with_special) > len(plain) and with_special[0] in set(tokenizer.all_special_ids):
        return int(with_special[0])
    return None


class TextStart:
    """Puts a start token before texts and says which leading position is not a text token.

    ``TextStart(tokenizer, start_id)``; ``ids, lead = text_start(ids, max_length)`` returns the
    ids with ``start_id`` first (added when missing, the text cut to ``max_length``) and
    ``lead`` = 1 when the first id is that start token or the one the tokenizer itself
    prepends, else 0. Shared by every reader of real text, so they all skip the same position.
    """

    def __init__(self, tokenizer, start_id: int | None):
        self.start_id = start_id
        self.leading = {i for i in (start_id, prepended(tokenizer)) if i is not None}

    def __call__(self, ids: list[int], max_length: int | None = None) -> tuple[list[int], int]:
        if self.start_id is not None and (not ids or ids[0] != self.start_id):
            ids = [self.start_id] + (ids if max_length is None else ids[: max_length - 1])
        return ids, int(bool(ids) and ids[0] in self.leading)


# rule name -> the token id it finds (or None); tried in this order
_START_RULES = (
    ("tokenizer", prepended),
    ("endoftext", lambda tok: vocab_id(tok, DOCUMENT_SEPARATOR)),
    ("bos", lambda tok: tok.bos_token_id),
    ("eos", lambda tok: tok.eos_token_id),
)


def vocab_id(tokenizer, token: str) -> int | None:
    """The id of a token string, or None if the vocabulary lacks it (no unknown-token id)."""
    # one lookup and its reverse instead of get_vocab(), which builds the whole dict (~30 ms)
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or int(tid) < 0:
        return None
    return int(tid) if tokenizer.convert_ids_to_tokens(int(tid)) == token else None


def document_start(tokenizer) -> tuple[int | None, str]:
    """``(token id, rule)`` of the token that starts a document (see the module docstring)."""
    for rule, find in _START_RULES:
        tid = find(tokenizer)
        if tid is not None:
            return int(tid), rule
    return None, "none"


def is_decoder_lm(model: nn.Module) -> bool:
    """True for models that generate text left to right (the ones with a position-0 sink)."""
    can = getattr(model, "can_generate", None)
    config = getattr(model, "config", None)
    return bool(can is not None and can() and not getattr(config, "is_encoder_decoder", False))


def resolve_prefix(model: nn.Module, tokenizer, bos: bool | None = None,
                   bos_token: int | str | None = None) -> tuple[int | None, str]:
    """``(id, rule)`` of the token to put before single tokens or texts, ``(None, ...)`` for none.

    ``bos=None``: the document-start token for decoder LMs, nothing for encoders; ``True``: the
    document-start token for any model; ``False``: nothing. ``bos_token`` (an id or a token
    string) overrides which token.
    """
    if bos_token is not None:
        if bos is False:
            raise InvalidArgument("bos=False contradicts bos_token=...; drop one of them.")
        return _token_id(tokenizer, bos_token), "given"
    if bos is False or (bos is None and not is_decoder_lm(model)):
        return None, "off"
    tid, rule = document_start(tokenizer)
    if tid is None and bos:
        raise InvalidArgument("bos=True but the tokenizer has no BOS, EOS or <|endoftext|> token; pass "
                         "bos_token=<id or token> or bos=False.")
    return tid, rule


def _token_id(tokenizer, token: int | str) -> int:
    if isinstance(token, str):
        tid = vocab_id(tokenizer, token)
        if tid is None:
            raise InvalidArgument(f"bos_token {token!r} is not a token of this tokenizer; pass a token "
                             "string from its vocabulary (e.g. its bos_token) or an id.")
        return tid
    tid = int(token)
    if not 0 <= tid < len(tokenizer):
        raise InvalidArgument(f"bos_token id {tid} is outside the vocabulary 0..{len(tokenizer) - 1}.")
    return tid


class SingleTokenInputs:
    """``inputs(ids)`` → keyword arguments of ``model(...)`` for the tokens ``ids`` ``[B]``.

    ``bos_id=None``: each token alone. Otherwise BOS then the token, through a cached BOS prefix
    where the model supports it (``self.cached`` says whether it does).
    """

    def __init__(self, model: nn.Module, bos_id: int | None, device=None):
        params = inspect.signature(model.forward).parameters
        self.device = device if device is not None else input_device(model)
        self.bos_id = bos_id
        self.no_cache = no_cache_kwargs(model)
        self.prefix, self.key = None, None
        key = next((k for k in ("cache", "past_key_values") if k in params), None)
        if bos_id is not None and key is not None and "use_cache" in params:
            self.prefix, self.key = _bos_cache(model, bos_id, self.device), key

    @property
    def cached(self) -> bool:
        return self.prefix is not None

    def __call__(self, ids: torch.Tensor) -> dict:
        ids = ids.to(self.device).reshape(-1, 1)
        if self.bos_id is not None and self.prefix is None:
            ids = torch.cat([torch.full_like(ids, self.bos_id), ids], dim=1)
        if self.prefix is None:
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **self.no_cache}
        kv = copy.deepcopy(self.prefix)  # the forward appends to it: one fresh copy per batch
        kv.batch_repeat_interleave(len(ids))
        mask = torch.ones(len(ids), 2, dtype=ids.dtype, device=ids.device)
        return {"input_ids": ids, "attention_mask": mask, self.key: kv, "use_cache": True}


def _bos_cache(model: nn.Module, bos_id: int, device):
    """The key/value cache of ``[BOS]`` alone, or None if the model does not return a usable one.

    Run by the model's body without its output head where it has one: the head's logits are not
    needed, and for a large vocabulary reading its weights costs more than the body's one token.
    """
    body = getattr(model, "base_model", model)
    if body is model or "use_cache" not in inspect.signature(body.forward).parameters:
        body = model
    with torch.inference_mode():
        out = body(input_ids=torch.tensor([[bos_id]], device=device), use_cache=True)
    for name in ("cache", "past_key_values"):
        kv = getattr(out, name, None)
        if kv is not None and hasattr(kv, "batch_repeat_interleave"):
            return kv
    return None
