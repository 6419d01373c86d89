"""Shapes of the teachers, OCBE and reverse decoders, and weight loading of the teachers."""

import pytest
import timm
import torch
from safetensors.torch import save_file

from adlab.models.fusion.ocbe import OCBE
from adlab.models.students.rd_decoder import ReverseDecoder
from adlab.models.teachers.timm_encoder import TimmEncoder
from adlab.models.teachers.weights import WeightsError

# teacher -> (channels of layer1..3, OCE output channels, block, decoder depths)
EXPECTED = {
    "resnet18": ([64, 128, 256], 512, "basic", [2, 2, 2]),
    "resnet34": ([64, 128, 256], 512, "basic", [3, 4, 6]),
    "wide_resnet50_2": ([256, 512, 1024], 2048, "bottleneck", [3, 4, 6]),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_teacher_ocbe_decoder_shapes(name):
    channels, code_channels, block, depths = EXPECTED[name]
    teacher = TimmEncoder(name, pretrained=False)
    assert (
        teacher.channels == channels
        and teacher.features.block == block
        and teacher.features.depths == depths
    )
    x = torch.randn(2, 3, 64, 64)
    feats = teacher(x)
    assert [tuple(f.shape) for f in feats] == [
        (2, c, 64 // s, 64 // s) for c, s in zip(channels, (4, 8, 16))
    ]
    fusion = OCBE(channels, block, layers=depths[0], base_width=teacher.features.base_width)
    code = fusion(feats)
    assert tuple(code.shape) == (2, code_channels, 2, 2)
    decoder = ReverseDecoder(channels, block, depths, base_width=teacher.features.base_width)
    outs = decoder(code)
    assert [o.shape for o in outs] == [f.shape for f in feats]
    # Decoder stage depths mirror the teacher (official de_resnet tables).
    assert [len(s) for s in decoder.stages] == depths


def test_wide_resnet_block_widths_follow_the_official_definition():
    teacher = TimmEncoder("wide_resnet50_2", pretrained=False)
    fusion = OCBE(teacher.channels, "bottleneck", layers=3, base_width=teacher.features.base_width)
    first = fusion.oce[0]
    # 3072 -> width 1024 (planes 512 x 128/64) -> 2048, stride 2 with a 1x1 projection.
    assert first.conv1.in_channels == 3072 and first.conv1.out_channels == 1024
    assert first.conv3.out_channels == 2048 and first.conv2.stride == (2, 2)
    decoder = ReverseDecoder(teacher.channels, "bottleneck", [3, 4, 6], teacher.features.base_width)
    up = decoder.stages[0][0]
    assert isinstance(up.conv2, torch.nn.ConvTranspose2d) and up.conv2.kernel_size == (2, 2)
    assert up.conv1.in_channels == 2048 and up.conv3.out_channels == 1024


def _full_resnet18_state():
    model = timm.create_model("resnet18", pretrained=False)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_teacher_loads_a_local_checkpoint_strictly(tmp_path, fmt):
    state = _full_resnet18_state()
    for v in state.values():
        if v.is_floating_point():
            v.uniform_(-1, 1)
    path = tmp_path / f"resnet18.{fmt}"
    if fmt == "pth":
        # DataParallel prefix and a Lightning-style wrapper are unwrapped.
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    else:
        save_file(state, str(path))
    teacher = TimmEncoder("resnet18", pretrained=str(path))
    loaded = teacher.model.state_dict()
    assert torch.equal(loaded["layer3.1.conv2.weight"], state["layer3.1.conv2.weight"])
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])
    assert teacher.weights_source == str(path)


def test_checkpoint_mismatch_names_the_keys_and_file(tmp_path):
    state = _full_resnet18_state()
    del state["layer2.0.bn1.weight"]
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        TimmEncoder("resnet18", pretrained=str(path))
    msg = str(err.value)
    assert "bad.pth" in msg and "layer2.0.bn1.weight" in msg and "extra.weight" in msg
    assert "layer1.0.conv1.weight: model (64, 64, 3, 3) vs file (3, 3, 3, 3)" in msg


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        TimmEncoder("resnet18", pretrained=str(tmp_path / "nope.pth"))


def test_offline_download_says_which_file_to_fetch(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(WeightsError) as err:
        TimmEncoder("resnet18", pretrained=True)
    msg = str(err.value)
    assert "https://huggingface.co/timm/resnet18.tv_in1k" in msg
    assert "teacher.pretrained=" in msg


def test_auto_falls_back_to_random_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.warns(UserWarning, match="RANDOMLY INITIALISED"):
        teacher = TimmEncoder("resnet18", pretrained="auto")
    assert teacher.weights_source.startswith("random")


def test_a_cached_hub_download_is_used_offline(monkeypatch, tmp_path):
    # The layout huggingface_hub writes: models--<org>--<name>/{refs/main, snapshots/<rev>/file}.
    state = {k: v for k, v in _full_resnet18_state().items()}
    for v in state.values():
        if v.is_floating_point():
            v.normal_()
    repo = tmp_path / "hub" / "models--timm--resnet18.tv_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / "abc123" / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    teacher = TimmEncoder("resnet18", pretrained=True)
    assert torch.equal(
        teacher.model.state_dict()["layer2.1.conv1.weight"], state["layer2.1.conv1.weight"]
    )
    assert teacher.weights_source == "timm:resnet18.tv_in1k"
