"""Site names ("resid.12", "k.3", "neurons.7", ...) resolved to the modules of a loaded HF model.

One vocabulary for every architecture (see DESIGN.md):

=============  ===============================================================================
``embed``      token embeddings entering block 0 (the input of block 0)
``resid.L``    residual stream after block L (the block's output)
``final``      after the final norm (what the LM head reads)
``attn.L``     what attention of block L writes into the residual stream
``mlp.L``      what the MLP of block L writes into the residual stream
``k.L``        key projection of block L (after the k-norm where the model has one)
``v.L``        value projection of block L
``neurons.L``  FFN neuron activations of block L (the input of the down projection)
=============  ===============================================================================

Resolution inspects the model: the block list comes from a table of known paths (with a generic
fallback: the first ``ModuleList`` of identical blocks), and each per-block site is the first
candidate of a declarative table that exists in the block. Nothing is re-implemented and the model
is never changed here; hooks are attached by :class:`bagofdims.capture.Capture`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, replace

import torch
from torch import nn
from bagofdims.errors import InvalidType, UnknownSite

# Known block lists, tried in order before the generic search.
BLOCK_PATHS = (
    "model.layers",  # Llama, Qwen2/3, Mistral, Gemma 3 (text)
    "model.language_model.layers",  # multimodal wrappers
    "transformer.h",  # GPT-2
    "encoder.layer",  # BERT
    "bert.encoder.layer",
    "layers",  # ViT (transformers 5), bare decoders
    "vit.layers",
    "encoder.layers",  # Whisper encoder
    "model.encoder.layers",  # Whisper model
    "h",
)

# Encoder-decoder models (Whisper): the blocks found above are the encoder's; the decoder's
# sites are named with DECODER_PREFIX ("dec.resid.3", "dec.final") and follow every encoder site.
DECODER_PATHS = ("model.decoder.layers", "decoder.layers")
DECODER_PREFIX = "dec."

# Final-norm names, searched next to the block list, then one level up.
# CLIP vision's post_layernorm normalises only the CLS state (what its projection reads).
FINAL_NORM_NAMES = ("norm", "ln_f", "final_layernorm", "layer_norm", "layernorm", "post_layernorm")


@dataclass(frozen=True)
class Hook:
    """Where a site's value is read: a submodule path (relative to the block) and how."""

    path: str
    on: str = "output"  # "output": the module's output; "input": its first input
    part: int | None = None  # chunk of a fused projection (GPT-2 c_attn: q, k, v)
    parts: int = 1


# Per-block sites: candidates tried in order; the first that exists in the block wins.
# Gemma-style blocks (with post-norms) write the post-norm output into the residual stream.
BLOCK_SITES: dict[str, tuple[Hook, ...]] = {
    "attn": (
        Hook("self_attn"),
        Hook("attn"),
        Hook("attention.output.dense"),  # BERT: before the residual add + LayerNorm
        Hook("attention"),  # ViT
    ),
    "mlp": (
        Hook("post_feedforward_layernorm"),  # Gemma 2/3
        Hook("mlp"),
        Hook("output.dense"),  # BERT
        Hook("fc2"),  # Whisper encoder
    ),
    "k": (
        Hook("self_attn.k_norm"),  # Qwen3, Gemma 3
        Hook("self_attn.k_proj"),
        Hook("attn.c_attn", part=1, parts=3),  # GPT-2 fused qkv
        Hook("attention.self.key"),  # BERT
        Hook("attention.k_proj"),  # ViT
    ),
    "v": (
        Hook("self_attn.v_norm"),
        Hook("self_attn.v_proj"),
        Hook("attn.c_attn", part=2, parts=3),
        Hook("attention.self.value"),
        Hook("attention.v_proj"),
    ),
    "neurons": (
        Hook("mlp.down_proj", "input"),
        Hook("mlp.c_proj", "input"),  # GPT-2
        Hook("output.dense", "input"),  # BERT
        Hook("mlp.fc2", "input"),  # ViT
        Hook("fc2", "input"),  # Whisper encoder
    ),
}

# Gemma-style blocks (a pre_feedforward_layernorm exists) normalise each branch before the
# residual add, so their attention writes the output of post_attention_layernorm. In Llama-style
# blocks the module of that name is the MLP's input norm instead, hence the explicit check.
GEMMA_STYLE_ATTN = Hook("post_attention_layernorm")

# Model types whose per-head k/v norm runs after the transpose to [batch, heads, seq, head_dim]
# (Qwen3 and others normalise before it, in [batch, seq, heads, head_dim]).
HEADS_FIRST_NORM = {"gemma3", "gemma3_text", "gemma2"}

# Order of sites inside one block, in forward order (for sorting and early stop).
KIND_ORDER = {"embed": 0, "k": 1, "v": 2, "attn": 3, "neurons": 4, "mlp": 5, "resid": 6}


@dataclass(frozen=True)
class Site:
    """A resolved site: its name and the module whose hook reads it."""

    name: str
    kind: str
    layer: int | None
    module_path: str
    on: str = "output"
    part: int | None = None
    parts: int = 1
    heads_first: bool = False  # a 4-D k/v norm output laid out [batch, heads, seq, head_dim]
    stack: int = 0  # 0: the (encoder or only) block list, 1: an encoder-decoder's decoder

    @property
    def order(self) -> tuple[int, int, int]:
        if self.kind == "final":
            return (self.stack, 1 << 30, 0)
        return (self.stack, self.layer if self.layer is not None else -1, KIND_ORDER[self.kind])

    def select(self, value) -> torch.Tensor:
        """Turn a hooked module's output (or input) into the site's ``[..., width]`` tensor."""
        if isinstance(value, (tuple, list)):
            value = value[0]
        if self.part is not None:
            value = value.chunk(self.parts, dim=-1)[self.part]
        if self.kind in ("k", "v") and value.dim() == 4:
            if self.heads_first:
                value = value.transpose(1, 2)
            value = value.flatten(-2)  # [b, s, heads * head_dim], as the projection wrote it
        return value



def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's list of transformer blocks: a known path, else the first uniform ModuleList."""
    for path in BLOCK_PATHS:
        try:
            mod = model.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(mod, nn.ModuleList) and len(mod):
            return path, mod
    for path, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 1:
            if len({type(m) for m in mod}) == 1 and any(True for _ in mod[0].parameters()):
                return path, mod
    raise UnknownSite(
        f"Could not find the transformer blocks of {type(model).__name__}: no ModuleList of "
        "identical blocks. Add its path to bagofdims.sites.BLOCK_PATHS."
    )


def _has(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
        return True
    except AttributeError:
        return False


def _final_norm(model: nn.Module, blocks_path: str) -> str | None:
    parts = blocks_path.split(".")
    for up in (1, 2):
        parent = ".".join(parts[:-up])
        for name in FINAL_NORM_NAMES:
            path = f"{parent}.{name}" if parent else name
            if _has(model, path):
                return path
    return None


def _block_hook(block: nn.Module, kind: str) -> Hook | None:
    if kind == "attn" and _has(block, "pre_feedforward_layernorm"):
        return GEMMA_STYLE_ATTN if _has(block, "post_attention_layernorm") else None
    for hook in BLOCK_SITES[kind]:
        if _has(block, hook.path):
            return hook
    return None


def all_sites(model: nn.Module) -> dict[str, Site]:
    """Every site this model offers, in forward order (an encoder-decoder's decoder last)."""
    blocks_path, blocks = find_blocks(model)
    sites = _stack_sites(model, blocks_path, blocks)
    for path in DECODER_PATHS:
        if path != blocks_path and _has(model, path) and len(model.get_submodule(path)):
            sites += _stack_sites(model, path, model.get_submodule(path), DECODER_PREFIX, 1)
            break
    sites.sort(key=lambda s: s.order)
    return {s.name: s for s in sites}


def _stack_sites(model: nn.Module, blocks_path: str, blocks, name_prefix: str = "",
                 stack: int = 0) -> list[Site]:
    sites = [Site("embed", "embed", None, f"{blocks_path}.0", "input")]
    block_hooks = {kind: _block_hook(blocks[0], kind) for kind in BLOCK_SITES}
    heads_first = getattr(getattr(model, "config", None), "model_type", None) in HEADS_FIRST_NORM
    for layer in range(len(blocks)):
        prefix = f"{blocks_path}.{layer}"
        sites.append(Site(f"resid.{layer}", "resid", layer, prefix))
        for kind, hook in block_hooks.items():
            if hook is not None:
                sites.append(
                    Site(f"{kind}.{layer}", kind, layer, f"{prefix}.{hook.path}", hook.on,
                         hook.part, hook.parts, heads_first and hook.path.endswith("_norm"))
                )
    final = _final_norm(model, blocks_path)
    if final is not None:
        sites.append(Site("final", "final", None, final))
    return [replace(s, name=name_prefix + s.name, stack=stack) for s in sites]


def default_sites(model: nn.Module) -> list[str]:
    """``resid.* final`` for models with a final norm (decoders), ``resid.*`` otherwise."""
    return ["resid.*", "final"] if "final" in all_sites(model) else ["resid.*"]


def describe(names) -> str:
    """Compact listing of site names: 'embed, resid.0..29, k.0..29, final'."""
    groups: dict[str, list[int]] = {}
    singles: list[str] = []
    for name in names:
        kind, _, idx = name.rpartition(".")
        if idx.isdigit():
            groups.setdefault(kind, []).append(int(idx))
        else:
            singles.append(name)
    out = [s for s in singles if s == "embed"]
    for kind, idx in groups.items():
        out.append(f"{kind}.{min(idx)}..{max(idx)}" if len(idx) > 1 else f"{kind}.{idx[0]}")
    out += [s for s in singles if s != "embed"]
    return ", ".join(out)


def resolve(model: nn.Module, patterns) -> list[Site]:
    """Resolve site names or globs (``"resid.*"``, ``"k.1?"``) to sites, in forward order."""
    if isinstance(patterns, str):
        patterns = [patterns]
    if not patterns:
        raise UnknownSite("No sites given: pass names like 'resid.5' or globs like 'resid.*'.")
    patterns = list(patterns)
    bad = [p for p in patterns if not isinstance(p, str)]
    if bad:
        raise InvalidType(f"Site names must be strings like 'resid.5' or 'resid.*', not {bad[0]!r}.")
    available = all_sites(model)
    chosen: dict[str, Site] = {}
    for pattern in patterns:
        hits = [n for n in available if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            raise UnknownSite(
                f"Unknown site '{pattern}' for {type(model).__name__}. Valid sites: "
                f"{describe(available)} (globs such as 'resid.*' select several)."
            )
        for n in hits:
            chosen[n] = available[n]
    return sorted(chosen.values(), key=lambda s: s.order)
