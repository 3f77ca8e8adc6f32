"""``bagofdims steer``: a prompt's continuation with and without a sign flip, side by side.

    bagofdims steer --model smollm2 --catalog runs/smollm2/catalog --feature fruit \\
        --prompt "Here is a list of fruits: apple, banana,"

Prints both greedy continuations next to each other, with the next-token probability mass on the
concept's tokens (anchors and held-out ids) after the prompt, without and with the flip.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from dataclasses import dataclass, field

from bagofdims.config import add_arguments, from_args


@dataclass
class SteerConfig:
    """Generate with and without flipping a catalog feature's signs."""

    feature: str | None = field(default=None, metadata={"help": "concept name in the catalog "
                                                                "(e.g. fruit); required"})
    prompt: str = field(default="", metadata={"help": "text to continue (default: a prompt "
                                                      "built from the concept's words)"})
    model: str = field(default="smollm2", metadata={"help": "embedded name, HF id or local dir"})
    catalog: str = field(default="runs/smollm2/catalog", metadata={"help": "catalog directory"})
    site: str | None = field(default=None, metadata={"help": "site of the feature (default: the "
                                                              "catalog's best site for it)"})
    mode: str = field(default="away", metadata={"help": "away / toward / set"})
    strength: float = field(default=1.0, metadata={"help": "magnitude factor of flipped values"})
    positions: str = field(default="all", metadata={"help": "all / last"})
    control: str | None = field(default=None, metadata={"help": "random / disjoint / a concept "
                                                                "name (flipped instead)"})
    max_new_tokens: int = field(default=30, metadata={"help": "tokens to generate"})
    width: int = field(default=48, metadata={"help": "column width of the side-by-side view"})
    device: str | None = field(default=None, metadata={"help": "cpu / cuda"})


def steer(cfg: SteerConfig, model=None, tok=None, cat=None) -> dict:
    """Run both generations; returns texts and concept masses (the model may be passed in)."""
    import torch

    from bagofdims.catalog import Catalog
    from bagofdims.steering.effects import concept_prompts, concept_tokens, next_token_mass
    from bagofdims.steering.interventions import sign_flip
    from bagofdims.models import load_model

    if model is None:
        model, tok = load_model(cfg.model, device=cfg.device)
    cat = cat if cat is not None else Catalog.load(cfg.catalog, model=model)
    feat = cat.get(cfg.feature, cfg.site)
    control = cfg.control
    if control not in (None, "random", "disjoint"):
        control = cat.get(control, feat.site)
    prompt = cfg.prompt or concept_prompts(feat, n=1)[0]
    tokens = concept_tokens(feat)
    enc = tok([prompt], return_tensors="pt").to(next(model.parameters()).device)
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


def steer_main(argv=None) -> int:
    """Entry point of ``bagofdims steer`` (flags = the fields of :class:`SteerConfig`)."""
    parser = argparse.ArgumentParser(prog="bagofdims steer", description=SteerConfig.__doc__)
    add_arguments(parser, SteerConfig)
    ns = parser.parse_args(argv)
    if ns.positions not in ("all", "last"):
        parser.error("--positions must be 'all' or 'last'")
    if not ns.feature:
        parser.error("pass --feature NAME (a concept of the catalog, e.g. --feature fruit)")
    cfg = from_args(SteerConfig, ns)
    try:
        res = steer(cfg)
    except (ValueError, KeyError, FileNotFoundError) as err:
        print(f"bagofdims steer: error: {err}", file=sys.stderr)
        return 2
    print(format_result(res, cfg.width))
    return 0
