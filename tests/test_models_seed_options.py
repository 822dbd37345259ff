"""The seed's xattn and gate behaviour as model options (issue #12), their defaults, flags and counts.

Each option is checked against a computation written out here from the
submodules, not against emolab's own earlier outputs.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import WavLMConfig

from emolab.models import (
    AudioNet,
    FusionModel,
    ModelConfig,
    VideoNet,
    WavLMAudioEncoder,
    build_model,
    count_parameters,
    forward_batch,
)
from tests.configs import tiny_wavlm_config as tiny_config

B, T = 2, 3


def _inputs(frames: int = 101) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    video = torch.randn(B, T, 3, 48, 48)
    ramp = torch.linspace(-1, 1, frames).view(1, 1, 1, frames)  # time-varying, so time steps differ
    mel = torch.randn(B, 1, 64, frames) * 10 - 40 + 20 * ramp * torch.randn(B, 1, 64, 1)
    return video, mel


def test_defaults_for_new_training() -> None:
    cfg = ModelConfig()
    assert cfg.xattn_attention == "sequential"  # the seed's
    assert cfg.gate_bias_init == -1.0  # the seed's
    assert cfg.xattn_head_dropout == pytest.approx(0.2)  # the seed's
    assert cfg.mel_sequence == "time"  # emolab's improvement (the seed: "clip")
    assert cfg.xattn_fuse_order == "av"  # emolab's (the seed: "va"); symmetric for a model trained from scratch
    assert cfg.wavlm_embedding == "hidden"  # emolab's (the seed: "head")


@pytest.mark.parametrize(
    "field,value",
    [("xattn_attention", "both"), ("mel_sequence", "frames"), ("xattn_fuse_order", "vv"),
     ("xattn_head_dropout", 1.0), ("gate_bias_init", "low"), ("wavlm_embedding", "cls")],
)
def test_bad_option_values_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(fusion="xattn", **{field: value})


@pytest.mark.parametrize("attention", ["sequential", "parallel"])
@pytest.mark.parametrize("order", ["av", "va"])
@pytest.mark.parametrize("head", ["concat", "gated"])
def test_xattn_options_compute_the_written_out_network(attention: str, order: str, head: str) -> None:
    torch.manual_seed(1)
    model = build_model("xattn", xattn_head=head, xattn_attention=attention, xattn_fuse_order=order).eval()
    video, mel = _inputs()
    with torch.no_grad():
        out = model(video, mel, return_gate=True)
        v = model.video_proj(model.video_model.encode_sequence(video))
        a = model.audio_proj(model.audio_model.encode_sequence(mel))
        v_out = model.v2a.norm(v + model.v2a.attn(v, a, a)[0])
        keys = v_out if attention == "sequential" else v  # the seed: a2v attends to the updated video
        a_out = model.a2v.norm(a + model.a2v.attn(a, keys, keys)[0])
        v_emb, a_emb = v_out.mean(1), a_out.mean(1)
        first, second = (a_emb, v_emb) if order == "av" else (v_emb, a_emb)
        x = torch.cat([first, second], dim=-1)
        if head == "concat":
            expected = model.classifier[2](torch.relu(model.classifier[0](x)))
        else:
            g = torch.sigmoid(model.gate[2](torch.relu(model.gate[0](x))))
            expected = model.classifier(g * first + (1 - g) * second)
            audio_weight = g if order == "av" else 1 - g  # `gate` is always the audio weight
            assert torch.allclose(out.gate, audio_weight, atol=1e-6)
    assert torch.allclose(out.logits, expected, atol=1e-5)


def test_sequential_and_parallel_differ() -> None:
    video, mel = _inputs()
    outs = []
    for attention in ("sequential", "parallel"):
        torch.manual_seed(2)
        outs.append(build_model("xattn", xattn_attention=attention).eval()(video, mel).logits)
    assert (outs[0] - outs[1]).abs().max() > 1e-4


def test_mel_sequence_clip_is_one_step_the_clip_embedding() -> None:
    video, mel = _inputs()
    torch.manual_seed(3)
    clip = AudioNet(sequence="clip").eval()
    time = AudioNet(sequence="time").eval()
    time.load_state_dict(clip.state_dict())
    with torch.no_grad():
        seq = clip.encode_sequence(mel)
        assert seq.shape == (B, 1, 128)
        assert torch.equal(seq[:, 0], clip.encode(mel))
        assert time.encode_sequence(mel).shape == (B, 25, 128)
    lengths = torch.tensor([16000, 8000])
    assert clip.frame_mask(lengths, 1).tolist() == [[True], [True]]
    with pytest.raises(ValueError, match="sequence"):
        AudioNet(sequence="frames")  # type: ignore[arg-type]

    torch.manual_seed(4)
    model = build_model("xattn", mel_sequence="clip").eval()
    out = forward_batch(model, {"video": video, "audio": mel, "audio_length": lengths}, return_attn=True)
    assert out.attn_v2a.shape == (B, 4, T, 1) and out.attn_a2v.shape == (B, 4, 1, T)
    assert out.audio_mask.shape == (B, 1)
    torch.manual_seed(4)
    per_step = build_model("xattn", mel_sequence="time").eval()
    assert (per_step(video, mel).logits - model(video, mel).logits).abs().max() > 1e-4


def test_head_dropout_keeps_keys_and_counts() -> None:
    keys, counts = set(), set()
    for p in (0.0, 0.2, 0.5):
        for head in ("concat", "gated"):
            model = build_model("xattn", xattn_head=head, xattn_head_dropout=p, use_resnet_audio=True)
            mlp = model.classifier if head == "concat" else model.gate
            assert [m.p for m in mlp.modules() if isinstance(m, nn.Dropout)] == [p]
            keys.add((head, tuple(k for k in model.state_dict() if k.startswith(("classifier.", "gate.")))))
            counts.add((head, count_parameters(model)))
    assert counts == {("concat", 24_273_176), ("gated", 24_239_385)}  # SPEC §3.4: dropout adds nothing
    assert keys == {
        ("concat", ("classifier.0.weight", "classifier.0.bias", "classifier.2.weight", "classifier.2.bias")),
        ("gated", ("gate.0.weight", "gate.0.bias", "gate.2.weight", "gate.2.bias", "classifier.weight",
                   "classifier.bias")),
    }


def test_head_dropout_acts_in_training_only() -> None:
    video, mel = _inputs()
    torch.manual_seed(5)
    kw = dict(xattn_attn_dropout=0.0, xattn_stochastic_depth=0.0, spec_augment=False)
    model = build_model("xattn", xattn_head_dropout=0.5, **kw)
    model.train()
    model.audio_model.eval(), model.video_model.eval()  # BatchNorm: batch statistics would differ anyway
    assert not torch.equal(model(video, mel).logits, model(video, mel).logits)
    model.classifier[1][1].p = 0.0
    assert torch.equal(model(video, mel).logits, model(video, mel).logits)


@pytest.mark.parametrize("name", ["gated", "xattn_gated"])
def test_gate_bias_init(name: str) -> None:
    torch.manual_seed(6)
    model = build_model(name)
    last = model.gate[-2]
    assert isinstance(last, nn.Linear) and last.out_features == 1
    assert last.bias.item() == -1.0
    assert build_model(name, gate_bias_init=0.5).gate[-2].bias.item() == 0.5
    torch.manual_seed(6)
    default = build_model(name, gate_bias_init=None).gate[-2]
    assert abs(default.bias.item()) <= 1 / last.in_features**0.5  # PyTorch's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert torch.equal(default.weight, last.weight)  # the constant draws no random numbers


def test_gate_starts_near_sigmoid_of_its_bias() -> None:
    video, mel = _inputs()
    torch.manual_seed(7)
    model = build_model("gated").eval()
    with torch.no_grad():
        nn.init.zeros_(model.gate[-2].weight)
        g = model(video, mel, return_gate=True).gate
    assert torch.allclose(g, torch.full_like(g, torch.sigmoid(torch.tensor(-1.0)).item()))


def test_wavlm_embedding_head_is_the_first_head_linear() -> None:
    torch.manual_seed(8)
    enc = WavLMAudioEncoder(config=tiny_config(), embedding="head").eval()
    wave = torch.randn(B, 1, 4000) * 0.1
    with torch.no_grad():
        pooled = enc.backbone(wave.squeeze(1)).last_hidden_state.mean(1)
        assert torch.allclose(enc.encode(wave), enc.head[0](pooled), atol=1e-6)
        assert torch.allclose(enc(wave).logits, enc.head(pooled), atol=1e-6)
    assert enc.embedding_dim == 768 and enc.sequence_dim == 32
    with pytest.raises(ValueError, match="embedding"):
        WavLMAudioEncoder(config=tiny_config(), embedding="cls")

    model = build_model("gated", use_wavlm=True, wavlm_config=tiny_config(), wavlm_embedding="head")
    assert model.audio_proj.in_features == 768
    unused = model.unused_parameter_names()
    assert "audio_model.head.3.weight" in unused and "audio_model.head.0.weight" not in unused
    batch = {"video": torch.randn(B, 2, 3, 48, 48), "audio": wave, "label": torch.tensor([0, 1])}
    loss = nn.functional.cross_entropy(forward_batch(model.train(), batch).logits, batch["label"])
    loss.backward()
    assert model.audio_model.head[0].weight.grad is not None  # the seed trains head[0] inside fusion
    assert model.audio_model.head[3].weight.grad is None
    hidden = build_model("gated", use_wavlm=True, wavlm_config=tiny_config())
    assert hidden.audio_proj.in_features == 32 and "audio_model.head.0.weight" in hidden.unused_parameter_names()


def test_train_cli_flags_map_onto_model_config() -> None:
    from emolab.train.cli import build_parser, config_from_args

    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["--fusion", "xattn_gated"])).model
    assert (cfg.xattn_attention, cfg.mel_sequence, cfg.xattn_fuse_order, cfg.gate_bias_init) == (
        "sequential", "time", "av", -1.0)
    args = parser.parse_args([
        "--fusion", "xattn_gated", "--xattn_attention", "parallel", "--mel_sequence", "clip",
        "--xattn_fuse_order", "va", "--xattn_head_dropout", "0.1", "--gate_bias_init", "none",
        "--wavlm_embedding", "head",
    ])
    cfg = config_from_args(args).model
    assert (cfg.xattn_attention, cfg.mel_sequence, cfg.xattn_fuse_order) == ("parallel", "clip", "va")
    assert cfg.xattn_head_dropout == pytest.approx(0.1) and cfg.gate_bias_init is None
    assert cfg.wavlm_embedding == "head"
    assert config_from_args(parser.parse_args(["--gate_bias_init", "-2"])).model.gate_bias_init == -2.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--gate_bias_init", "low"])


# --------------------------------------------------------------------------- SPEC §3.4: the seed's WavLM-xattn
@pytest.fixture(scope="module")
def full_wavlm_xattn() -> FusionModel:
    torch.manual_seed(0)
    return build_model("xattn", use_wavlm=True, wavlm_config=WavLMConfig())


def test_seed_wavlm_xattn_total_is_the_layout_before_dd6785f(full_wavlm_xattn: FusionModel) -> None:
    """106,736,968 = WavLM audio + video + Conv1d(768→128, k=3) + a_in_proj + v_in_proj + 2 MHA + 2 LN + head.

    That layout (the seed before dd6785f: a Conv1d over WavLM's hidden
    states, then Linear(128→128)) is not one of emolab's: at dd6785f the seed
    replaced it by ``audio_seq_proj`` Linear(768→128) then ``a_in_proj``, which
    is what ``load_seed_checkpoint`` reads (the two folded into emolab's
    ``audio_proj``). Its sum is checked here from real modules.
    """
    model = full_wavlm_xattn
    audio, video = count_parameters(model.audio_model), count_parameters(model.video_model)
    assert (audio, video) == (94_978_680, 11_180_616)
    assert count_parameters(VideoNet()) == video
    conv = count_parameters(nn.Conv1d(768, 128, kernel_size=3))
    a_in = count_parameters(nn.Linear(128, 128))
    v_in = count_parameters(model.video_proj)
    mha = count_parameters(model.v2a.attn) + count_parameters(model.a2v.attn)
    ln = count_parameters(model.v2a.norm) + count_parameters(model.a2v.norm)
    head = count_parameters(model.classifier)
    assert (conv, a_in, v_in, mha, ln, head) == (295_040, 16_512, 65_664, 132_096, 512, 67_848)
    assert audio + video + conv + a_in + v_in + mha + ln + head == 106_736_968
    frozen = count_parameters(model.audio_model.backbone)
    assert 106_736_968 - frozen == 12_355_032  # the design note's trainable count for it

    # emolab's WavLM-xattn (dd6785f's layout, audio_seq_proj and a_in_proj folded into audio_proj)
    assert count_parameters(model.audio_proj) == 98_432  # Linear(768→128)
    assert count_parameters(model.audio_fallback_conv) == 24_704  # Conv1d(64→128, k=3), unused with WavLM
    assert count_parameters(model) == 106_548_552
    assert count_parameters(model) + 16_512 == 106_565_064  # the seed's dd6785f model, a_in_proj kept apart


def test_configs_saved_before_the_options_keep_parallel_attention() -> None:
    """A run folder written before ``xattn_attention`` existed attended in parallel; it loads that way."""
    from emolab.train.config import TrainConfig

    saved = TrainConfig(model=ModelConfig(fusion="xattn")).to_dict()
    assert TrainConfig.from_dict(saved).model.xattn_attention == "sequential"  # saved today: as saved
    for field in ("xattn_attention", "mel_sequence", "xattn_fuse_order", "xattn_head_dropout", "gate_bias_init",
                  "wavlm_embedding"):
        del saved["model"][field]
    old = TrainConfig.from_dict(saved).model
    assert old.xattn_attention == "parallel"
    assert (old.mel_sequence, old.xattn_fuse_order, old.wavlm_embedding) == ("time", "av", "hidden")
