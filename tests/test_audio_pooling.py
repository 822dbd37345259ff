"""``--audio_pooling`` on the audio-only model (the ablation baseline of the fused models' audio branch).

``attention``/``transformer`` pool the encoder's per-step embeddings (AudioNet: ``forward_sequence``; a speech
encoder: the backbone's hidden states) over their padding mask, as concat/gated pool their audio branch; ``mean``
(the default) is the computation of before, bit for bit, with the same modules and state_dict keys.
"""

from __future__ import annotations

import pytest
import torch

from emolab.models import AudioNet, build_model
from emolab.models.core import forward_batch
from emolab.models.layers import masked_mean
from emolab.models.registry import ModelConfig, count_parameters
from emolab.models.wavlm import SpeechAudioEncoder
from emolab.train import OptimConfig
from tests.configs import TINY_SPEECH_CONFIGS, tiny_wavlm_config


def _mel(B: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"audio": torch.randn(B, 1, 16, 101, generator=g), "audio_length": torch.tensor([16000, 8000, 4000][:B])}


@pytest.mark.parametrize("resnet", [False, True], ids=["cnn", "resnet18"])
def test_mean_is_the_encode_of_before(resnet) -> None:
    """Default and explicit ``mean``: no new module, the same weights, and the encoder's own pooling (AudioCNN's
    adaptive grid over the valid frames, AudioResNet18's masked time mean), bit for bit."""
    torch.manual_seed(0)
    a = build_model("audio", n_mels=16, use_resnet_audio=resnet)
    torch.manual_seed(0)
    b = build_model("audio", n_mels=16, use_resnet_audio=resnet, audio_pooling="mean")
    assert a.pool is None and b.pool is None
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    batch = _mel()
    a.eval()
    with torch.no_grad():
        old = a.head(a.encoder(batch["audio"], mel_lengths=a.mel_lengths(batch["audio_length"])))  # before the option
        assert torch.equal(forward_batch(a, batch).logits, old)
        assert torch.equal(forward_batch(b.eval(), batch).logits, old)


@pytest.mark.parametrize("kind", ["attention", "transformer"])
def test_learned_pooling_of_the_mel_model(kind) -> None:
    torch.manual_seed(0)
    model = build_model("audio", n_mels=16, audio_pooling=kind)
    plain = build_model("audio", n_mels=16)
    assert isinstance(model, AudioNet) and model.pool is not None and model.pool.kind == kind
    # the README's counts: the same pooling as the fused models' audio branch (AudioCNN steps, 128-d)
    assert count_parameters(model) - count_parameters(plain) == {"attention": 8_320, "transformer": 132_480}[kind]
    assert {n for n, _ in model.named_parameters()} - {n for n, _ in plain.named_parameters()} == {
        n for n, _ in model.named_parameters() if n.startswith("pool.")}
    batch = _mel()
    model.eval()
    with torch.no_grad():
        out = forward_batch(model, batch).logits
        seq = model.encoder.forward_sequence(batch["audio"])  # (B, Ta, 128)
        mask = model.step_mask(batch["audio_length"], seq.shape[1])
        assert mask.sum(1).tolist() == [25, 13, 7]  # 101, 51, 26 Mel frames -> ceil twice by 2
        torch.testing.assert_close(out, model.head(model.pool(seq, mask)))
        # padded steps do not count: their features replaced, the pooled embedding is the same
        junk = seq.clone()
        junk[~mask] = 1e3
        torch.testing.assert_close(model.pool(junk, mask), model.pool(seq, mask))
        assert not torch.allclose(model.pool(seq), model.pool(seq, mask))
    model.train()
    out = forward_batch(model, batch).logits
    out.logsumexp(-1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.pool.parameters())


def test_two_stage_keeps_the_pooling_with_the_head() -> None:
    """Freezing the encoder (AudioNet) or the backbone (speech encoders, stage 1) leaves a learned pooling
    trainable: it is new like the head, and trains in the head's group."""
    mel = build_model("audio", n_mels=16, audio_pooling="attention")
    mel.freeze_backbone()
    assert all(p.requires_grad for p in mel.pool.parameters())
    assert not any(p.requires_grad for p in mel.encoder.parameters())
    torch.manual_seed(0)
    wave = build_model("audio", use_wavlm=True, wavlm_config=tiny_wavlm_config(), audio_pooling="transformer")
    assert isinstance(wave, SpeechAudioEncoder) and wave.pool is not None
    pool = {id(p) for p in wave.pool.parameters()}
    for stage in (1, 2):
        groups = wave.param_groups(stage, OptimConfig(lr=1e-3))
        (head,) = [g for g in groups if g["name"] == "head"]
        assert pool <= {id(p) for p in head["params"]}
        assert all(p.requires_grad for p in wave.pool.parameters())
    assert count_parameters(wave.pool) == count_parameters(build_model("gated", use_wavlm=True,
                                                                       wavlm_config=tiny_wavlm_config(),
                                                                       audio_pooling="transformer").audio_pool)


@pytest.mark.parametrize("family", ["wavlm", "whisper"])
def test_speech_encoder_pooling(family) -> None:
    """The backbone's hidden states pooled over the valid frames; from cached features too (the feature cache of
    a frozen backbone serves ``forward_features``); ``mean`` stays the masked mean."""
    config = dict(TINY_SPEECH_CONFIGS[family])
    torch.manual_seed(0)
    model = build_model("audio", use_wavlm=True, wavlm_config=config, audio_pooling="attention").eval()
    torch.manual_seed(0)
    plain = build_model("audio", use_wavlm=True, wavlm_config=dict(TINY_SPEECH_CONFIGS[family])).eval()
    assert plain.pool is None and set(model.state_dict()) - set(plain.state_dict()) == {
        k for k in model.state_dict() if k.startswith("pool.")}
    g = torch.Generator().manual_seed(2)
    wave, length = torch.randn(2, 1, 16000, generator=g) * 0.1, torch.tensor([16000, 6000])
    with torch.no_grad():
        hidden = model.backbone_sequence(wave, audio_length=length)
        mask = model.frame_mask(length, hidden.shape[1])
        assert not mask[1].all() and mask[0].all()
        out = model(wave, audio_length=length).logits
        torch.testing.assert_close(out, model.head(model.pool(hidden, mask)))
        torch.testing.assert_close(model.forward_features(hidden, audio_length=length).logits, out)
        assert not torch.allclose(out, model.head(model.pool(hidden)))  # the padding would count without the mask
        p_hidden = plain.backbone_sequence(wave, audio_length=length)
        assert torch.equal(plain(wave, audio_length=length).logits,
                           plain.head(masked_mean(p_hidden, plain.frame_mask(length, p_hidden.shape[1]))))


def test_speech_encoder_pooling_refuses_the_head_embedding() -> None:
    with pytest.raises(ValueError, match="does not combine with embedding='head'"):
        SpeechAudioEncoder(config=tiny_wavlm_config(), pooling="attention", embedding="head")
    with pytest.raises(ValueError, match="pooling must be one of"):
        AudioNet(pooling="max")
    cfg = ModelConfig(fusion="audio", audio_pooling="transformer")
    assert cfg.audio_pooling == "transformer"
