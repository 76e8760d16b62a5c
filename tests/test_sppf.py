"""The fused SPPF pooling against torch's composition (three chained 'same' max pools and a
concatenation): the chain identity it rests on, values and layouts in every dtype, gradients on
tie-free inputs, the documented tie rule, the custom ops (opcheck, torch.compile), the module and
every bad input refused before any launch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE_PARAMS, TOL
from conftest import triton_only

from tgpool import runtime
from tgpool.functional.sppf_pooling import sppf, sppf_reference
from tgpool.nn.sppf import SPPFPool
from tgpool.ops import sppf as sppf_ops

# --- the identity the fused kernel computes ---


@pytest.mark.parametrize("k", [3, 5, 7])
@pytest.mark.parametrize("size", [(4, 5), (13, 11)], ids=["smaller_than_windows", "larger"])
def test_chained_pools_equal_single_pools_with_borders(k, size):
    """pool_k(pool_k(x)) = pool_2k-1(x), pool_k^3(x) = pool_3k-2(x), 'same' padding, values and
    shapes, borders included (the identity tgpool.sppf relies on; torch only)."""
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    r = k // 2
    y1 = F.max_pool2d(x, k, 1, r)
    y2 = F.max_pool2d(y1, k, 1, r)
    y3 = F.max_pool2d(y2, k, 1, r)
    assert torch.equal(y2, F.max_pool2d(x, 2 * k - 1, 1, 2 * r))
    assert torch.equal(y3, F.max_pool2d(x, 3 * k - 2, 1, 3 * r))


# --- cases ---

CASES = [
    # (name, shape, kernel_size, channels_last); shapes stay tiny: each program of the backward
    # gathers from 1 + 25 + 81 + 169 outputs (k = 5) through the interpreter
    ("yolo_k5", (1, 2, 9, 11), 5, False),
    ("yolo_k5_channels_last", (1, 4, 6, 7), 5, True),
    ("k3", (1, 2, 7, 8), 3, False),
    ("k3_channels_last", (1, 4, 5, 6), 3, True),
    # the image is smaller than every window: each output sees the whole border-clipped plane
    ("image_smaller_than_windows", (1, 1, 3, 4), 5, False),
    ("one_pixel", (1, 2, 1, 1), 5, False),
    ("k1_identity", (1, 1, 4, 5), 1, False),
]
ALL_DTYPE_CASES = {"k3", "k3_channels_last"}


def _params():
    for name, shape, k, cl in CASES:
        for d in DTYPE_PARAMS:
            if name in ALL_DTYPE_CASES or d.values[0] == torch.float32:
                yield pytest.param(shape, k, cl, d.values[0], id=f"{name}-{d.id}")


def tie_free(shape, dtype, channels_last=False, seed=0) -> torch.Tensor:
    """Distinct integers per (n, c) plane (exact in every dtype for planes up to 256 positions):
    no window holds its maximum twice."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    planes = [torch.randperm(h * w, generator=g) for _ in range(n * c)]
    x = (torch.stack(planes).float() - h * w // 2).reshape(shape) if planes else torch.empty(shape)
    x = x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@pytest.mark.parametrize("shape, k, channels_last, dtype", list(_params()))
def test_matches_torch_composition(shape, k, channels_last, dtype):
    x = tie_free(shape, dtype, channels_last).requires_grad_()
    with triton_only():
        out = sppf(x, k)
    ref64 = x.detach().double().requires_grad_()
    ref = sppf_reference(ref64, k)
    assert out.dtype == dtype and out.shape == ref.shape
    assert out.stride() == sppf_reference(x.detach().float(), k).stride()
    assert torch.equal(out.double(), ref)

    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    with triton_only():
        (gx,) = torch.autograd.grad(out, x, grad)
    (gr,) = torch.autograd.grad(ref, ref64, grad.double())
    assert gx.stride() == x.stride()
    atol, rtol = TOL[dtype]
    # up to 1 + 25 + 81 + 169 terms per position, summed in fp32 and rounded once
    torch.testing.assert_close(gx.double(), gr, atol=max(atol, 4 * rtol), rtol=rtol)
    if shape == CASES[0][1]:  # deterministic: the same bits again
        with triton_only():
            assert torch.equal(gx, torch.autograd.grad(sppf(x, k), x, grad)[0])


VALUES = [
    # (name, pattern): values only (NaN / inf make ties, whose gradients follow TIE_RULE)
    ("nan_several", "nan"),
    ("inf_both_signs", "inf"),
    ("all_neg_inf", "neg_inf"),
]


@pytest.mark.parametrize("pattern", [v[1] for v in VALUES], ids=[v[0] for v in VALUES])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_special_values_match_torch(pattern, channels_last):
    x = torch.randn(1, 2, 6, 7)
    flat = x.view(-1)
    i = torch.arange(flat.numel())
    if pattern == "nan":
        flat[i % 13 == 0] = math.nan
    elif pattern == "inf":
        flat[i % 7 == 0] = math.inf
        flat[i % 7 == 3] = -math.inf
    else:
        x.fill_(-math.inf)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with triton_only():
        out = sppf(x)
    torch.testing.assert_close(out, sppf_reference(x), rtol=0, atol=0, equal_nan=True)


def test_indices_are_single_pool_indices():
    """Each level's argmax equals max_pool2d's with that window (first maximum, row-major),
    ties included."""
    x = torch.randint(-2, 3, (1, 2, 9, 10)).float()
    _, idx = sppf_ops.sppf(x, 5, True)
    for level, k in enumerate((5, 9, 13)):
        ref = F.max_pool2d(x, k, 1, k // 2, return_indices=True)[1]
        assert torch.equal(idx[level].long(), ref), level


def test_tie_rule_differs_from_the_chain_only_in_where_the_gradient_goes():
    """tgpool.kernels.sppf.TIE_RULE, shown: two equal maxima A = (0, 4) and B = (1, 0) in y3's
    window at (3, 3) (k = 3, radius 3). tgpool sends y3's gradient to A, the first in row-major
    order (as max_pool2d(x, 7, 1, 3) would); torch's chain takes y2's first maximum at (2, 2), whose
    window (rows 0-4, cols 0-4) holds both, then y1's first maximum at (1, 1), whose window
    (rows 0-2, cols 0-2) holds only B.
    """
    x = torch.full((1, 1, 7, 7), -1.0)
    x[0, 0, 0, 4] = x[0, 0, 1, 0] = 1.0
    grad = torch.zeros(1, 4, 7, 7)
    grad[0, 3, 3, 3] = 1.0  # only y3 at (3, 3)
    xt = x.clone().requires_grad_()
    with triton_only():
        out = sppf(xt, 3)
        (g_tgpool,) = torch.autograd.grad(out, xt, grad)
    xr = x.clone().requires_grad_()
    ref = sppf_reference(xr, 3)
    (g_torch,) = torch.autograd.grad(ref, xr, grad)
    assert torch.equal(out, ref)  # values are identical
    assert g_tgpool[0, 0, 0, 4] == 1 and g_tgpool.sum() == 1  # A
    assert g_torch[0, 0, 1, 0] == 1 and g_torch.sum() == 1  # B
    assert g_tgpool.sum() == g_torch.sum()


def test_gradcheck_float64():
    x = tie_free((1, 1, 4, 4), torch.float64).requires_grad_()
    before = runtime.launch_counts["sppf_bwd_rows"]
    assert torch.autograd.gradcheck(lambda t: sppf(t, 3), (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(lambda t: sppf(t, 3), (x,), fast_mode=True)
    assert runtime.launch_counts["sppf_bwd_rows"] > before


def test_empty_batch():
    x = torch.randn(0, 3, 5, 5, requires_grad=True)
    out = sppf(x)
    assert out.shape == (0, 12, 5, 5)
    out.sum().backward()
    assert x.grad.shape == x.shape


# --- custom ops as torch sees them ---


@pytest.mark.parametrize(
    "channels_last, with_indices",
    [(False, True), (True, False)],
    ids=["nchw_indices", "channels_last_no_indices"],
)
def test_opcheck(channels_last, with_indices):
    x = tie_free((1, 2, 3, 4), torch.float32, channels_last).requires_grad_()
    torch.library.opcheck(sppf_ops.sppf, (x, 3, with_indices))
    out, idx = sppf_ops.sppf(x.detach(), 3, True)
    g = torch.randn_like(out)
    torch.library.opcheck(sppf_ops.sppf_backward, (g, idx, 3, list(x.shape), channels_last))


def test_compile_fullgraph_forward_and_backward():
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 1), SPPFPool(3), torch.nn.Conv2d(8, 2, 1))
    x = torch.randn(1, 2, 5, 6).contiguous(memory_format=torch.channels_last)
    ref = model(x)
    ref.square().sum().backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with triton_only():
        out = compiled(x)
        out.square().sum().backward()
    torch.testing.assert_close(out, ref)
    for p, g in zip(model.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g)


def test_module():
    pool = SPPFPool(3)
    assert isinstance(pool, torch.nn.Module) and repr(pool) == "SPPFPool(kernel_size=3)"
    assert SPPFPool().kernel_size == 5
    x = tie_free((1, 2, 5, 5), torch.float16, channels_last=True)
    with triton_only():
        out = pool(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, sppf_reference(x.float(), 3).half())


# --- bad input ---

X = torch.randn(1, 2, 6, 6)
BAD_CALLS = [
    # (name, input, kernel_size, exception type, words in the message, torch's composition raises
    # the same type for the same mistake)
    ("input_not_tensor", [[1.0]], 5, TypeError, "'input'", False),
    ("kernel_size_float", X, 5.0, TypeError, "'kernel_size'", True),
    ("kernel_size_bool", X, True, TypeError, "'kernel_size'", False),
    ("kernel_size_zero", X, 0, RuntimeError, "kernel_size must be greater than zero", True),
    ("kernel_size_negative", X, -3, RuntimeError, "kernel_size must be greater than zero", True),
    # torch's composition fails in cat: 'same' padding of an even window adds a row
    ("kernel_size_even", X, 4, RuntimeError, "kernel_size must be odd", True),
    # torch's composition would concatenate a 3-D input along H; tgpool refuses it
    ("input_3d", X[0], 5, RuntimeError, "4D", False),
    ("input_5d", X[None], 5, RuntimeError, "4D", True),
    ("zero_channels", X[:, :0], 5, RuntimeError, "non-zero sizes", False),
    ("integer_input", X.long(), 5, NotImplementedError, "int64", False),
]


@pytest.mark.parametrize(
    "input, k, error, words, torch_too", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_before_any_launch(input, k, error, words, torch_too):
    before = sum(runtime.launch_counts.values())
    with pytest.raises(error) as info:
        sppf(input, k)
    assert words in str(info.value)
    assert sum(runtime.launch_counts.values()) == before, "a kernel launched before the error"
    if torch_too:
        with pytest.raises(error):
            sppf_reference(input, k)
