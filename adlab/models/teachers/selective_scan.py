"""Selective scan (the S6 recurrence of Mamba) in plain PyTorch: a sequential reference and a
fast chunked scan with the same signature as mamba-ssm's `selective_scan_fn`.

The recurrence, per channel d and state n, with dA_t = exp(delta_t * A) and x_t = delta_t u_t B_t:

    h_t = dA_t * h_{t-1} + x_t,    y_t = sum_n C_t h_t + D u_t,    out = y * silu(z)

Shapes: u, delta, z (batch, D, L); A (D, N); B, C (batch, N, L) or grouped (batch, G, N, L) with
D divisible by G (channel d uses group d // (D / G)); D and delta_bias (D,).
Both scans assume delta >= 0 (after softplus) and A <= 0, as every Mamba model has: then every
decay is exp of a non-positive number and nothing overflows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

try:  # optional CUDA kernel; never required
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as _mamba_scan_fn
except Exception:  # noqa: BLE001 - any import failure (missing package, ABI mismatch) disables it
    _mamba_scan_fn = None

# The chunked scan works on (batch, D, chunk, N) buffers; the default chunk length keeps one
# buffer near CHUNK_ELEMENTS values (3 MB float32), which is 64 positions at VMamba-Tiny stage-1
# shapes (batch 1, D 768, N 16). 32-64 were fastest there on a 2-core CPU
# (experiments/bench/scan.py); longer chunks fall out of cache, shorter ones pay per-op overhead.
CHUNK_ELEMENTS = 64 * 768 * 16
DEFAULT_CHUNK = None  # None: derive the chunk length from CHUNK_ELEMENTS

__all__ = [
    "CHUNK_ELEMENTS",
    "DEFAULT_CHUNK",
    "selective_scan",
    "selective_scan_ref",
    "mamba_kernel_available",
]


def mamba_kernel_available() -> bool:
    """True when mamba-ssm's CUDA selective scan could be imported."""
    return _mamba_scan_fn is not None


def _check(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D, z, delta_bias) -> int:
    """Validate shapes (raising ValueError naming the argument) and return the group count."""
    if u.dim() != 3:
        raise ValueError(f"selective_scan: u must be (batch, D, L), got shape {tuple(u.shape)}")
    b, d, length = u.shape
    if delta.shape != u.shape:
        raise ValueError(
            f"selective_scan: delta shape {tuple(delta.shape)} != u shape {(b, d, length)}"
        )
    if A.dim() != 2 or A.shape[0] != d:
        raise ValueError(f"selective_scan: A must be (D={d}, N), got {tuple(A.shape)}")
    n = A.shape[1]
    for name, m in (("B", B), ("C", C)):
        if m.dim() not in (3, 4) or m.shape[0] != b or m.shape[-2:] != (n, length):
            raise ValueError(
                f"selective_scan: {name} must be (batch, N, L) or (batch, G, N, L) with "
                f"batch={b}, N={n}, L={length}; got {tuple(m.shape)}"
            )
        if m.dim() == 4 and d % m.shape[1] != 0:
            raise ValueError(
                f"selective_scan: {name} has {m.shape[1]} groups, which do not divide D={d}"
            )
    if B.dim() == 4 and C.dim() == 4 and B.shape[1] != C.shape[1]:
        raise ValueError(f"selective_scan: B has {B.shape[1]} groups but C has {C.shape[1]}")
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and v.shape != (d,):
            raise ValueError(f"selective_scan: {name} must be ({d},), got {tuple(v.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"selective_scan: z shape {tuple(z.shape)} != u shape {(b, d, length)}")
    return max(B.shape[1] if B.dim() == 4 else 1, C.shape[1] if C.dim() == 4 else 1)


def _grouped(m: Tensor, groups: int) -> Tensor:
    """(batch, N, L) or (batch, G', N, L) -> (batch, G, N, L) with G = groups."""
    if m.dim() == 3:
        m = m.unsqueeze(1)
    if m.shape[1] != groups:  # one shared group broadcast to all
        m = m.expand(m.shape[0], groups, *m.shape[2:])
    return m


def _softplus_fast(x: Tensor) -> Tensor:
    """softplus as relu(x) + log(1 + exp(-|x|)): overflow-free, and about 3x faster than
    F.softplus on CPU (whose log1p is not vectorised); differs by < 1e-7 where exp(-|x|) < eps."""
    return torch.relu(x) + torch.log(torch.exp(-x.abs()) + 1.0)


def _prepare(
    u: Tensor, delta: Tensor, A: Tensor, delta_bias: Tensor | None, softplus: bool, fast: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """Cast to the compute dtype, add the delta bias and apply softplus."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    u, delta, A = u.to(dtype), delta.to(dtype), A.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[:, None]
    if softplus:
        delta = _softplus_fast(delta) if fast and dtype == torch.float32 else F.softplus(delta)
    return u, delta, A


def _finish(y: Tensor, u: Tensor, D, z, out_dtype: torch.dtype) -> Tensor:
    """Skip term D*u and gate silu(z), then cast to the input dtype."""
    if D is not None:
        y = y + u * D.to(y.dtype)[:, None]
    if z is not None:
        y = y * F.silu(z.to(y.dtype))
    return y.to(out_dtype)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference: one Python step per position (slow, obviously correct)."""
    groups = _check(u, delta, A, B, C, D, z, delta_bias)
    out_dtype = u.dtype
    u, delta, A = _prepare(u, delta, A, delta_bias, delta_softplus, fast=False)
    dtype = u.dtype
    b, d, length = u.shape
    n = A.shape[1]
    Bg = _grouped(B.to(dtype), groups)
    Cg = _grouped(C.to(dtype), groups)
    per = d // groups
    h = u.new_zeros(b, groups, per, n)
    A4 = A.view(groups, per, n)
    du = (delta * u).view(b, groups, per, length)
    dl = delta.view(b, groups, per, length)
    ys = []
    for t in range(length):
        h = torch.exp(dl[..., t, None] * A4) * h + du[..., t, None] * Bg[:, :, None, :, t]
        ys.append((h * Cg[:, :, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1).reshape(b, d, length)
    out = _finish(y, u, D, z, out_dtype)
    return (out, h.reshape(b, d, n)) if return_last_state else out


def _scan_chunk(
    u: Tensor, dl: Tensor, A: Tensor, Bm: Tensor, Cm: Tensor, h0: Tensor, sub: int
) -> tuple[Tensor, Tensor]:
    """Scan one chunk whose length is a multiple of `sub`, starting from state h0.

    Layouts (time first so that every per-step slice is contiguous): u, dl (T, b, G, P);
    A (G, P, N); Bm, Cm (T, b, G, N); h0 (b, G, P, N). The chunk is cut into S = T / sub pieces
    that are scanned side by side (sub sequential steps), then the pieces' end states are
    chained (S sequential steps) and each piece gets its start state added back, scaled by the
    cumulative decay exp(A * cumsum(delta)) <= 1 inside the piece. Only exp of non-positive
    numbers appears, so no chunk size or delta/A range can overflow.
    """
    t_len = u.shape[0]
    pieces = t_len // sub
    shape5 = (pieces, sub) + u.shape[1:]
    # (sub, pieces, b, G, P): step q of every piece is one contiguous slice
    u_q = u.reshape(shape5).transpose(0, 1).contiguous()
    d_q = dl.reshape(shape5).transpose(0, 1).contiguous()
    B_q = Bm.reshape((pieces, sub) + Bm.shape[1:]).transpose(0, 1).contiguous()
    C_q = Cm.reshape((pieces, sub) + Cm.shape[1:]).transpose(0, 1).contiguous()
    x = (d_q * u_q).unsqueeze(-1) * B_q.unsqueeze(-2)  # (sub, pieces, b, G, P, N)
    decay = torch.exp(d_q.unsqueeze(-1) * A)  # same shape, in (0, 1]
    if torch.is_grad_enabled():  # out of place, so autograd can differentiate every step
        states = [x[0]]
        for q in range(1, sub):
            states.append(torch.addcmul(x[q], decay[q], states[-1]))
        local = torch.stack(states)  # states of each piece started from zero
        cum = torch.exp(torch.cumsum(d_q, dim=0).unsqueeze(-1) * A)  # decay since piece start
    else:  # inference: accumulate in place; the decays become cumulative decays on the way
        local, cum = x, decay
        for q in range(1, sub):
            local[q].addcmul_(cum[q], local[q - 1])
            cum[q].mul_(cum[q - 1])
    carries = [h0]
    for p in range(pieces - 1):
        carries.append(torch.addcmul(local[-1, p], cum[-1, p], carries[-1]))
    carry = torch.stack(carries)  # (pieces, b, G, P, N): state entering each piece
    h = torch.addcmul(local, cum, carry.unsqueeze(0))
    y = torch.einsum("qpbgdn,qpbgn->qpbgd", h, C_q)  # (sub, pieces, b, G, P)
    y = y.transpose(0, 1).reshape(u.shape)
    return y, h[-1, -1]


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    chunk_size: int | None = DEFAULT_CHUNK,
    use_kernel: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fast selective scan, same arguments and results as `selective_scan_ref`.

    On a GPU with mamba-ssm installed (and `use_kernel`) the CUDA kernel runs; otherwise the
    sequence is processed `chunk_size` positions at a time (None: about CHUNK_ELEMENTS values per
    (batch, D, chunk, N) buffer) with the state carried across chunks, so memory stays at a few
    such buffers whatever the length.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be >= 1 or None, got {chunk_size}")
    groups = _check(u, delta, A, B, C, D, z, delta_bias)
    if use_kernel and _mamba_scan_fn is not None and u.is_cuda:
        return _mamba_scan_fn(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    out_dtype = u.dtype
    u, delta, A = _prepare(u, delta, A, delta_bias, delta_softplus, fast=True)
    dtype = u.dtype
    b, d, length = u.shape
    n = A.shape[1]
    per = d // groups
    if chunk_size is None:
        chunk_size = max(4, CHUNK_ELEMENTS // (b * d * n))
    sub = max(1, math.isqrt(min(chunk_size, length)))
    chunk = max(sub, (chunk_size // sub) * sub)
    padded = -(-length // sub) * sub

    # time-first layouts; padding with delta = 0 and u = 0 leaves the state unchanged
    def time_first(m: Tensor) -> Tensor:
        if padded > length:
            m = F.pad(m, (0, padded - length))
        return m.movedim(-1, 0).contiguous()

    u_t = time_first(u).view(padded, b, groups, per)
    d_t = time_first(delta).view(padded, b, groups, per)
    del delta  # only the time-first copy is needed from here on
    B_t = time_first(_grouped(B.to(dtype), groups))
    C_t = time_first(_grouped(C.to(dtype), groups))
    A3 = A.view(groups, per, n)
    h = u.new_zeros(b, groups, per, n)
    ys = []
    for start in range(0, padded, chunk):
        stop = min(start + chunk, padded)
        y, h = _scan_chunk(
            u_t[start:stop], d_t[start:stop], A3, B_t[start:stop], C_t[start:stop], h, sub
        )
        ys.append(y)
    y = torch.cat(ys)[:length].reshape(length, b, d).permute(1, 2, 0)
    out = _finish(y, u, D, z, out_dtype)
    return (out, h.reshape(b, d, n)) if return_last_state else out
