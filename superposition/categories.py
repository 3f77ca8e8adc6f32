"""Small built-in word groups for the analyses (only words found in the vocabulary are used)."""
from __future__ import annotations

from .corpus import DAYS, MONTHS, PLANETS

SEASONAL = ["winter", "spring", "summer", "autumn", "Christmas", "Easter", "Halloween", "snow",
            "harvest", "New", "holiday", "Thanksgiving", "monsoon"]

CATEGORIES: dict[str, list[str]] = {
    "months": MONTHS,
    "days": DAYS,
    "planets": PLANETS,
    "numbers": [str(i) for i in range(1, 21)],
    "roman": ["I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII"],
    "countries": ["France", "Germany", "Italy", "Spain", "China", "Japan", "India", "Russia",
                  "Canada", "Australia", "Brazil", "Mexico", "Egypt", "Greece", "Ireland",
                  "Scotland", "England", "America", "Britain", "Africa"],
    "sports": ["football", "rugby", "cricket", "tennis", "golf", "match", "cup", "championship",
               "tournament", "league", "coach", "players", "team", "season", "goal", "win"],
    "music": ["album", "song", "songs", "band", "music", "singer", "guitar", "rock", "single",
              "chart", "concert", "tour", "records", "pop", "jazz"],
    "politics": ["election", "government", "minister", "party", "Labour", "Tory", "vote",
                 "parliament", "Blair", "Brown", "Howard", "MPs", "policy", "campaign"],
    "business": ["profit", "shares", "market", "sales", "firm", "company", "economy", "bank",
                 "prices", "growth", "investors", "deal", "oil", "rate"],
    "technology": ["software", "computer", "phone", "mobile", "internet", "users", "technology",
                   "digital", "online", "broadband", "games", "network", "web", "data"],
    "science": ["species", "cells", "energy", "theory", "physics", "chemical", "atoms", "light",
                "mass", "temperature", "evolution", "DNA", "protein", "molecules"],
}


def present(words: list[str], index: dict[str, int]) -> list[str]:
    return [w for w in words if w in index]
