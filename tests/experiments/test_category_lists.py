"""The category-list generator's file format and its dependency-free closed list."""

import json
from pathlib import Path

import pytest

from experiments.category_lists import dumps
from experiments.closed_lists import STOP, WORD, closed_lists

SHIPPED = Path(__file__).resolve().parents[2] / "bagofdims" / "categories"


@pytest.mark.parametrize("name", ["default", "broad"])
def test_dumps_reproduces_the_shipped_file_byte_for_byte(name):
    text = (SHIPPED / f"{name}.json").read_text(encoding="utf-8")
    data = json.loads(text)
    assert dumps(data) == text
    assert len(text.splitlines()) == len(data["categories"]) + 2  # one category per line


def test_number_words_need_no_extra_packages():
    lists = closed_lists(deps_ok=False, cased=set())
    assert list(lists) == ["number_word"]
    words, source = lists["number_word"]
    assert {"seven", "ninetieth", "thousand", "dozen"} <= words and "closed list" in source
    assert WORD.match("seven") and not WORD.match("x-ray") and "the" in STOP
