"""tgpool's six pooling functions against torch, on every named case (tests/cases.py) and dtype.

max: values and indices exactly equal to torch on the same input, with and without indices.
avg: within the dtype's tolerance of torch computed in float64 on the same (upcast) input.
Output strides equal torch's (1D max without indices excepted: torch's own choice there depends on
its code path). Gradients of the input: max exact where windows do not overlap, else within
tolerance of float64; avg within tolerance of float64; their strides equal torch's.

Every tgpool call runs inside triton_only(): the result must come from the generated kernels
(for an empty batch, where nothing needs to launch, torch's pooling is still refused). Cases with
``blocks`` force tiny launch blocks, so that tile edges and halos between programs are exercised.
A seeded sweep of random windows, shapes and layouts (cases.random_cases) runs the same checks.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from cases import DTYPE_PARAMS, DTYPES, TOL, make_input, params, random_cases

import tgpool
from tgpool import launch, runtime

# NaN and inf inputs make numpy, under the interpreter, warn about inf - inf in avg sums
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


def torch_pool(reduction: str, ndim: int):
    return getattr(F, f"{reduction}_pool{ndim}d")


def tg_pool(reduction: str, ndim: int):
    return getattr(tgpool, f"{reduction}_pool{ndim}d")


@contextlib.contextmanager
def launch_blocks(blocks, require_tiles: bool = True):
    """Force every launch to use (outer, inner) blocks, so small shapes span several programs
    along both grid axes (tile edges, halos from the neighbouring program), which
    ``require_tiles`` asserts for at least one launch."""
    if blocks is None:
        yield
        return
    saved = launch._provider
    launch.set_provider(lambda family, variant, problem: launch.LaunchConfig(*blocks))
    try:
        with runtime.recording() as records:
            yield
    finally:
        launch.set_provider(saved)
    if require_tiles:
        assert any(len(r.grid) == 2 and min(r.grid) > 1 for r in records), [r.grid for r in records]


@contextlib.contextmanager
def torch_pooling_refused():
    """For empty inputs, where no kernel needs to launch: torch's pooling must not run either."""
    names = [n for n in dir(F) if "_pool" in n and ("max" in n or "avg" in n)]
    saved = {n: getattr(F, n) for n in names}

    def refuse(*args, **kwargs):
        raise AssertionError("torch's own pooling was called")

    for n in names:
        setattr(F, n, refuse)
    try:
        yield
    finally:
        for n, fn in saved.items():
            setattr(F, n, fn)


def tgpool_only(case, only_triton):
    """triton_only() (the generated kernels ran), or for empty inputs torch_pooling_refused()."""
    empty = any(s == 0 for s in case.shape)
    return torch_pooling_refused() if empty else only_triton()


def assert_exact(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Bit-for-bit equal values (NaN where expected has NaN), same dtype and shape."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan), "NaN positions differ"
    assert torch.equal(actual.masked_fill(nan, 0), expected.masked_fill(nan, 0))


def assert_close(actual: torch.Tensor, expected64: torch.Tensor, dtype: torch.dtype) -> None:
    atol, rtol = TOL[dtype]
    assert actual.dtype == dtype
    torch.testing.assert_close(actual.double(), expected64, atol=atol, rtol=rtol, equal_nan=True)


def for_torch_avg(case, x: torch.Tensor) -> torch.Tensor:
    """``x``, or where torch's CPU avg_pool3d lacks its dtype (float16, bfloat16) the case's input
    in float32 with the same layout: what torch's output and gradient strides are taken from."""
    return x if case.ndim < 3 or x.dtype.itemsize > 2 else make_input(case, torch.float32)


# --- checks -------------------------------------------------------------------------------------
# Each takes the case, the dtype and conftest's triton_only; ``tiles`` asks that forced blocks
# really tile the launch (the named cases are sized for it, random ones need not be).


def check_max_forward(case, dtype, only_triton, tiles=True):
    x = make_input(case, dtype)
    kw = case.kwargs("max")
    ref_out, ref_idx = torch_pool("max", case.ndim)(x, return_indices=True, **kw)
    ref_plain = torch_pool("max", case.ndim)(x, **kw)
    pool = tg_pool("max", case.ndim)

    with launch_blocks(case.blocks, tiles), tgpool_only(case, only_triton):
        out = pool(x, **kw)
        out_i, idx = pool(x, return_indices=True, **kw)

    assert_exact(out, ref_plain)
    assert_exact(out_i, ref_out)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, ref_idx)
    assert out_i.stride() == ref_out.stride()
    assert idx.stride() == ref_idx.stride()
    if case.ndim > 1:
        assert out.stride() == ref_plain.stride()


def check_avg_forward(case, dtype, only_triton, tiles=True):
    x = make_input(case, dtype)
    kw = case.kwargs("avg")
    ref64 = torch_pool("avg", case.ndim)(x.double(), **kw)
    ref_strides = torch_pool("avg", case.ndim)(for_torch_avg(case, x), **kw).stride()

    with launch_blocks(case.blocks, tiles), tgpool_only(case, only_triton):
        out = tg_pool("avg", case.ndim)(x, **kw)

    assert_close(out, ref64, dtype)
    assert out.stride() == ref_strides


def _grad(pool, x, g, **kw):
    x = x.detach().requires_grad_()
    out = pool(x, **kw)
    (grad,) = torch.autograd.grad(out, x, g)
    return grad


def check_max_backward(case, dtype, only_triton, tiles=True):
    x = make_input(case, dtype)
    kw = case.kwargs("max")
    ref_out = torch_pool("max", case.ndim)(x, **kw)
    g = torch.randn(ref_out.shape).to(dtype)

    with launch_blocks(case.blocks, tiles), tgpool_only(case, only_triton):
        grad = _grad(tg_pool("max", case.ndim), x, g, **kw)

    ref = _grad(torch_pool("max", case.ndim), x, g, **kw)
    if case.windows_overlap:  # several outputs may add into one input element
        ref64 = _grad(torch_pool("max", case.ndim), x.double(), g.double(), **kw)
        assert_close(grad, ref64, dtype)
    else:  # each input element receives at most one output's gradient
        assert_exact(grad, ref)
    assert grad.stride() == ref.stride()


def check_avg_backward(case, dtype, only_triton, tiles=True):
    x = make_input(case, dtype)
    kw = case.kwargs("avg")
    ref_out = torch_pool("avg", case.ndim)(x.double(), **kw)
    g = torch.randn(ref_out.shape).to(dtype)

    with launch_blocks(case.blocks, tiles), tgpool_only(case, only_triton):
        grad = _grad(tg_pool("avg", case.ndim), x, g, **kw)

    ref64 = _grad(torch_pool("avg", case.ndim), x.double(), g.double(), **kw)
    assert_close(grad, ref64, dtype)
    like = for_torch_avg(case, x)
    ref_grad = _grad(torch_pool("avg", case.ndim), like, g.to(like.dtype), **kw)
    assert grad.stride() == ref_grad.stride()


# --- the named cases, every dtype -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", params("max"))
def test_max_pool_forward(case, dtype, only_triton):
    check_max_forward(case, dtype, only_triton)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", params("avg"))
def test_avg_pool_forward(case, dtype, only_triton):
    check_avg_forward(case, dtype, only_triton)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", params("max", backward=True))
def test_max_pool_backward(case, dtype, only_triton):
    check_max_backward(case, dtype, only_triton)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", params("avg", backward=True))
def test_avg_pool_backward(case, dtype, only_triton):
    check_avg_backward(case, dtype, only_triton)


# --- seeded random windows, the dtypes in turn ----------------------------------------------------

RANDOM = [
    pytest.param(c, DTYPES[i % len(DTYPES)], id=f"{c.ndim}d-{c.name}-{str(DTYPES[i % 4])[6:]}")
    for i, c in enumerate(random_cases(48))
]

CHECKS = {
    ("max", "forward"): check_max_forward,
    ("avg", "forward"): check_avg_forward,
    ("max", "backward"): check_max_backward,
    ("avg", "backward"): check_avg_backward,
}


@pytest.mark.parametrize("case, dtype", RANDOM)
def test_random_window(case, dtype, only_triton):
    reduction = case.reductions[0]
    CHECKS[reduction, "forward"](case, dtype, only_triton, tiles=False)
    CHECKS[reduction, "backward"](case, dtype, only_triton, tiles=False)
