"""Selective scan (the S6 recurrence of Mamba) in plain PyTorch: a sequential reference and a
fast chunked scan with the same signature as mamba-ssm's `selective_scan_fn`. The fast scan has
a no-grad path for frozen teachers (in place, exp2, chunk-wise; about 6x the reference on CPU at
VMamba-T stage-1 shapes) and a differentiable path used when an input requires grad.

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

# Both chunked paths work on (batch, chunk, D, N) buffers; by default the chunk length keeps one
# buffer near CHUNK_ELEMENTS values (3 MB float32): 64 positions at VMamba-Tiny stage-1 shapes
# (batch 1, D 768, N 16), tied with 128 as the fastest of 16-256 there on the 2-core CPU at 1 and
# 2 threads (experiments/bench/scan.py --chunks ...), with less memory; 256 falls out of cache,
# 16 pays more per-op overhead. MIN_CHUNK bounds that overhead for large batch * D * N.
CHUNK_ELEMENTS = 64 * 768 * 16
MIN_CHUNK = 8
DEFAULT_CHUNK = None  # None: derive the chunk length from CHUNK_ELEMENTS

__all__ = [
    "CHUNK_ELEMENTS",
    "MIN_CHUNK",
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


_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


def _softplus_fast(x: Tensor) -> Tensor:
    """softplus as relu(x) + ln2 * log2(1 + exp2(-|x| log2(e))): overflow-free, and several times
    faster than F.softplus on CPU (whose log1p is not vectorised, and exp2 is cheaper than exp);
    differs by < 1e-6 where exp2(...) < eps. Differentiable; see `_softplus_fast_`."""
    return torch.log2(torch.exp2(x.abs() * -_LOG2E) + 1.0) * _LN2 + torch.relu(x)


def _softplus_fast_(x: Tensor) -> Tensor:
    """In-place `_softplus_fast` (one temporary instead of five) for the no-grad path."""
    pos = x.clamp_min(0.0)
    return x.abs_().mul_(-_LOG2E).exp2_().add_(1.0).log2_().mul_(_LN2).add_(pos)


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


def _scan_chunk_autograd(
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
    states = [x[0]]  # out of place, so autograd can differentiate every step
    for q in range(1, sub):
        states.append(torch.addcmul(x[q], decay[q], states[-1]))
    local = torch.stack(states)  # states of each piece started from zero
    cum = torch.exp(torch.cumsum(d_q, dim=0).unsqueeze(-1) * A)  # decay since piece start
    carries = [h0]
    for p in range(pieces - 1):
        carries.append(torch.addcmul(local[-1, p], cum[-1, p], carries[-1]))
    carry = torch.stack(carries)  # (pieces, b, G, P, N): state entering each piece
    h = torch.addcmul(local, cum, carry.unsqueeze(0))
    y = torch.einsum("qpbgdn,qpbgn->qpbgd", h, C_q)  # (sub, pieces, b, G, P)
    y = y.transpose(0, 1).reshape(u.shape)
    return y, h[-1, -1]


def _scan_autograd(
    u_t: Tensor, d_t: Tensor, A3: Tensor, B_t: Tensor, C_t: Tensor, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """Differentiable scan over time-first inputs: u_t, d_t (L, b, G, P); B_t, C_t (L, b, G, N).

    Every step is out of place so autograd can differentiate it; each chunk is cut into about
    sqrt(chunk) pieces scanned side by side (see `_scan_chunk_autograd`), which keeps the graph
    to a few large ops per chunk instead of one small op per position.
    """
    length, b, groups, per = u_t.shape
    sub = max(1, math.isqrt(min(chunk_size, length)))
    chunk = max(sub, (chunk_size // sub) * sub)
    padded = -(-length // sub) * sub
    if padded > length:  # delta = 0 and u = 0 leave the state unchanged

        def pad(m: Tensor) -> Tensor:
            return F.pad(m.movedim(0, -1), (0, padded - length)).movedim(-1, 0)

        u_t, d_t, B_t, C_t = pad(u_t), pad(d_t), pad(B_t), pad(C_t)
    h = u_t.new_zeros(b, groups, per, A3.shape[-1])
    ys = []
    for start in range(0, padded, chunk):
        stop = min(start + chunk, padded)
        y, h = _scan_chunk_autograd(
            u_t[start:stop], d_t[start:stop], A3, B_t[start:stop], C_t[start:stop], h, sub
        )
        ys.append(y)
    return torch.cat(ys)[:length], h


def _transpose_last(m: Tensor) -> Tensor:
    """(b, D, L) -> new contiguous (b, L, D), one 2-D copy per batch item: torch copies 2-D
    transposes in cache blocks, 2-3x faster than a strided copy when L is a power of two (the
    strided copy's reads then all fall in the same cache sets)."""
    out = m.new_empty(m.shape[0], m.shape[2], m.shape[1])
    for i in range(m.shape[0]):
        out[i].copy_(m[i].t())
    return out


def _length_major(m: Tensor, groups: int) -> Tensor:
    """B or C, (b, N, L) or (b, G', N, L) -> (b, L, G, N): transposed once per group, then
    broadcast (not copied) when one group is shared by all."""
    if m.dim() == 3:
        m = m.unsqueeze(1)
    b, g, n, length = m.shape
    out = _transpose_last(m.reshape(b, g * n, length)).view(b, length, g, n)
    return out.expand(b, length, groups, n) if g != groups else out


def _scan_inference(
    u_bt: Tensor,
    d_bt: Tensor,
    A3: Tensor,
    B_bt: Tensor,
    C_bt: Tensor,
    chunk_size: int,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor]:
    """Scan without autograd (frozen teachers): per chunk a few large ops, and one in-place
    multiply-add per position on two preallocated buffers.

    u_bt, d_bt (b, L, D): transposed copies of u and the raw delta, consumed in place; A3
    (G, P, N); B_bt, C_bt (b, L, G, N). Per chunk of T positions: bias, softplus and
    delta * u on the chunk's (b, T, D) slices (small temporaries that stay in cache, instead of
    full-size ones that cost page faults); the decays exp(delta * A) = exp2(delta * A * log2(e))
    (exp2 is about 3x cheaper than exp on CPU; its argument is <= 0, so nothing overflows) and
    the inputs delta * u * B fill two (b, T, G, P, N) buffers in one op each, laid out so that
    each position's slice is one block per batch item; the recurrence overwrites the input
    buffer with the states; one batched (1, N) @ (N, P) product with C writes the chunk's
    outputs over its delta slice, which is no longer needed. The state is carried between
    chunks, so memory is two such buffers whatever the length.
    Returns y (b, D, L) and the last state (b, G, P, N).
    """
    b, length, d = u_bt.shape
    groups, per, n = A3.shape
    t_len = min(chunk_size, length)
    a2 = A3 * _LOG2E
    B5, C5 = B_bt.unsqueeze(-2), C_bt.unsqueeze(-2)  # (b, L, G, 1, N)
    y = d_bt.view(b, length, groups, 1, per)  # outputs overwrite the consumed deltas
    decay = u_bt.new_empty(b, t_len, groups, per, n)
    state = u_bt.new_empty(b, t_len, groups, per, n)
    hs, ds = state.unbind(1), decay.unbind(1)  # per-position views, made once
    h = u_bt.new_zeros(b, groups, per, n)
    for start in range(0, length, t_len):
        stop = min(start + t_len, length)
        steps = stop - start
        d_c, u_c = d_bt[:, start:stop], u_bt[:, start:stop]  # (b, T, D)
        if delta_bias is not None:
            d_c += delta_bias
        if delta_softplus and d_c.dtype == torch.float32:
            _softplus_fast_(d_c)
        elif delta_softplus:  # float64: F.softplus, the fast form is not accurate enough there
            d_c.copy_(F.softplus(d_c))
        du_c = u_c.mul_(d_c).view(b, steps, groups, per, 1)
        dec, st = decay[:, :steps], state[:, :steps]
        torch.mul(d_c.view(b, steps, groups, per, 1), a2, out=dec)
        dec.exp2_()
        torch.mul(du_c, B5[:, start:stop], out=st)
        hs[0].addcmul_(ds[0], h)
        for t in range(1, steps):
            hs[t].addcmul_(ds[t], hs[t - 1])
        h.copy_(hs[steps - 1])
        torch.matmul(C5[:, start:stop], st.transpose(-1, -2), out=y[:, start:stop])
    return _transpose_last(y.view(b, length, d)), h


def _selective_scan_inference(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    groups: int,
    chunk_size: int,
) -> tuple[Tensor, Tensor]:
    """No-grad `selective_scan`: two transposed copies in, the scan, one transposed copy out,
    then D * u and the gate in place on it (three full-size allocations in all).
    Returns (out, last state)."""
    dtype = torch.float64 if u.dtype == torch.float64 else torch.float32
    b, d, length = u.shape
    n = A.shape[1]
    u_bt = _transpose_last(u.to(dtype))  # (b, L, D): new tensors, ours to modify
    d_bt = _transpose_last(delta.to(dtype))
    bias = None if delta_bias is None else delta_bias.to(dtype)
    A3 = A.to(dtype).view(groups, d // groups, n)
    B_bt, C_bt = _length_major(B.to(dtype), groups), _length_major(C.to(dtype), groups)
    y, h = _scan_inference(u_bt, d_bt, A3, B_bt, C_bt, chunk_size, bias, delta_softplus)
    if D is not None:
        y.addcmul_(u.to(dtype), D.to(dtype)[:, None])
    if z is not None:
        y.mul_(F.silu(z.to(dtype)))
    return y.to(u.dtype), h.reshape(b, d, n)


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

    On a GPU with mamba-ssm installed (and `use_kernel`) the CUDA kernel runs. Otherwise the
    sequence is processed `chunk_size` positions at a time (None: about CHUNK_ELEMENTS values per
    (batch, chunk, D, N) buffer, at least MIN_CHUNK positions) with the state carried across
    chunks, so memory stays at a few such buffers whatever the length. When no input requires
    grad (or grad is disabled), a faster in-place path runs; otherwise a differentiable one.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"selective_scan: chunk_size must be >= 1 or None, got {chunk_size}")
    groups = _check(u, delta, A, B, C, D, z, delta_bias)
    if use_kernel and _mamba_scan_fn is not None and u.is_cuda:
        return _mamba_scan_fn(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state
        )
    b, d, length = u.shape
    n = A.shape[1]
    if chunk_size is None:
        chunk_size = max(MIN_CHUNK, CHUNK_ELEMENTS // (b * d * n))
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    if not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs)):
        out, h = _selective_scan_inference(*inputs, delta_softplus, groups, chunk_size)
        return (out, h) if return_last_state else out
    out_dtype = u.dtype
    u, delta, A = _prepare(u, delta, A, delta_bias, delta_softplus, fast=True)
    dtype = u.dtype
    per = d // groups
    # time-first layouts (L, b, ...) so that every per-step slice is contiguous
    u_t = u.movedim(-1, 0).contiguous().view(length, b, groups, per)
    d_t = delta.movedim(-1, 0).contiguous().view(length, b, groups, per)
    B_t = _grouped(B.to(dtype), groups).permute(3, 0, 1, 2).contiguous()  # (L, b, G, N)
    C_t = _grouped(C.to(dtype), groups).permute(3, 0, 1, 2).contiguous()
    y, h = _scan_autograd(u_t, d_t, A.view(groups, per, n), B_t, C_t, chunk_size)
    out = _finish(y.reshape(length, b, d).permute(1, 2, 0), u, D, z, out_dtype)
    return (out, h.reshape(b, d, n)) if return_last_state else out
