"""Which preprocessor load_model returns for a model directory: picked by the files it holds."""

import json

import pytest
import transformers as T

import bagofdims as bd
from bagofdims.errors import ModelNotAvailable
from bagofdims.processors import preprocessor_kind
import tiny
from test_whisper import tiny_whisper


def test_a_saved_whisper_directory_loads_its_processor_and_generating_model(tmp_path):
    src = tmp_path / "tok"
    src.mkdir()
    vocab = {"a": 0, "<|startoftranscript|>": 1, "<|endoftext|>": 2,
             **{c: 3 + i for i, c in enumerate("bcdefgh")}}
    (src / "vocab.json").write_text(json.dumps(vocab))
    (src / "merges.txt").write_text("#version: 0.2\n")
    tok = T.WhisperTokenizer(str(src / "vocab.json"), str(src / "merges.txt"),
                             unk_token="<|endoftext|>")
    proc = T.WhisperProcessor(feature_extractor=T.WhisperFeatureExtractor(feature_size=6),
                              tokenizer=tok)
    where = tmp_path / "whisper"
    tiny_whisper().save_pretrained(where)
    proc.save_pretrained(where)
    assert preprocessor_kind(where) == "processor"
    model, got = bd.load_model(where, device="cpu")
    # before, a directory got AutoModel (no generate) and AutoTokenizer (no feature extractor)
    assert isinstance(model, T.WhisperForConditionalGeneration)
    assert isinstance(got, T.WhisperProcessor)


def test_a_text_directory_still_loads_its_tokenizer(tmp_path):
    tiny.make("llama").save_pretrained(tmp_path)
    tiny.tokenizer().save_pretrained(tmp_path)
    assert preprocessor_kind(tmp_path) == "tokenizer"
    _, tok = bd.load_model(tmp_path, device="cpu")
    assert isinstance(tok, T.PreTrainedTokenizerBase) and tok.padding_side == "left"


def test_an_audio_encoder_directory_gets_its_feature_extractor(tmp_path):
    T.WhisperFeatureExtractor(feature_size=6).save_pretrained(tmp_path)
    assert preprocessor_kind(tmp_path) == "feature_extractor"


def test_a_broken_preprocessor_config_is_refused_with_the_fix(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ModelNotAvailable, match="save_pretrained"):
        preprocessor_kind(tmp_path)
