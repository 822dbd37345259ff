"""``--video_backbone`` (issue #16): each torchvision backbone builds, trains, unfreezes by blocks, runs via the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torchvision.models import ResNet18_Weights, ViT_B_16_Weights, WeightsEnum, resnet18, vit_b_16

import emolab.models.layers as layers_mod
from emolab.cli.main import main as emolab_main
from emolab.models import FusionModel, ModelConfig, VideoNet, build_model, count_parameters
from emolab.models.video import VIDEO_BACKBONES
from emolab.train.optim import frozen_batchnorm_to_eval

#: backbone → (feature dim, blocks, parameters of VideoNet(num_classes=8), random init). README 'Models'.
EXPECTED = {
    "resnet18": (512, 5, 11_180_616),  # SPEC §3.2
    "resnet34": (512, 5, 21_288_776),
    "resnet50": (2048, 5, 23_524_424),
    "efficientnet_b0": (1280, 9, 4_017_796),
    "vit_b_16": (768, 13, 85_691_912),  # built for 112x112: 49 patches + class token
}

#: backbone → parameter-name prefixes trainable after ``unfreeze_last_blocks(1)`` (written out, not derived).
LAST_BLOCK = {
    "resnet18": ("layer4.",),
    "resnet34": ("layer4.",),
    "resnet50": ("layer4.",),
    "efficientnet_b0": ("features.8.",),
    "vit_b_16": ("encoder.layers.encoder_layer_11.", "encoder.ln."),
}
#: backbone → parameter-name prefixes of the stem, the last block to unfreeze.
STEM = {
    "resnet18": ("conv1.", "bn1."),
    "resnet34": ("conv1.", "bn1."),
    "resnet50": ("conv1.", "bn1."),
    "efficientnet_b0": ("features.0.",),
    "vit_b_16": ("conv_proj.", "class_token", "encoder.pos_embedding"),
}


#: Every backbone, ViT-B/16 (86M parameters, the slowest to build and run on a CPU) marked slow.
BACKBONES = [pytest.param(n, marks=pytest.mark.slow) if n.startswith("vit") else n for n in VIDEO_BACKBONES]
#: Every backbone for forward and backward passes, all but the default marked slow (seconds each on a CPU).
FORWARD_BACKBONES = [n if n == "resnet18" else pytest.param(n, marks=pytest.mark.slow) for n in VIDEO_BACKBONES]


class _Built(dict):
    """Backbones built on first use (so ``-m "not slow"`` never builds the ViT), each from seed 0."""

    def __missing__(self, name: str) -> VideoNet:
        torch.manual_seed(0)
        self[name] = VideoNet(8, backbone=name)
        return self[name]


@pytest.fixture(scope="module")
def models() -> dict[str, VideoNet]:
    return _Built()


def test_choices_and_default() -> None:
    assert VIDEO_BACKBONES == tuple(EXPECTED)
    assert ModelConfig().video_backbone == "resnet18"
    with pytest.raises(ValueError, match="video_backbone must be one of"):
        ModelConfig(video_backbone="resnet101")


def test_default_is_unchanged_resnet18(models) -> None:
    """Same keys and shapes as torchvision's resnet18 with ``fc`` moved to ``head`` (old checkpoints load)."""
    ref = {f"backbone.{k}": v.shape for k, v in resnet18().state_dict().items() if not k.startswith("fc.")}
    ref.update({"head.weight": torch.Size([8, 512]), "head.bias": torch.Size([8])})
    assert {k: v.shape for k, v in models["resnet18"].state_dict().items()} == ref
    assert isinstance(build_model("video"), VideoNet) and build_model("video").backbone_name == "resnet18"


@pytest.mark.parametrize("name", BACKBONES)
def test_counts_and_dims(models, name) -> None:
    dim, blocks, params = EXPECTED[name]
    m = models[name]
    assert (m.embedding_dim, m.sequence_dim, m.num_blocks) == (dim, dim, blocks)
    assert m.head.in_features == dim
    assert count_parameters(m) == params


@pytest.mark.parametrize("name", FORWARD_BACKBONES)
def test_forward_backward_channels_last(models, name) -> None:
    m = models[name]
    m.unfreeze_backbone()
    m.train()
    torch.manual_seed(1)
    video = torch.randn(2, 2, 3, 112, 112)
    valid = torch.tensor([[True, True], [True, False]])
    assert m.encode_sequence(video).shape == (2, 2, EXPECTED[name][0])
    m.zero_grad(set_to_none=True)
    m(video).logits.logsumexp(-1).sum().backward()
    for pname, p in m.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
    # the trainer's CUDA path: channels-last weights and frames give the same logits
    m.eval()
    with torch.no_grad():
        seq, emb = m.encode_sequence(video), m.encode(video, video_valid=valid)
        torch.testing.assert_close(emb[1], seq[1, 0])  # the repeated frame is left out of the mean
        ref = m(video).logits
        cl = m.to(memory_format=torch.channels_last)
        frames = video.flatten(0, 1).contiguous(memory_format=torch.channels_last).view_as(video)
        torch.testing.assert_close(cl(frames).logits, ref, rtol=1e-4, atol=1e-4)
        m.to(memory_format=torch.contiguous_format)


def _trainable_backbone(m: VideoNet) -> set[str]:
    return {n for n, p in m.backbone.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", BACKBONES)
def test_unfreeze_last_blocks(models, name) -> None:
    m = models[name]
    all_names = {n for n, _ in m.backbone.named_parameters()}
    m.unfreeze_last_blocks(0)
    assert _trainable_backbone(m) == set() and all(p.requires_grad for p in m.head.parameters())
    m.unfreeze_last_blocks(1)
    expected = {n for n in all_names if n.startswith(LAST_BLOCK[name])}
    assert expected and _trainable_backbone(m) == expected
    counts = []
    for n in range(m.num_blocks + 1):
        m.unfreeze_last_blocks(n)
        counts.append(count_parameters(m, trainable=True))
    assert counts == sorted(set(counts)), "each block adds parameters"
    m.unfreeze_last_blocks(m.num_blocks - 1)  # everything but the stem
    assert _trainable_backbone(m) == {n for n in all_names if not n.startswith(STEM[name])}
    m.unfreeze_last_blocks(m.num_blocks)
    assert _trainable_backbone(m) == all_names
    with pytest.raises(ValueError, match=f"in \\[0, {m.num_blocks}\\] for {name}"):
        m.unfreeze_last_blocks(m.num_blocks + 1)


def test_frozen_batchnorm_of_efficientnet_goes_to_eval(models) -> None:
    m = models["efficientnet_b0"]
    m.unfreeze_last_blocks(1)
    m.train()
    switched = set(frozen_batchnorm_to_eval(m))
    bns = {n for n, mod in m.named_modules() if isinstance(mod, nn.BatchNorm2d)}
    assert switched == {n for n in bns if not n.startswith("backbone.features.8.")}
    assert m.get_submodule("backbone.features.8.1").training
    m.unfreeze_backbone()


@pytest.mark.slow  # builds ViT-B/16
def test_vit_resizes_other_frame_sizes(models) -> None:
    m = models["vit_b_16"].eval()
    video = torch.randn(1, 2, 3, 64, 64)
    with torch.no_grad():
        out = m.encode_sequence(video)
        big = nn.functional.interpolate(video.flatten(0, 1), size=(112, 112), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, m.encode_sequence(big.view(1, 2, 3, 112, 112)))


def test_xattn_video_projection_follows_the_backbone() -> None:
    torch.manual_seed(0)
    model = build_model("xattn", video_backbone="efficientnet_b0")
    assert isinstance(model, FusionModel) and model.video_proj.in_features == 1280
    concat = build_model("concat", video_backbone="resnet50")
    assert concat.video_proj.in_features == 2048
    video = torch.randn(2, 2, 3, 48, 48)
    mel = torch.randn(2, 1, 64, 101)
    assert model.eval()(video, mel).logits.shape == (2, 8)


def test_pretrained_offline_message_names_the_backbone(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: False)
    with pytest.raises(RuntimeError, match="video efficientnet_b0.*--no_pretrained_video"):
        build_model("video", video_backbone="efficientnet_b0", pretrained_video=True)


@pytest.mark.slow  # builds ViT-B/16
def test_pretrained_vit_interpolates_position_embeddings(monkeypatch, tmp_path) -> None:
    """ImageNet ViT weights (224: 14x14 patches) load into the 112 model with a 7x7 position grid."""
    monkeypatch.setattr(layers_mod, "host_reachable", lambda url, timeout=3.0: True)
    torch.manual_seed(0)
    source = vit_b_16().state_dict()  # stands in for the 224 ImageNet checkpoint
    calls = []

    def fake_state_dict(self, *args, **kwargs):
        calls.append(self)
        return dict(source)

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_state_dict)
    m = VideoNet(8, backbone="vit_b_16", pretrained=True)
    assert calls == [ViT_B_16_Weights.IMAGENET1K_V1]
    pos = m.backbone.encoder.pos_embedding
    assert pos.shape == (1, 50, 768)
    torch.testing.assert_close(pos[:, :1], source["encoder.pos_embedding"][:, :1])  # class token position kept
    grid = source["encoder.pos_embedding"][0, 1:].T.reshape(1, 768, 14, 14)
    ref = nn.functional.interpolate(grid, size=(7, 7), mode="bicubic", align_corners=True)
    torch.testing.assert_close(pos[0, 1:], ref.reshape(768, 49).T)
    torch.testing.assert_close(m.backbone.conv_proj.weight, source["conv_proj.weight"])
    assert ResNet18_Weights.IMAGENET1K_V1.url.endswith("resnet18-f37072fd.pth")  # the default's file is unchanged


@pytest.mark.slow  # a whole training run
def test_cli_trains_a_non_default_backbone(demo_root, tmp_path, cache_dir, one_torch_thread, capsys) -> None:
    out = tmp_path / "out"
    rc = emolab_main([
        "train", "--data_root", str(demo_root), "--fusion", "video", "--video_backbone", "efficientnet_b0",
        "--no_pretrained_video", "--epochs", "1", "--batch_size", "8", "--frames", "2", "--frame_size", "64",
        "--clip_seconds", "1", "--num_workers", "0", "--output_dir", str(out), "--no_progress", "--device", "cpu",
        "--face_detector", "mtcnn",  # the other issue #16 option, through the same one-epoch run
    ])
    assert rc in (0, None), capsys.readouterr().err[-3000:]
    (run,) = (out / "runs").glob("*")
    saved = json.loads(next(run.glob("config*.json")).read_text())
    assert saved["model"]["video_backbone"] == "efficientnet_b0" and saved["data"]["face_detector"] == "mtcnn"
    assert json.loads((run / "test_metrics.json").read_text())


def test_readme_table_has_the_pinned_counts() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in readme.splitlines() if line.strip().startswith("| ")}
    for name, (dim, blocks, params) in EXPECTED.items():
        row = rows[name]
        assert f"{params:,}" in row and f"| {dim} |" in row and f"({blocks})" in row, row


def test_two_stage_unfreezes_efficientnet_stages() -> None:
    from emolab.train import OptimConfig, TrainConfig
    from emolab.train.optim import configure_stage, plan_stages

    cfg = TrainConfig(
        model=ModelConfig(fusion="concat", video_backbone="efficientnet_b0"),
        optim=OptimConfig(two_stage_training=True, stage1_epochs=1, fusion_unfreeze_audio=False,
                          fusion_unfreeze_video_blocks=2),
        epochs=2, progress=False, device="cpu",
    )
    torch.manual_seed(0)
    model = build_model("concat", video_backbone="efficientnet_b0")
    groups = configure_stage(model, cfg, plan_stages(cfg)[1])
    assert [g["name"] for g in groups] == ["fusion", "video"]
    features = model.video_model.backbone.features
    expected = {id(p) for p in [*features[8].parameters(), *features[7].parameters()]}
    assert {id(p) for p in groups[1]["params"]} == expected
    model.train()
    switched = frozen_batchnorm_to_eval(model)
    assert "video_model.backbone.features.6.0.block.0.1" in switched
    trained = ("video_model.backbone.features.7.", "video_model.backbone.features.8.")
    assert not any(n.startswith(trained) for n in switched)
