"""Selective scan: the chunked scan against the sequential reference, gradients, and the
four-direction cross scan / merge."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from adlab.models.teachers.cross_scan import cross_merge, cross_scan
from adlab.models.teachers.selective_scan import selective_scan, selective_scan_ref


def make_inputs(b, d, n, length, groups=None, delta_hi=3.0, dtype=torch.float64, seed=0):
    """Random scan inputs; A spans -1e-3 .. -1e2 (log-uniform), delta = softplus(up to delta_hi)."""
    g = torch.Generator().manual_seed(seed)
    kw = dict(generator=g, dtype=dtype)
    u = torch.randn(b, d, length, **kw)
    delta = torch.rand(b, d, length, **kw) * (delta_hi + 3.0) - 3.0
    log_a = torch.rand(d, n, **kw) * torch.log(torch.tensor(1e5)) + torch.log(torch.tensor(1e-3))
    A = -torch.exp(log_a)
    shape = (b, groups, n, length) if groups else (b, n, length)
    B, C = torch.randn(shape, **kw), torch.randn(shape, **kw)
    D, z, bias = torch.randn(d, **kw), torch.randn(b, d, length, **kw), torch.randn(d, **kw) * 0.5
    return u, delta, A, B, C, D, z, bias


CASES = [
    # (batch, D, N, L, groups, chunk, delta_hi)
    (2, 8, 16, 37, None, 8, 3.0),  # L not divisible by the chunk, several chunks
    (1, 12, 1, 100, 3, 16, 3.0),  # d_state 1, grouped B/C
    (2, 8, 16, 64, 4, 1000, 3.0),  # one chunk longer than L
    (1, 8, 16, 129, 2, 32, 20.0),  # extreme delta: softplus(20) ~ 20 with A down to -1e2
    (1, 4, 16, 5, None, 1, 20.0),  # chunk of one position
]


@pytest.mark.parametrize("grad", [True, False], ids=["autograd-path", "inference-path"])
@pytest.mark.parametrize("b,d,n,length,groups,chunk,delta_hi", CASES)
def test_fast_matches_reference_float32(b, d, n, length, groups, chunk, delta_hi, grad):
    u, delta, A, B, C, D, z, bias = make_inputs(b, d, n, length, groups, delta_hi)
    ref, ref_h = selective_scan_ref(u, delta, A, B, C, D, z, bias, True, True)  # float64 truth
    args = [t.float() for t in (u, delta, A, B, C, D, z, bias)]
    # inputs that require grad select the differentiable path, others the in-place one
    leaves = [t.clone().requires_grad_(grad) for t in args]
    fast, fast_h = selective_scan(*leaves, True, True, chunk_size=chunk)
    assert fast.requires_grad == grad
    fast, fast_h = fast.detach(), fast_h.detach()
    ref32 = selective_scan_ref(*args, True, False)
    assert fast.dtype == torch.float32 and fast.shape == (b, d, length)
    assert torch.isfinite(fast).all()
    scale = max(1.0, ref.abs().max().item())  # 1e-4 relative to the output's magnitude
    assert (fast.double() - ref).abs().max().item() <= 1e-4 * scale
    assert (fast - ref32).abs().max().item() <= 1e-4 * scale
    assert fast_h.shape == (b, d, n)
    assert (fast_h.double() - ref_h).abs().max().item() <= 1e-4 * max(1.0, ref_h.abs().max().item())


def test_fast_matches_reference_float64_tightly():
    u, delta, A, B, C, D, z, bias = make_inputs(2, 6, 4, 50, 2)
    ref = selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    u_grad = u.clone().requires_grad_()  # selects the differentiable path
    for chunk in (1, 7, 16, 49, 50, 64):
        fast = selective_scan(u_grad, delta, A, B, C, D, z, bias, True, chunk_size=chunk)
        fast_ng = selective_scan(u, delta, A, B, C, D, z, bias, True, chunk_size=chunk)
        assert fast.dtype == fast_ng.dtype == torch.float64
        assert fast.requires_grad and not fast_ng.requires_grad
        assert (fast.detach() - ref).abs().max().item() < 1e-10
        assert (fast_ng - ref).abs().max().item() < 1e-10


def test_options_change_the_result_as_documented():
    u, delta, A, B, C, D, z, bias = make_inputs(1, 4, 3, 20)
    delta = F.softplus(delta)  # without delta_softplus the scan expects delta >= 0
    plain = selective_scan(u, delta, A, B, C)
    with_d = selective_scan(u, delta, A, B, C, D=D)
    torch.testing.assert_close(with_d - plain, u * D[:, None])
    gated = selective_scan(u, delta, A, B, C, z=z)
    torch.testing.assert_close(gated, plain * F.silu(z))
    biased = selective_scan(u, delta, A, B, C, delta_bias=bias, delta_softplus=True)
    manual = selective_scan(u, F.softplus(delta + bias[:, None]), A, B, C)
    torch.testing.assert_close(biased, manual)


def test_no_overflow_with_large_chunks_and_extreme_rates():
    inputs = make_inputs(1, 8, 16, 2048, 2, delta_hi=20.0, dtype=torch.float32)
    u, delta, A, B, C, D, z, bias = inputs
    A = A * 0 - 100.0  # strongest decay: delta * A down to about -2000 per step
    for grad in (True, False):
        u_in = u.clone().requires_grad_(grad)
        out, h = selective_scan(u_in, delta, A, B, C, D, z, bias, True, True, chunk_size=2048)
        assert out.requires_grad == grad
        assert torch.isfinite(out).all() and torch.isfinite(h).all()


def test_gradients_match_reference():
    u, delta, A, B, C, D, z, bias = make_inputs(1, 4, 3, 23, 2)
    weights = torch.randn(1, 4, 23, dtype=torch.float64)

    def grads(fn, **kw):
        leaves = [t.clone().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
        out, h = fn(*leaves, True, True, **kw)
        ((out * weights).sum() + h.sum()).backward()
        return [t.grad for t in leaves]

    for g_ref, g_fast in zip(grads(selective_scan_ref), grads(selective_scan, chunk_size=5)):
        assert g_ref is not None and g_ref.abs().sum() > 0
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize(
    "bad,match",
    [
        (dict(delta=torch.zeros(1, 4, 9)), "delta"),
        (dict(A=torch.zeros(3, 2)), "A must be"),
        (dict(B=torch.zeros(1, 3, 2, 10)), "do not divide"),
        (dict(C=torch.zeros(1, 2, 11)), "C must be"),
        (dict(D=torch.zeros(5)), "D must be"),
    ],
)
def test_bad_shapes_raise(bad, match):
    args = dict(
        u=torch.zeros(1, 4, 10), delta=torch.zeros(1, 4, 10), A=-torch.ones(4, 2),
        B=torch.zeros(1, 2, 10), C=torch.zeros(1, 2, 10),
    )  # fmt: skip
    args.update(bad)
    for fn in (selective_scan, selective_scan_ref):
        with pytest.raises(ValueError, match=match):
            fn(**args)


def test_cross_scan_orders():
    x = torch.arange(6.0).view(1, 1, 2, 3)  # [[0, 1, 2], [3, 4, 5]]
    ys = cross_scan(x)[0, :, 0]
    expected = [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
    assert ys.tolist() == expected


def test_cross_merge_is_the_adjoint_of_cross_scan():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = torch.randn(2, 4, 3, 20, dtype=torch.float64)
    lhs = (cross_scan(x) * y).sum()
    rhs = (x.flatten(2) * cross_merge(y, 4, 5)).sum()
    assert abs(lhs.item() - rhs.item()) < 1e-10
    torch.testing.assert_close(cross_merge(cross_scan(x), 4, 5), 4 * x.flatten(2))


def test_cross_merge_rejects_wrong_length():
    with pytest.raises(ValueError, match="cross_merge"):
        cross_merge(torch.zeros(1, 4, 2, 12), 4, 4)


def test_fast_softplus_matches_torch_over_the_whole_range():
    from adlab.models.teachers.selective_scan import _softplus_fast

    x = torch.linspace(-200.0, 200.0, 40001).requires_grad_()
    y = _softplus_fast(x)
    assert torch.isfinite(y).all()
    assert (y - F.softplus(x)).abs().max().item() < 1e-6
    y.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad - torch.sigmoid(x.detach())).abs().max().item() < 1e-6


def test_fast_inplace_softplus_matches_torch_and_reuses_its_input():
    from adlab.models.teachers.selective_scan import _softplus_fast_

    x = torch.linspace(-200.0, 200.0, 40001)
    expected = F.softplus(x)
    ptr = x.data_ptr()
    y = _softplus_fast_(x)
    assert y.data_ptr() == ptr  # in place: no new full-size buffer
    assert torch.isfinite(y).all()
    assert (y - expected).abs().max().item() < 1e-6


def test_transpose_last_matches_movedim():
    from adlab.models.teachers.selective_scan import _transpose_last

    x = torch.randn(3, 5, 64)
    out = _transpose_last(x)
    assert out.is_contiguous() and out.shape == (3, 64, 5)
    assert torch.equal(out, x.transpose(1, 2))


def test_grad_mode_without_grad_inputs_takes_the_inference_path():
    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, 4, 40, 2, dtype=torch.float32)
    with torch.enable_grad():
        out = selective_scan(u, delta, A, B, C, D, z, bias, True, chunk_size=16)
    assert not out.requires_grad  # frozen teacher under grad mode: no graph, in-place path
    ref = selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    assert (out - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())


def test_low_precision_inputs_compute_in_float32():
    u, delta, A, B, C, D, z, bias = make_inputs(1, 8, 4, 30, dtype=torch.float32)
    half = [t.bfloat16() for t in (u, delta, B, C, z)]
    out = selective_scan(half[0], half[1], A, half[2], half[3], D, half[4], bias, True)
    ref = selective_scan_ref(half[0], half[1], A, half[2], half[3], D, half[4], bias, True)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), rtol=1e-2, atol=1e-2)


def test_inference_path_never_holds_the_full_state():
    b, d, n, length, chunk = 1, 64, 16, 512, 16
    u, delta, A, B, C, D, z, bias = make_inputs(b, d, n, length, 4, dtype=torch.float32)
    full_state = b * d * length * n * 4  # bytes of (batch, D, L, N) float32
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                profile_memory=True) as prof:  # fmt: skip
        selective_scan(u, delta, A, B, C, D, z, bias, True, chunk_size=chunk)
    biggest = max(e.cpu_memory_usage for e in prof.events())
    chunk_buffer = b * chunk * d * n * 4
    assert chunk_buffer <= biggest <= full_state // 8  # chunk buffers and (b, L, D) copies only


@pytest.mark.parametrize("grad", [True, False], ids=["autograd-path", "inference-path"])
def test_grouped_B_with_shared_C_matches_reference(grad):
    u, delta, A, B, C, D, z, bias = make_inputs(2, 8, 4, 33, 4, dtype=torch.float32)
    C = C[:, 0]  # (batch, N, L): one C shared by the four groups of B
    u_in = u.clone().requires_grad_(grad)
    out = selective_scan(u_in, delta, A, B, C, D, z, bias, True, chunk_size=8).detach()
    ref = selective_scan_ref(u, delta, A, B, C, D, z, bias, True)
    assert (out - ref).abs().max().item() < 1e-4 * max(1.0, ref.abs().max().item())
