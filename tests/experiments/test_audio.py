"""The audio report on a tiny random Whisper and synthetic clips (tones per word, two 'voices')."""

import numpy as np
import pytest
import torch
import transformers as T

import bagofdims as bd
from bagofdims.errors import InvalidArgument
from bagofdims.features.evidence import EvidenceConfig
from bagofdims.signs import bits
from bagofdims.spoken import SpokenItem
from experiments import audio
from experiments.audio_report import markdown, verdicts, write

SR = 16000
CATS, WORDS, VOICES = ("tone", "chirp", "noise"), 20, ("low", "high")


def tiny_whisper(seed=0):
    torch.manual_seed(seed)
    cfg = T.WhisperConfig(vocab_size=64, d_model=64, encoder_layers=2, decoder_layers=1,
                          encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                          decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=50,
                          max_target_positions=16, pad_token_id=2, bos_token_id=1, eos_token_id=2,
                          decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
    return T.WhisperForConditionalGeneration(cfg).eval()


def extractor():  # 1 s windows: 100 log-mel frames -> 50 encoder positions
    return T.WhisperFeatureExtractor(feature_size=8, sampling_rate=SR, chunk_length=1)


def synthetic_clips(seed=0):
    """Each word its own frequency band and length; voices change loudness and add noise."""
    g = np.random.default_rng(seed)
    clips, items = [], []
    for ci, cat in enumerate(CATS):
        for w in range(WORDS):
            f0 = 200 + 1500 * ci + 60 * w
            n = int(SR * (0.25 + 0.02 * w))
            t = np.arange(n) / SR
            for vi, voice in enumerate(VOICES):
                x = (0.3 + 0.3 * vi) * np.sin(2 * np.pi * f0 * t * (1 + 0.5 * t * (ci == 1)))
                if ci == 2:
                    x = x + 0.2 * g.standard_normal(n)
                clips.append((x + 0.01 * g.standard_normal(n)).astype(np.float32))
                items.append(SpokenItem(f"{cat}{w}", cat, voice, 175))
    return clips, items


@pytest.fixture(scope="module")
def data():
    return synthetic_clips()


def layer_outputs(model, feats) -> list[torch.Tensor]:
    """Each encoder block's output (the ``resid.L`` sites; the last hidden state is post-norm)."""
    outs, handles = [], []
    for layer in model.model.encoder.layers:
        handles.append(layer.register_forward_hook(
            lambda m, a, o: outs.append(o[0] if isinstance(o, tuple) else o)))
    try:
        with torch.no_grad():
            model.model.encoder(feats)
    finally:
        for h in handles:
            h.remove()
    return outs


def fake_transcribe(feature):
    """Transcribes every clip right unless the encoder's values on the feature's dims moved;
    then clips of the feature's category come out wrong (so only the feature, not a control,
    has an effect)."""
    layer = int(feature.site.split(".")[1])
    state = {}

    def transcribe(model, processor, clips):
        feats = processor(list(clips), sampling_rate=SR, return_tensors="pt").input_features
        h = layer_outputs(model, feats)[layer]
        words = [state["words"][id(c)] for c in clips]
        clean = state.setdefault("clean", {})
        out = []
        for i, (c, w) in enumerate(zip(clips, words)):
            ref = clean.setdefault(id(c), h[i])
            moved = not torch.allclose(ref[:, feature.dims], h[i][:, feature.dims])
            out.append("wrong" if moved and w.startswith(feature.name) else w)
        return out
    return transcribe, state


def test_select_keeps_the_first_words_of_the_voices_and_speeds_asked():
    items = [SpokenItem(f"w{w}", c, v, s) for c in "ab" for w in range(5) for v in ("x", "y")
             for s in (130, 175)]
    idx = audio.select(items, ("x",), (175,), 3)
    assert [(items[i].category, items[i].word) for i in idx] == \
        [(c, f"w{w}") for c in "ab" for w in range(3)]
    assert all(items[i].voice == "x" and items[i].speed == 175 for i in idx)
    with pytest.raises(InvalidArgument, match="voices"):
        audio.select(items, ("z",), (175,), 3)


def test_pooling_reads_the_valid_encoder_frames_only(data):
    clips, items = data
    model, fe = tiny_whisper(), extractor()
    cache = bd.SignCache.build_inputs(model, fe, clips[:6], sites=["resid.*"], pool="mean",
                                      processor_kwargs={"sampling_rate": SR}, progress=False)
    out = fe(clips[:6], sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
    hs = layer_outputs(model, out.input_features)
    frames = out.attention_mask.sum(1)
    n = (frames - 1) // 2 + 1  # the stride-2 convolution's output length
    assert (n < 50).all()  # padding exists, so a mean over all 50 positions would differ
    for layer in range(2):
        x = hs[layer]
        want = torch.stack([x[i, :n[i]].mean(0) for i in range(len(x))])
        assert torch.equal(cache.packed(f"resid.{layer}"), bits.pack_signs(want))
        wrong = bits.pack_signs(x.mean(1))
        assert not torch.equal(cache.packed(f"resid.{layer}"), wrong)


def test_logmel_cache_is_the_centred_mean_log_mel_with_the_same_rows(data):
    clips, items = data
    model, fe = tiny_whisper(), extractor()
    like = bd.SignCache.build_inputs(model, fe, clips, sites=["resid.0"], pool="mean",
                                     labels=[it.category for it in items],
                                     groups=[it.word for it in items],
                                     processor_kwargs={"sampling_rate": SR}, progress=False)
    cache = audio.logmel_cache(like, fe, clips, SR, batch_size=7)
    assert cache.sites == [audio.LOGMEL] and cache.width(audio.LOGMEL) == 8
    assert cache.meta.labels == like.meta.labels and cache.meta.groups == like.meta.groups
    assert cache.meta.weights != like.meta.weights
    out = fe(clips, sampling_rate=SR, return_attention_mask=True, return_tensors="pt")
    m = out.attention_mask.float()
    x = (out.input_features * m[:, None]).sum(-1) / m.sum(-1, keepdim=True)
    assert torch.equal(cache.packed(audio.LOGMEL), bits.pack_signs(x - x.mean(0)))
    # the tones differ by band, so the input itself already separates them
    cat = bd.Catalog.build(cache, categories="labels", sites=["*"], progress=False,
                           evidence=EvidenceConfig(n_draws=5, n_boot=100))
    assert cat.get("tone").metrics["held_out_auc"] > 0.7


def test_nearest_neighbour_across_voices(data):
    _, items = data
    words = [it.word for it in items]
    voices = [it.voice for it in items]
    g = torch.Generator().manual_seed(0)
    per_word = {w: torch.randn(64, generator=g) for w in dict.fromkeys(words)}
    x = torch.stack([per_word[w] + 0.3 * torch.randn(64, generator=g) for w in words])
    cache = bd.SignCache(bd_meta(len(words), 64), {"resid.0": bits.pack_signs(x).numpy(),
                                                   "_token_ids": np.arange(len(words))})
    r = audio.nearest_neighbour(cache, words, voices)["resid.0"]
    assert r["accuracy"] > 0.9 and r["lo"] < r["accuracy"] <= r["hi"]
    assert r["chance"] == pytest.approx(1 / (len(CATS) * WORDS)) and r["n"] == len(words)
    # with the voices' signs unrelated, no clip finds its word among the other voice
    y = torch.where(torch.tensor([v == VOICES[0] for v in voices])[:, None], x,
                    torch.randn(x.shape, generator=g))
    r2 = audio.nearest_neighbour(bd.SignCache(bd_meta(len(words), 64), {
        "resid.0": bits.pack_signs(y).numpy(), "_token_ids": np.arange(len(words))}),
        words, voices)["resid.0"]
    assert r2["accuracy"] < 0.2


def bd_meta(n, d):
    from bagofdims.signs.meta import CacheMeta

    return CacheMeta(model="planted", weights="w", tokenizer="p", vocab_size=n, full_vocab=True,
                     n_tokens=n, sites={"resid.0": d}, bos=False, bos_id=None, bos_token=None,
                     bos_rule="off", dtype="float32", magnitudes=False, batch_size=n,
                     chunk_size=n, tokens_sha256="x", inputs="examples", pool="mean",
                     example_sha256="0" * 64, created="now")


@pytest.fixture(scope="module")
def measured(data):
    clips, items = data
    model, fe = tiny_whisper(), extractor()
    cfg = audio.AudioConfig(model="tiny-whisper", causal_category="tone", n_other=6,
                            n_controls=3, n_draws=10, batch_size=32, words=WORDS)
    holder = {}

    def transcribe(m, p, c):  # built once the catalog (and so the feature) exists
        return holder["fn"](m, p, c)

    real_causal = audio.causal_test

    def causal(model, processor, feature, clips, words, is_target, n, seed, _):
        fn, state = fake_transcribe(feature)
        state["words"] = {id(c): w for c, w in zip(clips, words)}
        holder["fn"] = fn
        return real_causal(model, processor, feature, clips, words, is_target, n, seed,
                           transcribe)

    audio.causal_test = causal
    try:
        res = audio.measure(model, fe, clips, items, cfg, SR)
    finally:
        audio.causal_test = real_causal
    res.update(seconds=1.0, command="python scripts/reproduce_audio.py")
    return res


def test_measure_gives_every_table_with_references(measured):
    res = measured
    assert set(res["layers"]) == {"trained", "random-init", "log-mel"}
    assert list(res["layers"]["trained"]) == ["resid.0", "resid.1"]
    assert list(res["layers"]["log-mel"]) == [audio.LOGMEL]
    for kind, tab in res["layers"].items():
        assert res["best_site"][kind] == max(tab, key=lambda s: tab[s]["anchor_score"])
        for r in tab.values():
            assert r["n_categories"] == len(CATS) and r["lo"] <= r["held_out_auc"] <= r["hi"]
            assert 0 <= r["null_labelled_auc"] <= 1 and 0 <= r["null_examples_auc"] <= 1
    assert res["n_clips"] == len(CATS) * WORDS * len(VOICES)
    for kind in res["nearest_neighbour"]:
        for r in res["nearest_neighbour"][kind].values():
            assert 0 <= r["accuracy"] <= 1


def test_causal_effect_only_for_the_feature_and_its_p_value(measured):
    c = measured["causal"]
    assert c["category"] == "tone" and c["correct_target"] == WORDS * len(VOICES)
    assert c["feature"]["effect"] == 1.0 and c["feature"]["survival_target"] == 0.0
    controls = [x for xs in c["controls"].values() for x in xs]
    assert len(controls) == 6 and all(x["effect"] == 0.0 for x in controls)
    assert len({x["seed"] for x in controls}) == 6
    assert c["p"] == pytest.approx(1 / 7)


def test_page_leads_with_the_verdict_table(measured, tmp_path):
    md = markdown(measured)
    head = md.split("## Per layer")[0]
    assert "## Verdict" in head and "50/50" in head and "not specific to language" in head
    assert len(verdicts(measured)) == 4
    assert "chosen" in md
    path = write(tmp_path, measured)
    assert path.read_text() == md
    assert (tmp_path / "audio.json").exists() and (tmp_path / "audio_layers.png").stat().st_size


def test_causal_test_reports_when_no_clip_survives_baseline(data):
    clips, items = data
    model, fe = tiny_whisper(), extractor()

    class F:
        site, dims, name = "resid.0", torch.arange(4), "tone"

    res = audio.causal_test(model, fe, F(), clips[:4], [it.word for it in items[:4]],
                            [True, True, False, False], 2, 0,
                            lambda m, p, c: ["nothing"] * len(c))
    assert res["correct_target"] == 0 and "skipped" in res and "feature" not in res
