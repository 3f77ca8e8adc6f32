import pytest
import torch

import tiny
from bagofdims.capture import Capture
from bagofdims.inputs import SingleTokenInputs, document_start, is_decoder_lm, resolve_prefix

SITES = ["resid.0", "resid.2"]


def _two_token_states(model, ids, bos):
    x = torch.stack([torch.full_like(ids, bos), ids], 1)
    with torch.inference_mode(), Capture(model, SITES, position=-1) as cap:
        model(input_ids=x, attention_mask=torch.ones_like(x))
    return {s: cap[s].clone() for s in SITES}


@pytest.mark.parametrize("family,cached", [
    ("llama", True), ("qwen2", True), ("qwen3", True), ("gemma3", True), ("mistral", True),
    ("gpt2", True), ("bert", False)])
def test_bos_prefix_matches_the_two_token_input(family, cached):
    model = tiny.make(family)
    ids = torch.tensor([5, 9, 40, 77, 3])
    inputs = SingleTokenInputs(model, bos_id=1)
    assert inputs.cached is cached  # decoders reuse the BOS key/values, encoders cannot
    want = _two_token_states(model, ids, 1)
    for rows in (slice(0, 2), slice(2, 5)):  # the prefix is reused, unchanged, across batches
        with torch.inference_mode(), Capture(model, SITES, stop=True, position=-1) as cap:
            cap.run(**inputs(ids[rows]))
            for s in SITES:
                torch.testing.assert_close(cap[s], want[s][rows], atol=1e-5, rtol=1e-4)


def test_without_bos_each_token_is_alone():
    model = tiny.make("llama")
    ids = torch.tensor([5, 9])
    kw = SingleTokenInputs(model, bos_id=None)(ids)
    assert kw["input_ids"].shape == (2, 1) and "cache" not in kw and "past_key_values" not in kw
    assert kw.get("use_cache") is False


def _tokenizer(endoftext=False, prepend=False, bos=True, eos=True):
    """The tiny word-level tokenizer with the special-token layout of one model family."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(4, tiny.VOCAB)}
    vocab.update({"<unk>": 0, "<bos>": 1, "<eos>": 2, "<|endoftext|>" if endoftext else "w3": 3})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if prepend:
        tk.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    special = {"bos_token": "<bos>"} if bos else {}
    if eos:
        special["eos_token"] = "<eos>"
    if endoftext:
        special["additional_special_tokens"] = ["<|endoftext|>"]
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", **special)


@pytest.mark.parametrize("kw,want", [
    (dict(prepend=True, endoftext=True), (1, "tokenizer")),  # Llama, Gemma: what text starts with
    (dict(endoftext=True), (3, "endoftext")),  # GPT-2, Qwen, SmolLM: the document separator
    (dict(), (1, "bos")),
    (dict(bos=False), (2, "eos")),
    (dict(bos=False, eos=False), (None, "none")),
])
def test_document_start_rules(kw, want):
    assert document_start(_tokenizer(**kw)) == want


def test_resolve_prefix_defaults_overrides_and_errors():
    tok = _tokenizer(endoftext=True)
    llama, bert = tiny.make("llama"), tiny.make("bert")
    assert is_decoder_lm(llama) and not is_decoder_lm(bert) and not is_decoder_lm(tiny.make("whisper"))
    assert resolve_prefix(llama, tok) == (3, "endoftext")  # decoders: never at the position-0 sink
    assert resolve_prefix(bert, tok) == (None, "off")  # encoders read the token alone
    assert resolve_prefix(bert, tok, bos=True) == (3, "endoftext")
    assert resolve_prefix(llama, tok, bos=False) == (None, "off")
    assert resolve_prefix(llama, tok, bos_token="<bos>") == (1, "given")
    assert resolve_prefix(llama, tok, bos_token=2) == (2, "given")
    with pytest.raises(ValueError, match="not a token of this tokenizer"):
        resolve_prefix(llama, tok, bos_token="<s>")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        resolve_prefix(llama, tok, bos_token=tiny.VOCAB)
    with pytest.raises(ValueError, match="contradicts"):
        resolve_prefix(llama, tok, bos=False, bos_token=1)
    with pytest.raises(ValueError, match="bos_token=<id or token>"):
        resolve_prefix(llama, _tokenizer(bos=False, eos=False), bos=True)
    assert resolve_prefix(llama, _tokenizer(bos=False, eos=False)) == (None, "none")
