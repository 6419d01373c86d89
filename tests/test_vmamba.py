"""VMamba v0 teacher: tap shapes, fast vs reference scan end to end, strict loading of the
official key layout, and the documented errors for bad checkpoints and offline downloads."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from adlab.models.teachers.vmamba import VMambaEncoder
from adlab.models.teachers.vmamba_weights import OFFICIAL_URLS
from adlab.models.teachers.weights import WeightsError

_spec = importlib.util.spec_from_file_location(
    "vmamba_keys", Path(__file__).parent / "fixtures" / "vmamba_keys.py"
)
vmamba_keys = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(vmamba_keys)

TINY = dict(dim=8, depths=(1, 1, 1, 1), d_state=4)


class TrainingConfig:
    """Stands in for the yacs config that VMamba's training code pickles next to the weights."""

    def __init__(self) -> None:
        self.MODEL = {"TYPE": "vssm", "DROP_PATH_RATE": 0.1}


def official_state(seed: int = 0, **shape_kw) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = vmamba_keys.official_v0_shapes(**shape_kw)
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def test_tiny_config_taps():
    enc = VMambaEncoder(**TINY)
    feats = enc(torch.randn(2, 3, 64, 96))
    assert enc.channels == [16, 32, 64, 64] and enc.strides == [8, 16, 32, 32]
    assert [tuple(f.shape) for f in feats] == [
        (2, 16, 8, 12), (2, 32, 4, 6), (2, 64, 2, 3), (2, 64, 2, 3),
    ]  # fmt: skip
    assert enc.weights_source == "random"


def test_v0_tiny_taps_at_64px():
    enc = VMambaEncoder("vanilla_vmamba_tiny").eval()
    assert enc.channels == [192, 384, 768, 768] and enc.strides == [8, 16, 32, 32]
    with torch.no_grad():
        feats = enc(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [
        (1, 192, 8, 8), (1, 384, 4, 4), (1, 768, 2, 2), (1, 768, 2, 2),
    ]  # fmt: skip
    n_params = sum(p.numel() for p in enc.parameters())
    head = 768 * 2 + 768 * 1000 + 1000  # classifier tensors we drop
    assert abs((n_params + head) / 1e6 - vmamba_keys.V0_TINY_PARAMS_MILLIONS) < 0.05


def test_s1l8_variant_config():
    enc = VMambaEncoder("s1l8", dim=8)
    assert [len(layer.blocks) for layer in enc.layers] == [2, 2, 8, 2]
    assert enc.layers[0].blocks[0].self_attention.A_logs.shape == (4 * 16, 1)


def test_tiny_forward_backward_and_fast_equals_ref():
    enc = VMambaEncoder(**TINY)
    x = torch.randn(2, 3, 64, 64)
    feats = enc(x)
    sum(f.square().mean() for f in feats).backward()
    grads = {n: p.grad for n, p in enc.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for name in ("A_logs", "Ds", "dt_projs_bias", "x_proj_weight", "conv2d.weight"):
        key = f"layers.0.blocks.0.self_attention.{name}"
        assert grads[key].abs().sum() > 0, key
    with torch.no_grad():
        enc.scan_impl = "ref"
        ref = enc(x)
    for a, b in zip(feats, ref):
        torch.testing.assert_close(a.detach(), b, rtol=1e-4, atol=1e-4)


def test_loads_official_checkpoint_strictly(tmp_path):
    state = official_state()
    path = tmp_path / "vssmtiny_dp01_ckpt_epoch_292.pth"
    torch.save({"model": state, "config": TrainingConfig(), "epoch": 292}, path)
    enc = VMambaEncoder("vanilla_vmamba_tiny", weights=path)
    assert enc.weights_source == str(path)
    key = "layers.2.blocks.8.self_attention.A_logs"
    assert torch.equal(enc.layers[2].blocks[8].self_attention.A_logs, state[key])
    assert torch.equal(enc.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    assert torch.equal(enc.layers[1].downsample.reduction.weight,
                       state["layers.1.downsample.reduction.weight"])  # fmt: skip
    own = enc.state_dict()
    assert set(state) - set(own) == {"norm.weight", "norm.bias", "head.weight", "head.bias"}


def test_loads_keys_of_the_refactored_vmamba_code(tmp_path):
    state = official_state(seed=1, **TINY)
    new_names = [
        ("patch_embed.proj.", "patch_embed.0."), ("patch_embed.norm.", "patch_embed.2."),
        (".ln_1.", ".norm."), (".self_attention.", ".op."), ("downsample.norm.", "downsample.1."),
        ("downsample.reduction.", "downsample.2."), ("head.", "classifier.head."),
    ]  # fmt: skip
    renamed = {}
    for k, v in state.items():
        for old, new in new_names:
            k = k.replace(old, new)
        renamed[k] = v
    torch.save(renamed, tmp_path / "new.pth")
    enc = VMambaEncoder(weights=tmp_path / "new.pth", **TINY)
    assert torch.equal(enc.layers[0].blocks[0].ln_1.weight, state["layers.0.blocks.0.ln_1.weight"])


@pytest.mark.parametrize(
    "edit,needle",
    [
        (lambda s: s.pop("layers.1.blocks.0.self_attention.Ds"), "missing (1): layers.1.blocks.0"),
        (lambda s: s.update({"layers.0.extra": torch.zeros(1)}), "unexpected (1): layers.0.extra"),
        (
            lambda s: s.update({"layers.0.blocks.0.self_attention.A_logs": torch.zeros(64, 16)}),
            "shape mismatch (1): layers.0.blocks.0.self_attention.A_logs",
        ),
    ],
)
def test_mismatched_checkpoint_raises_with_diff(tmp_path, edit, needle):
    state = official_state(**TINY)
    edit(state)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(WeightsError) as err:
        VMambaEncoder(weights=path, **TINY)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_unreadable_or_missing_file_raises(tmp_path):
    path = tmp_path / "broken.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="broken.pth"):
        VMambaEncoder(weights=path, **TINY)
    with pytest.raises(WeightsError, match="absent.pth"):
        VMambaEncoder(weights=tmp_path / "absent.pth", **TINY)


def test_url_offline_error_and_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = "http://127.0.0.1:9/releases/vssm_test_tiny.pth"  # nothing listens on port 9
    with pytest.raises(WeightsError) as err:
        VMambaEncoder(weights=url, **TINY)
    msg = str(err.value)
    assert url in msg and "vssm_test_tiny.pth" in msg and "teacher.vmamba.weights=" in msg
    # once the file is in the torch hub cache, the URL resolves without network
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vssm_test_tiny.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    state = official_state(**TINY)
    torch.save({"model": state}, cached)
    enc = VMambaEncoder(weights=url, **TINY)
    assert enc.weights_source == url
    assert torch.equal(enc.patch_embed.norm.bias, state["patch_embed.norm.bias"])
    assert OFFICIAL_URLS["vanilla_vmamba_tiny"].endswith("/vssmtiny_dp01_ckpt_epoch_292.pth")


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="variant"):
        VMambaEncoder("vmamba_huge")
    with pytest.raises(ValueError, match="scan_impl"):
        VMambaEncoder(scan_impl="cuda", **TINY)
    with pytest.raises(ValueError, match="multiples of 32"):
        VMambaEncoder(**TINY)(torch.zeros(1, 3, 60, 64))
