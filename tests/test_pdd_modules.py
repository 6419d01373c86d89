"""Shapes and wiring of PDD's building blocks: channel adapter, InA, MMU, MPA, dual students."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adlab.models.features import Features, Tap
from adlab.models.fusion.adapter import ChannelAdapter
from adlab.models.fusion.pdd_fusion import MPA, PDDFusion
from adlab.models.students.dual_prior import DualPriorStudent
from adlab.models.teachers.dual import DualTeacher
from adlab.models.teachers.vmamba import VMambaEncoder

WRN = [256, 512, 1024, 2048]
VMAMBA = [192, 384, 768, 768]


def _cnn_feats(b: int = 2, s: int = 64, channels=WRN) -> list[torch.Tensor]:
    # a 64 px image: WRN strides 4, 8, 16, 32
    return [torch.randn(b, c, s // r, s // r) for c, r in zip(channels, (4, 8, 16, 32))]


def _vmamba_feats(b: int = 2, s: int = 64, channels=VMAMBA) -> list[torch.Tensor]:
    return [torch.randn(b, c, s // r, s // r) for c, r in zip(channels, (8, 16, 32, 32))]


@pytest.mark.parametrize(("cin", "cout", "mid"), [(192, 256, 64), (768, 2048, 512), (8, 8, 2)])
def test_channel_adapter_widths_and_shape(cin, cout, mid):
    adapter = ChannelAdapter(cin, cout)
    assert adapter.conv1.out_channels == mid and adapter.conv2.dilation == (2, 2)
    assert isinstance(adapter.residual, nn.Conv2d if cin != cout else nn.Identity)
    assert adapter(torch.randn(2, cin, 5, 7)).shape == (2, cout, 5, 7)


def test_channel_adapter_is_its_formula():
    adapter = ChannelAdapter(6, 10, reduction=2).eval()
    x = torch.randn(2, 6, 4, 4)
    a = adapter
    mid = F.gelu(a.bn1(a.conv1(x)))
    mid = F.gelu(a.bn2(F.conv2d(mid, a.conv2.weight, padding=2, dilation=2)))
    expected = F.gelu(a.bn3(a.conv3(mid)) + F.conv2d(x, a.residual.weight))
    torch.testing.assert_close(adapter(x), expected)


def test_fusion_official_widths_give_targets_manifold_and_priors():
    fusion = PDDFusion(WRN, VMAMBA).eval()
    cnn, vm = _cnn_feats(), _vmamba_feats()
    out = fusion(cnn, vm)
    assert [tuple(t.shape) for t in out.targets] == [tuple(c.shape) for c in cnn[:3]]
    assert out.manifold.shape == cnn[3].shape
    assert [tuple(p.shape) for p in out.priors] == [(2, 1024, 4, 4), (2, 512, 8, 8)]
    assert [a.conv1.out_channels for a in fusion.ina.adapters] == [64, 128, 256]
    assert fusion.mmu.adapter.conv1.out_channels == 512
    assert fusion.mpa.trunk[0].out_channels == 1024

    def adapter(cin: int, cout: int, mid: int) -> int:  # convs + BN affine + 1x1 residual
        return cin * mid + 9 * mid * mid + mid * cout + cin * cout + 2 * (2 * mid + cout)

    ina_mmu = adapter(192, 256, 64) + adapter(384, 512, 128) + adapter(768, 1024, 256)
    ina_mmu += adapter(768, 2048, 512)
    mpa = 2048 * 1024 + 2 * 1024 + 1024 * (1024 + 512)
    assert sum(p.numel() for p in fusion.parameters()) == ina_mmu + mpa == 11_465_984


def test_ina_and_mmu_add_the_upsampled_adapted_vmamba_levels():
    fusion = PDDFusion([8, 16, 32, 64], [4, 8, 16, 16]).eval()
    cnn, vm = _cnn_feats(channels=[8, 16, 32, 64]), _vmamba_feats(channels=[4, 8, 16, 16])
    out = fusion(cnn, vm)
    up = nn.UpsamplingBilinear2d(scale_factor=2)  # the official InA upsampling
    for i in range(3):
        expected = cnn[i] + up(fusion.ina.adapters[i](vm[i]))
        torch.testing.assert_close(out.targets[i], expected)
    torch.testing.assert_close(out.manifold, cnn[3] + fusion.mmu.adapter(vm[3]))
    shared = fusion.mpa.trunk(out.manifold)
    head = fusion.mpa.heads[0](shared)
    expected = F.interpolate(head, size=(4, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.priors[0], expected)


def test_single_teacher_fusion_passes_the_cnn_taps_through():
    fusion = PDDFusion([8, 16, 32, 64], None, mpa=False)
    cnn = _cnn_feats(channels=[8, 16, 32, 64])
    out = fusion(cnn)
    assert all(a is b for a, b in zip(out.targets, cnn[:3])) and out.manifold is cnn[3]
    assert out.priors is None and sum(p.numel() for p in fusion.parameters()) == 0


def test_mpa_resizes_to_requested_sizes():
    mpa = MPA(32, [16, 8])
    priors = mpa(torch.randn(1, 32, 2, 2), [(4, 4), (8, 8)])
    assert [tuple(p.shape) for p in priors] == [(1, 16, 4, 4), (1, 8, 8, 8)]


def test_fusion_bad_inputs_raise():
    with pytest.raises(ValueError, match="4 taps"):
        PDDFusion([256, 512, 1024])
    fusion = PDDFusion([8, 16, 32, 64], [4, 8, 16, 16])
    with pytest.raises(ValueError, match="no VMamba features"):
        fusion(_cnn_feats(channels=[8, 16, 32, 64]))


def test_student_official_structure_and_shapes():
    student = DualPriorStudent([256, 512, 1024]).eval()
    assert [len(s) for s in student.stages] == [2, 2, 2]
    first = student.stages[0][0]
    assert first.conv1.in_channels == 2048 and first.conv1.out_channels == 512  # 256 * 128/64
    assert isinstance(first.conv2, nn.ConvTranspose2d)
    f_t = torch.randn(1, 2048, 2, 2)
    priors = [torch.randn(1, 1024, 4, 4), torch.randn(1, 512, 8, 8)]
    out = student(f_t, priors)
    shapes = [(1, 256, 16, 16), (1, 512, 8, 8), (1, 1024, 4, 4)]
    assert [tuple(t.shape) for t in out.prior] == shapes
    assert [tuple(t.shape) for t in out.plain] == shapes


def test_priors_enter_after_stages_one_and_two_only():
    student = DualPriorStudent([8, 16, 32]).eval()
    f_t = torch.randn(2, 64, 2, 2)
    priors = [torch.randn(2, 32, 4, 4), torch.randn(2, 16, 8, 8)]
    out = student(f_t, priors)
    s = student.stages
    a = s[0](f_t)
    b = s[1](a + priors[0])
    c = s[2](b + priors[1])
    for got, want in zip(out.prior, [c, b, a]):
        torch.testing.assert_close(got, want)
    a0 = s[0](f_t)
    for got, want in zip(out.plain, [s[2](s[1](a0)), s[1](a0), a0]):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(out.prior[0], out.plain[0])


def test_shared_first_stage_gives_the_same_outputs():
    torch.manual_seed(1)
    a = DualPriorStudent([8, 16, 32]).eval()
    b = DualPriorStudent([8, 16, 32], share_first_stage=True).eval()
    b.load_state_dict(a.state_dict())
    f_t, priors = torch.randn(2, 64, 2, 2), [torch.randn(2, 32, 4, 4), torch.randn(2, 16, 8, 8)]
    for x, y in zip(a(f_t, priors), b(f_t, priors)):
        for u, v in zip(x, y):
            torch.testing.assert_close(u, v)


def test_single_student_modes_and_errors():
    f_t = torch.randn(1, 64, 2, 2)
    plain = DualPriorStudent([8, 16, 32], students="plain")(f_t)
    assert plain.prior is None and len(plain.plain) == 3
    with pytest.raises(ValueError, match="fusion.mpa=true"):
        DualPriorStudent([8, 16, 32], students="prior")(f_t)
    with pytest.raises(ValueError, match="student.students"):
        DualPriorStudent([8, 16, 32], students="triple")
    with pytest.raises(ValueError, match="divisible by 4"):
        DualPriorStudent([6, 16, 32])


def test_dual_teacher_with_tiny_vmamba():
    cnn = _StubCNN()
    vm = VMambaEncoder(dim=8, depths=(1, 1, 1, 1), d_state=4)
    teacher = DualTeacher(cnn, vm).eval()
    feats = teacher(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape) for f in feats.cnn] == [
        (1, 8, 16, 16),
        (1, 16, 8, 8),
        (1, 32, 4, 4),
        (1, 64, 2, 2),
    ]
    assert [tuple(f.shape) for f in feats.vmamba] == [
        (1, 16, 8, 8),
        (1, 32, 4, 4),
        (1, 64, 2, 2),
        (1, 64, 2, 2),
    ]
    assert teacher.vmamba_channels == [16, 32, 64, 64]
    fused = PDDFusion(teacher.channels, teacher.vmamba_channels)(*feats)
    assert [t.shape[1] for t in fused.targets] == [8, 16, 32]
    with pytest.raises(ValueError, match=r"layers=\[1,2,3,4\]"):
        DualTeacher(_StubCNN(taps=3), vm)


class _StubCNN(nn.Module):
    """A 4-level strided conv pyramid standing in for the CNN teacher in shape tests."""

    def __init__(self, taps: int = 4) -> None:
        super().__init__()
        widths = [8, 16, 32, 64][:taps]
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.levels = nn.ModuleList(
            nn.Conv2d(cin, cout, 3, stride=1 if i == 0 else 2, padding=1)
            for i, (cin, cout) in enumerate(zip([8, *widths[:-1]], widths))
        )
        self.channels, self.strides = widths, [4, 8, 16, 32][:taps]
        self.features = Features(tuple(Tap(c, s) for c, s in zip(self.channels, self.strides)))

    def forward(self, x):
        x, outs = self.stem(x), []
        for level in self.levels:
            x = level(x)
            outs.append(x)
        return outs
