"""Any Hugging Face speech encoder as the audio model (``--audio_backbone``): wav2vec2, HuBERT, WavLM,
data2vec-audio and Whisper's encoder, each as a tiny random model saved in a local folder (no network).

Full-size parameter counts come from the published configs (``emolab.models.speech.FULL_SIZE_CONFIGS``),
counted on the meta device.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, WhisperFeatureExtractor

import emolab.models.layers as layers_mod
from emolab.cli.main import main as emolab_main
from emolab.models import build_model, count_parameters, forward_batch
from emolab.models.speech import (
    FULL_SIZE_CONFIGS,
    WhisperSpeechBackbone,
    backbone_parameter_count,
    build_speech_backbone,
    normalize_waveform,
    speech_config,
)
from emolab.train import TrainConfig
from emolab.train.feature_cache import WavLMFeatureCache, backbone_tag
from tests.configs import TINY_SPEECH_CONFIGS, save_tiny_speech, tiny_train_flags

FAMILIES = list(TINY_SPEECH_CONFIGS)
N = 16000  # one second: a tiny run's clip
B, C = 2, 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("speech")
    return {f: save_tiny_speech(f, root / f) for f in FAMILIES}


def _encoder(family: str, name: str = "audio", **kw):
    torch.manual_seed(0)
    return build_model(name, use_wavlm=True, wavlm_config=TINY_SPEECH_CONFIGS[family], pretrained_video=False, **kw)


def _wave(b: int = B, n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    return torch.randn(b, 1, n) * 0.1, torch.tensor([n] + [n // 2] * (b - 1))


# --------------------------------------------------------------------------- full-size counts
def test_full_size_parameter_counts() -> None:
    """Pinned counts of the backbones the published configs build (README "Models", speech encoders)."""
    counts = {name: backbone_parameter_count(cfg) for name, cfg in FULL_SIZE_CONFIGS.items()}
    assert counts == {
        "facebook/wav2vec2-base": 94_371_712,
        "facebook/hubert-base-ls960": 94_371_712,
        "microsoft/wavlm-base": 94_381_936,  # WavLMAudioEncoder's 94,978,680 less its 596,744-parameter head
        "microsoft/wavlm-large": 315_453_120,
        "facebook/data2vec-audio-base": 93_164_288,
        "openai/whisper-base": 20_590_592,
        "openai/whisper-large-v3": 636_968_960,
    }


@pytest.mark.parametrize("name", list(FULL_SIZE_CONFIGS))
def test_full_size_config_fields_are_family_fields(name: str) -> None:
    """A misspelt or renamed field is stored as a stray attribute and silently ignored, so the count would follow
    the family default instead (data2vec-audio's positional conv depth once sat under such a key)."""
    fields = dict(FULL_SIZE_CONFIGS[name])
    family_fields = set(AutoConfig.for_model(fields.pop("model_type")).to_dict())
    assert sorted(set(fields) - family_fields) == []


def test_unsupported_family_is_refused() -> None:
    with pytest.raises(ValueError, match="model_type 'bert' is not supported; supported: wav2vec2, hubert"):
        speech_config({"model_type": "bert"})
    with pytest.raises(TypeError, match="transformers config or dict"):
        speech_config(3)


# --------------------------------------------------------------------------- loading
@pytest.mark.parametrize("family", FAMILIES)
def test_loads_offline_from_a_local_folder(family: str, folders, monkeypatch) -> None:
    """AutoConfig/AutoModel from the folder, no network probe; the weights are the saved ones."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: pytest.fail("no network probe"))
    model = build_model("audio", use_wavlm=True, audio_backbone=folders[family])
    assert model.family == family and model.backbone_frozen
    assert model.num_layers == 2 and model.sequence_dim == model.embedding_dim == 32
    reference = AutoModel.from_pretrained(folders[family])
    if family == "whisper":
        reference, mine = reference.get_encoder(), model.backbone.encoder
        assert isinstance(model.backbone, WhisperSpeechBackbone)
    else:
        mine = model.backbone
    ref_state = reference.state_dict()
    for key, value in mine.state_dict().items():
        assert torch.equal(value, ref_state[key]), key
    # the attention-mask policy: layer-normed conv front ends get the mask, group-normed ones and Whisper not
    assert model.backbone_attention_mask == (family in ("wav2vec2", "data2vec-audio"))
    assert not model.normalize_input  # no preprocessor config (Whisper's has no do_normalize)


def test_normalisation_follows_the_feature_extractor_config(tmp_path) -> None:
    on = build_model("audio", use_wavlm=True, audio_backbone=save_tiny_speech("hubert", tmp_path / "on",
                                                                            normalize=True))
    off = build_model("audio", use_wavlm=True, audio_backbone=save_tiny_speech("hubert", tmp_path / "off",
                                                                             normalize=False))
    assert on.normalize_input and not off.normalize_input
    assert on.input_signature == "normalize" and off.input_signature == ""
    wave, length = _wave()
    on.eval(), off.eval()
    manual = off.encode_sequence(normalize_waveform(wave.squeeze(1), length), audio_length=length)
    assert torch.allclose(on.encode_sequence(wave, audio_length=length), manual, atol=1e-5)
    # the feature cache files the two apart although the weights are equal
    assert backbone_tag("f" * 40, input_signature=on.input_signature) != backbone_tag("f" * 40)
    assert backbone_tag("f" * 40, input_signature="") == backbone_tag("f" * 40)  # earlier WavLM tags unchanged


def test_normalize_waveform_matches_the_feature_extractor() -> None:
    from transformers import Wav2Vec2FeatureExtractor

    wave, length = _wave(n=800)
    fe = Wav2Vec2FeatureExtractor(do_normalize=True)
    normalized = normalize_waveform(wave.squeeze(1), length)
    for i, n in enumerate(length.tolist()):
        expected = fe(wave[i, 0, :n].numpy(), sampling_rate=16000)["input_values"][0]
        got = normalized[i]
        assert np.allclose(got[:n].numpy(), expected, atol=1e-4)
        assert not got[n:].any()


def test_whisper_front_end_matches_its_feature_extractor() -> None:
    backbone = build_speech_backbone(TINY_SPEECH_CONFIGS["whisper"]).module
    wave, _ = _wave(n=N)
    fe = WhisperFeatureExtractor(feature_size=80, chunk_length=3)  # a 3 s window, as the tiny config's
    expected = fe([w.numpy() for w in wave[:, 0]], sampling_rate=16000, return_tensors="np")["input_features"]
    got = backbone.log_mel(wave[:, 0])
    assert got.shape == (B, 80, 300) and np.allclose(got.numpy(), expected, atol=1e-4)
    with pytest.raises(ValueError, match="longer than its window of 48000 samples"):
        backbone.log_mel(torch.zeros(1, 48001))


# --------------------------------------------------------------------------- the encoder API
@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_masks_and_cached_entry_points(family: str) -> None:
    model = _encoder(family).eval()
    wave, length = _wave()
    seq = model.encode_sequence(wave, audio_length=length)
    frames = int(model.frame_lengths(torch.tensor([N])))
    assert seq.shape == (B, frames, 32) and frames == (50 if family == "whisper" else 25)
    mask = model.frame_mask(length, seq.shape[1])
    assert mask.sum(1).tolist() == model.frame_lengths(length).tolist()
    out = model(wave, audio_length=length).logits
    assert out.shape == (B, C)
    # the cached-feature entry points give what the waveform gives
    assert torch.allclose(model.forward_features(seq, audio_length=length).logits, out, atol=1e-5)
    assert torch.allclose(model.encode_features(seq, audio_length=length), model.encode(wave, audio_length=length),
                          atol=1e-5)


def test_whisper_ignores_padding() -> None:
    """The clip is padded to Whisper's window anyway: extra zeros change nothing, the mask drops their frames."""
    model = _encoder("whisper").eval()
    wave, _ = _wave(b=1, n=9000)
    short = model.encode(wave, audio_length=torch.tensor([9000]))
    padded = model.encode(F.pad(wave, (0, 7000)), audio_length=torch.tensor([9000]))
    assert torch.allclose(short, padded, atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_stages_unfreeze_the_last_layers(family: str) -> None:
    model = _encoder(family).train()
    head = count_parameters(model.head)
    assert count_parameters(model, trainable=True) == head
    model.unfreeze_backbone(1)
    assert count_parameters(model, trainable=True) == head + count_parameters(model.layers[-1])
    wave, length = _wave()
    F.cross_entropy(model(wave, audio_length=length).logits, torch.tensor([0, 1])).backward()
    assert all(p.grad is not None for p in model.layers[-1].parameters())
    assert all(p.grad is None for p in model.layers[0].parameters())
    model.unfreeze_backbone(None)
    fixed = count_parameters(model.backbone.encoder.embed_positions) if family == "whisper" else 0
    assert count_parameters(model, trainable=True) == count_parameters(model) - fixed > 0
    model.freeze_backbone()
    assert model.backbone_frozen and count_parameters(model, trainable=True) == head


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fusion", ["gated", "xattn"])
def test_fusion_families(family: str, fusion: str) -> None:
    """The clip embedding (gated; concat takes the same ``encode``) and the frame sequence (xattn) of every
    backbone, from waveforms and from cached features; late fusion is the encoder's own ``forward`` (tested
    above), and every fusion family trains in the whole runs below."""
    model = _encoder(family, fusion).eval()
    wave, length = _wave()
    batch = {"audio": wave, "audio_length": length, "video": torch.randn(B, 2, 3, 32, 32),
             "video_valid": torch.ones(B, 2, dtype=torch.bool)}
    out = forward_batch(model, batch)
    assert out.logits.shape == (B, C) and torch.isfinite(out.logits).all()
    seq = model.audio_model.encode_sequence(wave, audio_length=length)
    cached = {k: v for k, v in batch.items() if k != "audio"} | {"audio_features": seq}
    assert torch.allclose(forward_batch(model, cached).logits, out.logits, atol=1e-5)


# --------------------------------------------------------------------------- config and cache keys
def test_config_round_trip_and_the_old_key(folders) -> None:
    cfg = TrainConfig(model=build_cfg(audio_backbone=folders["hubert"]))
    d = cfg.to_dict()
    assert d["model"]["audio_backbone"] == folders["hubert"]
    assert TrainConfig.from_dict(d).model.audio_backbone == folders["hubert"]
    old = json.loads(json.dumps(d))
    old["model"]["wavlm_name_or_path"] = old["model"].pop("audio_backbone")  # a config.json of the WavLM era
    assert TrainConfig.from_dict(old).model.audio_backbone == folders["hubert"]
    whisper = TrainConfig(model=build_cfg(wavlm_config=speech_config(TINY_SPEECH_CONFIGS["whisper"])))
    back = TrainConfig.from_dict(json.loads(json.dumps(whisper.to_dict())))
    assert speech_config(back.model.wavlm_config).model_type == "whisper"
    with pytest.raises(TypeError, match="earlier name of audio_backbone"):
        build_model("audio", use_wavlm=True, audio_backbone="a/b", wavlm_name_or_path="c/d")


def test_the_flags_earlier_name_still_sets_it() -> None:
    """Scripts written before the rename (``--wavlm_name_or_path``) set ``audio_backbone``, in train and convert."""
    import argparse

    from emolab.cli.convert import add_arguments
    from emolab.train.cli import build_parser, config_from_args

    parse = lambda argv: config_from_args(build_parser().parse_args(argv)).model  # noqa: E731
    assert parse(["--use_wavlm", "--wavlm_name_or_path", "x/y"]).audio_backbone == "x/y"
    assert parse(["--use_wavlm", "--audio_backbone", "x/z"]).audio_backbone == "x/z"
    p = argparse.ArgumentParser()
    add_arguments(p)
    for flag in ("--audio_backbone", "--wavlm_name_or_path"):
        assert p.parse_args(["s.pt", "--out", "o", flag, "d"]).audio_backbone == "d"


def build_cfg(**kw):
    from emolab.models import ModelConfig

    return ModelConfig(fusion="audio", use_wavlm=True, pretrained_video=False, **kw)


def test_cache_tags_differ_between_backbones() -> None:
    cache = WavLMFeatureCache()
    tags = {f: cache.fingerprint(_encoder(f).backbone) for f in FAMILIES}
    cache = WavLMFeatureCache()
    assert len(set(tags.values())) == len(FAMILIES)
    assert cache.fingerprint(_encoder("hubert").backbone) == tags["hubert"]  # same config and weights: same key


# --------------------------------------------------------------------------- whole runs
#: the fusion family each backbone trains with in the whole-run test (every family gets one)
RUN_FUSION = {"wav2vec2": "late", "hubert": "concat", "wavlm": "gated", "data2vec-audio": "xattn",
              "whisper": "xattn_gated"}


@pytest.mark.slow  # whole training runs
@pytest.mark.parametrize("family", FAMILIES)
def test_train_and_cv_runs(family: str, folders, demo_root, cv_corpus, tmp_path, capsys) -> None:
    """One epoch through `emolab train` (a fusion family per backbone), then a one-fold `emolab cv` run."""
    cache = tmp_path / "cache"
    common = [*tiny_train_flags(demo_root, cache), "--use_wavlm", "--audio_backbone", folders[family]]
    assert emolab_main(["train", "--fusion", RUN_FUSION[family], *common, "--output_dir", str(tmp_path / "out"),
                        "--run_name", "r"]) == 0
    out = capsys.readouterr().out
    assert "feature cache: WavLM backbone frozen, serving cached" in out
    run = tmp_path / "out" / "runs" / "r"
    assert json.loads((run / "config.json").read_text())["model"]["audio_backbone"] == folders[family]
    assert json.loads((run / "test_metrics.json").read_text())["num_samples"] > 0
    described = json.loads(next((cache / "wavlm").glob("*/backbone.json")).read_text())
    assert described["family"] == family and described["layers"] == 2

    sweep = tmp_path / "sweep"
    argv = ["cv", "--protocol", "luna5", "--fusion", "audio", "--folds", "3", "--out", str(sweep),
            *tiny_train_flags(cv_corpus, cache), "--use_wavlm", "--audio_backbone", folders[family]]
    assert emolab_main(argv) == 0
    assert (sweep / "runs" / "fold3-seed0" / "test_metrics.json").is_file()
