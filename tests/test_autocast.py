"""Under torch.autocast every tgpool function returns what torch's pooling would (issue 7).

For each op: the output dtype equals torch's under the same autocast (asked of torch for every
op it has; for tgpool-only ops, of the torch op whose rule tgpool.functional.autocast says it
follows), the values equal a float64 reference of the same input (exact for max), the kernels
ran, and the gradient comes back in the input's dtype. CPU runs here through the interpreter;
the CUDA tests run the same table wherever a GPU is present.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import launches

import tgpool
from tgpool.functional import autocast as autocast_policy
from tgpool.functional.sppf_pooling import sppf_reference


def _samples(x, n):
    g = torch.Generator().manual_seed(1)
    return torch.rand(x.shape[0], x.shape[1], n, generator=g).to(x.dtype).to(x.device)


def _unpool_indices(x, n):
    g = torch.Generator().manual_seed(2)
    big = torch.rand(x.shape[0], x.shape[1], *(2 * s for s in x.shape[2:]), generator=g)
    return getattr(F, f"max_pool{n}d")(big, 2, return_indices=True)[1].to(x.device)


def _global_torch(kind, n):
    """The torch op the global rule follows, reduced to (N, C)."""
    if kind == "max":
        return lambda x: getattr(F, f"adaptive_max_pool{n}d")(x, 1).flatten(1)
    if kind == "gem":  # lp_pool's rule: pow, then an average
        return lambda x: (
            getattr(F, f"adaptive_avg_pool{n}d")(x.clamp(min=1e-6).pow(3), 1).pow(1 / 3).flatten(1)
        )
    return lambda x: getattr(F, f"adaptive_avg_pool{n}d")(x, 1).flatten(1)


def same_call(name, *args, values_only=False, **kwargs):
    """(tgpool's, torch's) call of the function ``name`` of each, with the same arguments:
    ``fn(x, *args, **kwargs)``, where an argument that is a function is replaced by its value for
    ``x`` (indices, samples); ``values_only``: the first of the results (values, not indices)."""

    def call(module):
        def run(x):
            given = [a(x) if callable(a) else a for a in args]
            named = {k: v(x) if callable(v) else v for k, v in kwargs.items()}
            out = getattr(module, name)(x, *given, **named)
            return out[0] if values_only else out

        return run

    return call(tgpool), call(F)


# name -> (spatial dims, tgpool call, torch call, exact): both calls take the input tensor
OPS = {}
for n in (1, 2, 3):
    OPS[f"max_pool{n}d"] = (n, *same_call(f"max_pool{n}d", 2), True)
    OPS[f"max_pool{n}d_with_indices"] = (
        n,
        *same_call(f"max_pool{n}d", 2, return_indices=True, values_only=True),
        True,
    )
    OPS[f"avg_pool{n}d"] = (n, *same_call(f"avg_pool{n}d", 2), False)
    OPS[f"lp_pool{n}d"] = (n, *same_call(f"lp_pool{n}d", 2, 2), False)
    OPS[f"adaptive_avg_pool{n}d"] = (n, *same_call(f"adaptive_avg_pool{n}d", 3), False)
    OPS[f"adaptive_max_pool{n}d"] = (n, *same_call(f"adaptive_max_pool{n}d", 3), True)
    indices = lambda x, n=n: _unpool_indices(x, n)  # made for each input
    OPS[f"max_unpool{n}d"] = (n, *same_call(f"max_unpool{n}d", indices, 2), True)
    OPS[f"global_max_pool-{n}d"] = (
        n,
        lambda x: tgpool.global_max_pool(x),
        _global_torch("max", n),
        True,
    )
    OPS[f"global_avg_pool-{n}d"] = (
        n,
        lambda x: tgpool.global_avg_pool(x),
        _global_torch("avg", n),
        False,
    )
    OPS[f"gem-{n}d"] = (n, lambda x: tgpool.gem(x, 3.0), _global_torch("gem", n), False)
for n in (2, 3):
    samples = lambda x, n=n: _samples(x, n)  # made for each input
    OPS[f"fractional_max_pool{n}d"] = (
        n,
        *same_call(f"fractional_max_pool{n}d", 2, output_size=2, _random_samples=samples),
        True,
    )
OPS["sppf"] = (2, lambda x: tgpool.sppf(x, 3), lambda x: sppf_reference(x, 3), True)
_OFFS = torch.tensor([0, 2, 5])
OPS["ragged_pool"] = (
    0,
    lambda v: tgpool.ragged_pool(v, _OFFS.to(v.device), "avg"),
    lambda v: F.adaptive_avg_pool1d(torch.stack([v[:2].mean(0), v[2:].mean(0)])[..., None], 1)[
        ..., 0
    ],
    False,
)

# the torch op whose dtype rule a tgpool-only op follows, where its torch composition (cat,
# stack) cannot run under autocast with a float16 input under bfloat16 autocast (torch raises
# "Unexpected floating ScalarType in at::autocast::prioritize")
DTYPE_RULE = {
    "sppf": lambda x: F.max_pool2d(x, 3, 1, 1),
    "ragged_pool": lambda v: F.adaptive_avg_pool1d(v.T[None], 1),
}

TOL = {torch.float16: (1e-3, 1e-3), torch.bfloat16: (1e-2, 1e-2), torch.float32: (1e-5, 1e-5)}


SHAPES = {"sppf": (1, 2, 4, 4)}  # the interpreter runs sppf's kernels slowly


def _input(n, dtype, device, name=""):
    shape = SHAPES.get(name, (5, 3) if n == 0 else (2, 3, *(6,) * n))
    return torch.rand(*shape, dtype=torch.float64, device=device).add_(0.1).to(dtype)


def _check(name, device, autocast_dtype, dtype):
    n, ours, theirs, exact = OPS[name]
    x = _input(n, dtype, device, name).requires_grad_()
    with torch.autocast(device, dtype=autocast_dtype):
        expected_dtype = DTYPE_RULE.get(name, theirs)(x.detach()).dtype
        before = launches()
        out = ours(x)
        assert launches() > before, "no tgpool kernel ran"
    assert out.dtype == expected_dtype, f"{name}: {out.dtype}, torch {expected_dtype}"
    # the same input, cast as autocast cast it, through float64
    ref = theirs(x.detach().to(expected_dtype).double()).to(expected_dtype)
    if exact:
        assert torch.equal(out.detach(), ref)
    else:
        atol, rtol = TOL[expected_dtype]
        torch.testing.assert_close(out.detach(), ref, atol=atol, rtol=rtol)
    out.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == dtype


@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", sorted(OPS))
def test_cpu_autocast_matches_torch(name, autocast_dtype):
    _check(name, "cpu", autocast_dtype, autocast_dtype)


@pytest.mark.parametrize("name", ["avg_pool3d", "adaptive_max_pool2d", "fractional_max_pool2d"])
def test_any_reduced_float_is_cast_not_only_the_autocast_dtype(name):
    """float16 inputs under bfloat16 autocast (and the reverse), as torch casts them."""
    _check(name, "cpu", torch.bfloat16, torch.float16)
    _check(name, "cpu", torch.float16, torch.bfloat16)


@pytest.mark.parametrize("name", ["max_pool3d", "avg_pool2d", "gem-3d", "max_unpool2d"])
def test_float32_input_stays_float32(name):
    """No pooling op is on an autocast lower-precision list."""
    _check(name, "cpu", torch.bfloat16, torch.float32)


def test_outside_autocast_the_dtype_is_kept():
    x = _input(3, torch.bfloat16, "cpu")
    assert tgpool.max_pool3d(x, 2).dtype == torch.bfloat16
    assert tgpool.fractional_max_pool3d(x, 2, output_size=2).dtype == torch.bfloat16


def _check_policy(device, dtype):
    """autocast_policy says float32 for exactly the ops torch's autocast runs in float32 (the ops
    torch has: not the global ones, sppf or ragged_pool)."""
    for name, (n, _ours, theirs, _) in OPS.items():
        if "-" in name or name in ("sppf", "ragged_pool"):
            continue
        x = _input(n, dtype, device)
        with torch.autocast(device, dtype=dtype):
            torch_casts = theirs(x).dtype == torch.float32
            assert autocast_policy.runs_in_float32(name, device) == torch_casts, name


def test_policy_agrees_with_torch_on_cpu():
    """The table itself: every op torch has, float32 under CPU autocast iff listed."""
    _check_policy("cpu", torch.bfloat16)


def test_autocast_traces_under_torch_compile_fullgraph():
    x = _input(3, torch.bfloat16, "cpu")

    def f(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return tgpool.avg_pool3d(t, 2), tgpool.max_pool2d(t[0], 2)

    out3, out2 = torch.compile(f, backend="eager", fullgraph=True)(x)
    assert out3.dtype == torch.float32 and out2.dtype == torch.bfloat16
    torch.testing.assert_close(out3, F.avg_pool3d(x.float(), 2))


def _cuda(test):
    """Marked for GPU runs; skipped without a CUDA device."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
    return pytest.mark.gpu(skip(test))


@_cuda
@pytest.mark.parametrize("autocast_dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", sorted(OPS))
def test_cuda_autocast_matches_torch(name, autocast_dtype):
    _check(name, "cuda", autocast_dtype, autocast_dtype)


@_cuda
def test_policy_agrees_with_torch_on_cuda():
    _check_policy("cuda", torch.float16)
