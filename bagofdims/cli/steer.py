"""``bagofdims steer``: a prompt's continuation with and without a sign flip, side by side.

    bagofdims steer --model smollm2 --feature fruit \\
        --prompt "Here is a list of fruits: apple, banana,"

Prints both greedy continuations next to each other, with the next-token probability mass on the
concept's tokens (anchors and held-out ids) after the prompt, without and with the flip.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

from bagofdims.cli.options import (check_choice, check_device, check_finite_nonnegative,
                                   check_positive, flag, run_dir)
from bagofdims.devices import input_device
from bagofdims.errors import InvalidArgument

MODES = ("away", "toward", "set")
POSITIONS = ("all", "last")


@dataclass
class SteerConfig:
    """Continue a prompt with and without flipping a catalog feature's signs, side by side."""

    feature: str
    """Concept name in the catalog, e.g. fruit (see `bagofdims query`)."""
    prompt: Annotated[str, flag("a prompt built from the concept's words", "TEXT")] = ""
    """Text to continue."""
    model: Annotated[str, flag(metavar="MODEL")] = "smollm2"
    """Embedded model (smollm2, gemma3-270m, minilm), Hugging Face id, or local model directory."""
    catalog: Annotated[Optional[str], flag("runs/MODEL/catalog", "DIR")] = None
    """Catalog directory (built by `bagofdims catalog` for this model)."""
    site: Annotated[Optional[str], flag("the catalog's best site for the feature", "SITE")] = None
    """Site of the feature to flip."""
    mode: Literal["away", "toward", "set"] = "away"
    """away: push the concept out; toward: push it in; set: force the feature's signs."""
    strength: float = 1.0
    """Magnitude factor of the flipped values (1: a pure sign flip); finite, >= 0."""
    positions: Literal["all", "last"] = "all"
    """Flip at every position, or only at the last one of each forward pass."""
    control: Annotated[Optional[str], flag("none", "CONTROL")] = None
    """Flip this instead, as a control: random (magnitude-matched dims), disjoint, or a concept."""
    max_new_tokens: int = 30
    """Tokens to generate."""
    width: int = 48
    """Column width of the side-by-side view."""
    device: Annotated[str, flag(metavar="DEVICE")] = "auto"
    """Where to run the model: auto (cuda if available, else cpu), cpu, cuda, cuda:N or mps."""


def check_steer_config(cfg: SteerConfig) -> None:
    """The checks that need no model (raise InvalidArgument)."""
    if not cfg.feature:
        raise InvalidArgument("pass --feature NAME (a concept of the catalog, e.g. --feature fruit).")
    check_choice("--mode", cfg.mode, MODES)
    check_choice("--positions", cfg.positions, POSITIONS)
    check_finite_nonnegative("--strength", cfg.strength)
    check_positive("--max-new-tokens", cfg.max_new_tokens)
    check_positive("--width", cfg.width)
    check_device(cfg.device)


def check_generates(model, name: str) -> None:
    """Refuse a model that cannot generate text (an encoder)."""
    can = getattr(model, "can_generate", None)
    if not callable(getattr(model, "generate", None)) or (can is not None and not can()):
        raise InvalidArgument(f"steer generates text, but {name} ({type(model).__name__}) is an "
                              "encoder without generate(); use a decoder LM such as smollm2.")


def steer(cfg: SteerConfig, model=None, tok=None, cat=None) -> dict:
    """Run both generations; returns texts and concept masses (model, tokenizer, catalog may be
    passed in)."""
    import torch

    from bagofdims.catalog import Catalog
    from bagofdims.models import load_model
    from bagofdims.steering.effects import concept_prompts, concept_tokens, next_token_mass
    from bagofdims.steering.interventions import sign_flip

    check_steer_config(cfg)
    if model is None:
        model, tok = load_model(cfg.model, device=check_device(cfg.device))
    check_generates(model, cfg.model)
    if cat is None:
        cat = Catalog.load(cfg.catalog or run_dir(cfg.model, "catalog"), model=model, tokenizer=tok)
    feat = cat.get(cfg.feature, cfg.site)
    control = cfg.control
    if control not in (None, "random", "disjoint"):
        control = cat.get(control, feat.site)
    prompt = cfg.prompt or concept_prompts(feat, n=1)[0]
    tokens = concept_tokens(feat)
    enc = tok([prompt], return_tensors="pt").to(input_device(model))
    gen = dict(max_new_tokens=cfg.max_new_tokens, do_sample=False,
               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    n = enc["input_ids"].shape[1]
    with torch.no_grad():
        base_mass = float(next_token_mass(model, tok, [prompt], [tokens])[0, 0])
        base = model.generate(**enc, **gen)[0, n:]
        with sign_flip(model, feat, mode=cfg.mode, strength=cfg.strength, positions=cfg.positions,
                       control=control) as flip:
            flip_mass = float(next_token_mass(model, tok, [prompt], [tokens])[0, 0])
            flipped = model.generate(**enc, **gen)[0, n:]
    return {"prompt": prompt, "feature": repr(feat), "flip": repr(flip),
            "baseline": tok.decode(base, skip_special_tokens=True),
            "intervened": tok.decode(flipped, skip_special_tokens=True),
            "baseline_mass": base_mass, "intervened_mass": flip_mass}


def side_by_side(left: str, right: str, width: int = 48, titles=("baseline", "intervened")) -> str:
    """Two texts wrapped into columns."""
    a = textwrap.wrap(left.replace("\n", " ⏎ "), width) or [""]
    b = textwrap.wrap(right.replace("\n", " ⏎ "), width) or [""]
    rows = [f"{titles[0]:<{width}} │ {titles[1]}", f"{'─' * width}─┼─{'─' * width}"]
    for i in range(max(len(a), len(b))):
        rows.append(f"{a[i] if i < len(a) else '':<{width}} │ {b[i] if i < len(b) else ''}")
    return "\n".join(rows)


def format_result(res: dict, width: int = 48) -> str:
    """The prompt, the flip, the concept's next-token mass before -> after, and both texts."""
    ratio = res["intervened_mass"] / max(res["baseline_mass"], 1e-30)
    return "\n".join([
        f"prompt:  {res['prompt']!r}",
        f"feature: {res['feature']}",
        f"flip:    {res['flip']}",
        f"concept next-token mass: {res['baseline_mass']:.4f} -> {res['intervened_mass']:.4f} "
        f"(x{ratio:.2f})",
        "",
        side_by_side(res["baseline"], res["intervened"], width),
    ])


def run_steer(cfg: SteerConfig) -> None:
    """``bagofdims steer``."""
    print(format_result(steer(cfg), cfg.width))
