"""Tiny random-weight models of every supported family, built from configs (no download)."""

from __future__ import annotations

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

VOCAB = 96
D = 32
LAYERS = 3

_DECODER = dict(vocab_size=VOCAB, hidden_size=D, intermediate_size=48, num_hidden_layers=LAYERS,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                bos_token_id=1, eos_token_id=2, pad_token_id=2)

FAMILIES = {
    "llama": lambda: T.LlamaForCausalLM(T.LlamaConfig(**_DECODER)),
    "qwen2": lambda: T.Qwen2ForCausalLM(T.Qwen2Config(**_DECODER)),
    "qwen3": lambda: T.Qwen3ForCausalLM(T.Qwen3Config(**_DECODER, head_dim=8)),
    "gemma3": lambda: T.Gemma3ForCausalLM(T.Gemma3TextConfig(**_DECODER, head_dim=8,
                                                             sliding_window=8)),
    "mistral": lambda: T.MistralForCausalLM(T.MistralConfig(**_DECODER)),
    "gpt2": lambda: T.GPT2LMHeadModel(T.GPT2Config(vocab_size=VOCAB, n_embd=D, n_layer=LAYERS,
                                                   n_head=4, n_positions=64, bos_token_id=1,
                                                   eos_token_id=2)),
    "bert": lambda: T.BertModel(T.BertConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS,
                                             num_attention_heads=4, intermediate_size=48,
                                             max_position_embeddings=64, pad_token_id=0)),
    "vit": lambda: T.ViTModel(T.ViTConfig(hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=4,
                                          intermediate_size=48, image_size=16, patch_size=8,
                                          num_channels=3)),
    "whisper": lambda: T.WhisperForConditionalGeneration(T.WhisperConfig(
        vocab_size=VOCAB, d_model=D, encoder_layers=LAYERS, decoder_layers=1,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=48,
        decoder_ffn_dim=48, num_mel_bins=8, max_source_positions=8, max_target_positions=16,
        pad_token_id=2, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
        suppress_tokens=[], begin_suppress_tokens=[])).model.encoder,
}

CAUSAL = ("llama", "qwen2", "qwen3", "gemma3", "mistral", "gpt2")


def make(family: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return FAMILIES[family]().eval()


def inputs(family: str, batch: int = 2, seq: int = 5, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    if family == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=g)}
    if family == "whisper":
        return {"input_features": torch.randn(batch, 8, 16, generator=g)}
    ids = torch.randint(3, VOCAB, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :2] = 0  # left padding on the first row
    return {"input_ids": ids, "attention_mask": mask}


def tokenizer(vocab_size: int = VOCAB) -> PreTrainedTokenizerFast:
    """A word-level tokenizer: ids 0-2 are <unk>, <bos>, <eos> (also pad); id i >= 3 is 'w{i}'."""
    vocab = {f"w{i}": i for i in range(3, vocab_size)}
    vocab.update({"<unk>": 0, "<bos>": 1, "<eos>": 2})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<eos>")
