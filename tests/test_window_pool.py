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
# One call per case and dtype checks the forward and the input gradient together: in the
# interpreter every launch costs a fixed ~0.1 s, and the gradient reuses the forward's launch.
# ``tiles`` asks that forced blocks really tile a launch (the named cases are sized for it).


def _grad(pool, x, g, **kw):
    x = x.detach().requires_grad_()
    (grad,) = torch.autograd.grad(pool(x, **kw), x, g)
    return grad


def _gradient_check(case, check) -> None:
    """Run the gradient comparison; for a case with a known difference from torch it must fail
    (strict), and the test is then reported as xfail."""
    if not case.xfail_backward:
        check()
        return
    with pytest.raises(AssertionError):
        check()
    pytest.xfail(case.xfail_backward)


def check_max(case, dtype, only_triton, tiles=True):
    x = make_input(case, dtype)
    kw = case.kwargs("max")
    torch_fn, pool = torch_pool("max", case.ndim), tg_pool("max", case.ndim)
    ref_plain = torch_fn(x, **kw)
    ref_out, ref_idx = torch_fn(x, return_indices=True, **kw)
    g = torch.randn(ref_out.shape).to(dtype)
    xg = x.detach().requires_grad_()

    with launch_blocks(case.blocks, tiles), tgpool_only(case, only_triton):
        out = pool(x, **kw)  # the kernel variant without indices
        out_i, idx = pool(xg, return_indices=True, **kw)
        (grad,) = torch.autograd.grad(out_i, xg, g)

    # forward: values and indices bit-exact, torch's strides
    assert_exact(out, ref_plain)
    assert_exact(out_i.detach(), ref_out)
    assert idx.dtype == torch.int64
    assert torch.equal(idx, ref_idx)
    assert out_i.stride() == ref_out.stride()
    assert idx.stride() == ref_idx.stride()
    if case.ndim > 1:  # torch's 1D max without indices picks its strides by code path
        assert out.stride() == ref_plain.stride()

    def check_grad():
        ref = _grad(torch_fn, x, g, **kw)
        if case.windows_overlap:  # several outputs may add into one input element
            assert_close(grad, _grad(torch_fn, x.double(), g.double(), **kw), dtype)
        else:  # each input element receives at most one output's gradient
            assert_exact(grad, ref)
        assert grad.stride() == ref.stride()

    _gradient_check(case, check_grad)


def check_avg(case, dtype, only_triton, tiles=True):
    x = make_input(case, dtype)
    kw = case.kwargs("avg")
    torch_fn, pool = torch_pool("avg", case.ndim), tg_pool("avg", case.ndim)
    ref64 = torch_fn(x.double(), **kw)
    g = torch.randn(ref64.shape).to(dtype)
    xg = x.detach().requires_grad_()

    with launch_blocks(case.blocks, tiles), tgpool_only(case, only_triton):
        out = pool(xg, **kw)
        (grad,) = torch.autograd.grad(out, xg, g)

    # strides from torch in x's dtype (or float32 where torch lacks it), values from float64
    like = for_torch_avg(case, x)
    assert_close(out.detach(), ref64, dtype)
    assert out.stride() == torch_fn(like, **kw).stride()

    def check_grad():
        assert_close(grad, _grad(torch_fn, x.double(), g.double(), **kw), dtype)
        assert grad.stride() == _grad(torch_fn, like, g.to(like.dtype), **kw).stride()

    _gradient_check(case, check_grad)


CHECKS = {"max": check_max, "avg": check_avg}


# --- the named cases, every dtype -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", params("max"))
def test_max_pool(case, dtype, only_triton):
    check_max(case, dtype, only_triton)


@pytest.mark.parametrize("dtype", DTYPE_PARAMS)
@pytest.mark.parametrize("case", params("avg"))
def test_avg_pool(case, dtype, only_triton):
    check_avg(case, dtype, only_triton)


# --- seeded random windows, the dtypes in turn ----------------------------------------------------

RANDOM = [
    pytest.param(c, DTYPES[i % len(DTYPES)], id=f"{c.ndim}d-{c.name}-{str(DTYPES[i % 4])[6:]}")
    for i, c in enumerate(random_cases(48))
]


@pytest.mark.parametrize("case, dtype", RANDOM)
def test_random_window(case, dtype, only_triton):
    CHECKS[case.reductions[0]](case, dtype, only_triton, tiles=False)
