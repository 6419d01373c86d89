"""VMamba v0 encoder ("vanilla_vmamba_tiny", MzeroMiko/VMamba #v0cls) in plain PyTorch.

Parameter names equal those of the official v0 checkpoint (patch_embed.proj, layers.i.blocks.j.
ln_1 / self_attention.{in_proj, conv2d, x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds,
out_norm, out_proj}, layers.i.downsample.{norm, reduction}), so loading is the identity mapping.
As PDD does, the four taps are the outputs of each stage after its downsample (channels-last
inside, returned NCHW): 2C@1/8, 4C@1/16, 8C@1/32, 8C@1/32 for embedding width C.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlab.models.features import Features, Tap
from adlab.models.teachers.cross_scan import cross_merge, cross_scan
from adlab.models.teachers.selective_scan import selective_scan, selective_scan_ref
from adlab.models.teachers.vmamba_weights import CLASSIFIER_PREFIXES, resolve, to_v0_names
from adlab.models.teachers.weights import load_strict

SCAN_IMPLS = {"fast": selective_scan, "ref": selective_scan_ref}


@dataclass(frozen=True)
class VMambaConfig:
    """Architecture hyper-parameters of a v0 VMamba (no MLP, LayerNorm, patch merging)."""

    dim: int = 96
    depths: tuple[int, ...] = (2, 2, 9, 2)
    d_state: int = 16
    ssm_ratio: float = 2.0
    patch_size: int = 4


VARIANTS = {
    "vanilla_vmamba_tiny": VMambaConfig(),
    # depths and d_state of VMamba's "s1l8" tiny, on the v0 block (the official s1l8 release uses
    # a different block, so its checkpoint does not load here)
    "s1l8": VMambaConfig(depths=(2, 2, 8, 2), d_state=1),
}


class SS2D(nn.Module):
    """2D selective scan block of VMamba v0: in_proj -> dwconv -> 4-direction S6 -> norm * gate."""

    def __init__(
        self, d_model: int, d_state: int = 16, ssm_ratio: float = 2.0, scan_impl: str = "fast"
    ) -> None:
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        dt_rank = math.ceil(d_model / 16)
        self.d_state, self.dt_rank, self.scan_impl = d_state, dt_rank, scan_impl
        self.in_proj = nn.Linear(d_model, 2 * d_inner, bias=False)
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, padding=1, groups=d_inner, bias=True)
        self.x_proj_weight = nn.Parameter(torch.empty(4, dt_rank + 2 * d_state, d_inner))
        self.dt_projs_weight = nn.Parameter(torch.empty(4, d_inner, dt_rank))
        self.dt_projs_bias = nn.Parameter(torch.empty(4, d_inner))
        self.A_logs = nn.Parameter(torch.empty(4 * d_inner, d_state))
        self.Ds = nn.Parameter(torch.empty(4 * d_inner))
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=False)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1) -> None:
        """Mamba's S4D-real / dt initialisation (as VMamba's mamba_init), for random teachers."""
        d_inner = self.dt_projs_weight.shape[1]
        bound = 1.0 / math.sqrt(d_inner)
        self.x_proj_weight.uniform_(-bound, bound)  # nn.Linear's default, as the official code
        std = self.dt_rank**-0.5
        self.dt_projs_weight.uniform_(-std, std)
        dt = torch.exp(
            torch.rand(4, d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        ).clamp(min=1e-4)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        a_init = torch.arange(1, self.d_state + 1, dtype=torch.float32)  # S4D-real: A = -n
        self.A_logs.copy_(torch.log(a_init).repeat(4 * d_inner, 1))
        self.Ds.fill_(1.0)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        b, h, w, _ = x.shape
        x, z = self.in_proj(x).chunk(2, dim=-1)
        x = F.silu(self.conv2d(x.permute(0, 3, 1, 2)))  # (B, D, H, W)
        d_inner, length = x.shape[1], h * w
        xs = cross_scan(x)  # (B, 4, D, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        scan = SCAN_IMPLS[self.scan_impl]
        # The scan in float32 under bf16 autocast too (as mamba-ssm's kernel computes it): its
        # 4096-step recurrence would accumulate bf16 rounding through the matmuls inside.
        with torch.autocast(x.device.type, enabled=False):
            ys = scan(
                xs.reshape(b, 4 * d_inner, length).float(),
                dts.reshape(b, 4 * d_inner, length).float(),
                -torch.exp(self.A_logs.float()),
                Bs.float(),
                Cs.float(),
                D=self.Ds.float(),
                delta_bias=self.dt_projs_bias.reshape(-1).float(),
                delta_softplus=True,
            ).view(b, 4, d_inner, length)
        y = cross_merge(ys, h, w).transpose(1, 2).reshape(b, h, w, d_inner)
        y = self.out_norm(y.to(z.dtype)) * F.silu(z)
        return self.out_proj(y)


class VSSBlock(nn.Module):
    """Pre-norm residual SS2D block (v0 has no MLP branch; drop-path is a no-op for a teacher)."""

    def __init__(self, dim: int, d_state: int, ssm_ratio: float, scan_impl: str) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = SS2D(dim, d_state, ssm_ratio, scan_impl)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.self_attention(self.ln_1(x))


class PatchMerging2D(nn.Module):
    """Swin patch merging: 2x2 neighbours concatenated ((0,0), (1,0), (0,1), (1,1)), LN, linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H/2, W/2, 2C)."""
        parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))


class PatchEmbed(nn.Module):
    """Non-overlapping patch_size x patch_size conv, then LayerNorm; output channels-last."""

    def __init__(self, dim: int, patch_size: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class VSSLayer(nn.Module):
    """One stage: `depth` VSS blocks, then patch merging (none in the last stage)."""

    def __init__(self, dim: int, depth: int, downsample: bool, **block) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(VSSBlock(dim, **block) for _ in range(depth))
        self.downsample = PatchMerging2D(dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x if self.downsample is None else self.downsample(x)


class VMambaEncoder(nn.Module):
    """VMamba v0 backbone returning the four stage outputs (after downsample) as NCHW tensors.

    variant: "vanilla_vmamba_tiny" (default) or "s1l8"; `dim`, `depths`, `d_state`, `ssm_ratio`
    override it (e.g. dim=8, depths=(1, 1, 1, 1) for tests). weights: None (random), a local
    checkpoint path, or the official release URL (cached by torch.hub). scan_impl: "fast"
    (chunked scan, or mamba-ssm's kernel on GPU) or "ref" (sequential reference).
    """

    def __init__(
        self,
        variant: str = "vanilla_vmamba_tiny",
        weights: str | os.PathLike | None = None,
        scan_impl: str = "fast",
        dim: int | None = None,
        depths: tuple[int, ...] | list[int] | None = None,
        d_state: int | None = None,
        ssm_ratio: float | None = None,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(
                f"unknown VMamba variant {variant!r}; choose one of {sorted(VARIANTS)}"
            )
        if scan_impl not in SCAN_IMPLS:
            raise ValueError(f"unknown scan_impl {scan_impl!r}; choose one of {sorted(SCAN_IMPLS)}")
        base = VARIANTS[variant]
        cfg = VMambaConfig(
            dim=base.dim if dim is None else int(dim),
            depths=base.depths if depths is None else tuple(int(d) for d in depths),
            d_state=base.d_state if d_state is None else int(d_state),
            ssm_ratio=base.ssm_ratio if ssm_ratio is None else float(ssm_ratio),
            patch_size=base.patch_size,
        )
        if len(cfg.depths) < 2 or min(cfg.depths) < 0:
            raise ValueError(
                f"VMamba depths must list >= 2 non-negative stage depths, got {cfg.depths}"
            )
        self.config = cfg
        n = len(cfg.depths)
        dims = [cfg.dim * 2**i for i in range(n)]
        self.patch_embed = PatchEmbed(cfg.dim, cfg.patch_size)
        block = dict(d_state=cfg.d_state, ssm_ratio=cfg.ssm_ratio, scan_impl=scan_impl)
        self.layers = nn.ModuleList(
            VSSLayer(dims[i], cfg.depths[i], downsample=i < n - 1, **block) for i in range(n)
        )
        self.channels = [min(2 * d, dims[-1]) for d in dims]
        self.strides = [cfg.patch_size * 2 ** min(i + 1, n - 1) for i in range(n)]
        self.features = Features(
            tuple(Tap(c, s) for c, s in zip(self.channels, self.strides)),
            source=f"teacher VMamba {variant}",
        )
        self._init_weights()
        state, self.weights_source = resolve(weights)
        if state is not None:
            self.load_official(state, self.weights_source)

    @property
    def scan_impl(self) -> str:
        return next(m.scan_impl for m in self.modules() if isinstance(m, SS2D))

    @scan_impl.setter
    def scan_impl(self, value: str) -> None:
        if value not in SCAN_IMPLS:
            raise ValueError(f"unknown scan_impl {value!r}; choose one of {sorted(SCAN_IMPLS)}")
        for m in self.modules():
            if isinstance(m, SS2D):
                m.scan_impl = value

    def _init_weights(self) -> None:
        """Linear: truncated normal 0.02, zero bias; LayerNorm: 1, 0 (VSSM._init_weights)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def load_official(self, state: dict[str, Tensor], source: str) -> None:
        """Strictly load a v0 state dict; only the classifier keys (head, final norm) may be extra.

        Raises adlab.models.teachers.weights.WeightsError listing missing, unexpected and
        shape-mismatched keys, naming `source`.
        """
        load_strict(self, to_v0_names(state), source, ignore_unexpected=CLASSIFIER_PREFIXES)

    def forward(self, x: Tensor) -> list[Tensor]:
        """(B, 3, H, W) with H, W multiples of 32 -> four NCHW feature maps."""
        total = self.config.patch_size * 2 ** (len(self.layers) - 1)
        if x.dim() != 4 or x.shape[-2] % total or x.shape[-1] % total:
            raise ValueError(
                f"VMambaEncoder expects (B, 3, H, W) with H and W multiples of {total}, got "
                f"{tuple(x.shape)}; resize or crop the images (e.g. image_size=256)."
            )
        x = self.patch_embed(x)
        feats = []
        for layer in self.layers:
            x = layer(x)
            feats.append(x.permute(0, 3, 1, 2).contiguous())
        return feats
