"""Prompts that elicit a concept, and the concept's tokens, for flip effects.

A prompt lists three members of the concept (drawn from the feature's anchor words) in one of
:data:`TEMPLATES` and asks for more, so the next token is likely a member. The concept's tokens
(whose next-token mass is measured) are its anchors and held-out ids.
"""

from __future__ import annotations

import random

import torch

from bagofdims.errors import InvalidArgument
from bagofdims.features.feature import Feature

__all__ = ["LABELS", "TEMPLATES", "concept_prompts", "concept_tokens", "split_prompts"]

# Plural labels for prompts; other categories fall back to their name with spaces.
LABELS = {
    "bird": "birds", "fruit": "fruits", "country": "countries", "color": "colors",
    "vehicle": "vehicles", "tool": "tools", "disease": "diseases", "emotion": "emotions",
    "city": "cities", "musical_instrument": "musical instruments", "insect": "insects",
    "weapon": "weapons", "body_part": "body parts", "chemical_element": "chemical elements",
    "number_word": "numbers", "natural_language": "languages", "language": "languages",
    "garment": "garments", "clothing": "clothes", "dish": "dishes", "drug": "drugs",
    "river": "rivers", "tree": "trees", "fish": "fish", "teleost_fish": "fish",
    "mineral": "minerals", "occupation": "occupations", "relative": "relatives",
    "meat": "meats", "herb": "herbs", "reptile": "reptiles", "sport": "sports",
    "monetary_unit": "currencies", "unit_of_measurement": "units of measurement",
    "time_period": "time periods", "shape": "shapes", "room": "rooms", "building": "buildings",
    "container": "containers", "fabric": "fabrics", "island": "islands", "european": "Europeans",
    "national_capital": "capital cities", "deity": "gods", "scientist": "scientists",
    "canine": "dogs", "vessel": "ships", "bone": "bones", "organ": "organs",
    "vertebrate": "animals", "element_symbol": "chemical element symbols",
    "male_name": "boys' names", "female_name": "girls' names", "surname": "surnames",
    "state_province": "states and provinces", "vascular_plant": "plants", "unit": "units",
    "organic_compound": "organic compounds", "city_europe": "European cities",
    "us_city": "American cities", "inhabitant": "nationalities",
}

TEMPLATES = (
    "Here is a list of {label}: {a}, {b}, {c},",
    "Examples of {label} include {a}, {b} and",
    "Some {label}: {a}, {b}, {c}, and",
    "{A}, {b} and {c} are all {label}. Another one is",
    "Name some {label}: {a}, {b},",
    "A short list of {label}: {a}, {b}, {c} and",
    "We talked about {label} such as {a}, {b} and",
    "The teacher wrote these {label} on the board: {a}, {b}, {c},",
    "Other {label} besides {a} and {b} are",
    "Q: Name three {label}. A: {A}, {b},",
    "My list of {label} so far: {a}, {b}, {c},",
    "Well-known {label} include {a}, {b}, {c} and",
)


def concept_tokens(feature: Feature) -> torch.Tensor:
    """The concept's token ids: its anchors and held-out ids (unique)."""
    ids = list(dict.fromkeys([*feature.anchors, *feature.held_out]))
    if not ids:
        raise InvalidArgument(f"Feature '{feature.name}' has no anchor or held-out token ids; pass "
                              "a catalog feature (or set feature.anchors).")
    return torch.as_tensor(ids, dtype=torch.int64)


def concept_prompts(feature: Feature, label: str | None = None, n: int = 3, seed: int = 0) -> list[str]:
    """``n`` distinct prompts listing members of the concept (from its anchor words) and asking
    for more; prompt ``i`` uses template ``i mod len(TEMPLATES)``."""
    words = [w.strip() for w in feature.anchor_words if w.strip().isalpha()]
    words = list(dict.fromkeys(words))
    if len(words) < 3:
        raise InvalidArgument(f"Feature '{feature.name}' has fewer than 3 anchor words to build "
                              "prompts from; pass prompts=[...] explicitly.")
    label = label or LABELS.get(feature.name, feature.name.replace("_", " "))
    rng = random.Random(f"{seed}:{feature.name}")
    out: list[str] = []
    for i in range(n):
        for _ in range(100):  # redraw the words of a prompt that already exists
            a, b, c = rng.sample(words, 3)
            text = TEMPLATES[i % len(TEMPLATES)].format(label=label, a=a, b=b, c=c,
                                                        A=a.capitalize())
            if text not in out:
                break
        else:
            raise InvalidArgument(f"Could not build {n} distinct prompts for '{feature.name}' from "
                                  f"{len(words)} anchor words; ask for fewer prompts.")
        out.append(text)
    return out


def split_prompts(feature: Feature, n_select: int, n_eval: int, label: str | None = None,
                  seed: int = 0) -> tuple[list[str], list[str]]:
    """Two disjoint prompt sets: ``n_select`` to choose a layer on, ``n_eval`` to measure on."""
    prompts = concept_prompts(feature, label, n_select + n_eval, seed)
    return prompts[:n_select], prompts[n_select:]
