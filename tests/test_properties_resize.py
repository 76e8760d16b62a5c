"""Property tests (hypothesis) of the pools whose output size is a parameter: adaptive_avg_pool
and adaptive_max_pool 1d/2d/3d, fractional_max_pool2d/3d and max_unpool1d/2d/3d, over random
sizes, dtypes, layouts and values, against torch's own functions, forward and backward.

Every example runs tgpool inside ``kernels_only`` (torch's functions raise there) and checks that a
kernel launched in the forward and in the backward (tests/strategies.py). Specs torch refuses
(an output larger than fractional pooling allows, an unpool output_size out of range) must make
tgpool raise the same exception type before any launch.

Example counts: ``strategies.prop_settings`` (``TGPOOL_HYPOTHESIS_EXAMPLES`` scales them).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume
from hypothesis import strategies as st
from strategies import (
    TORCH_POOLS,
    check_against_torch,
    draw_blocks,
    make_input,
    property_test,
    relayout,
)

import tgpool

_ADAPTIVE = [f"adaptive_{r}_pool{n}d" for r in ("avg", "max") for n in (1, 2, 3)]
_ADAPTIVE += [f"adaptive_max_pool{n}d_with_indices" for n in (1, 2, 3)]
_FRACTIONAL = [f"fractional_max_pool{n}d{s}" for n in (2, 3) for s in ("", "_with_indices")]
_UNPOOL = ["max_unpool1d", "max_unpool2d", "max_unpool3d"]


def _draw_shape(data, ndim, low=1):
    top = 9 if ndim < 3 else 5
    spatial = tuple(data.draw(st.integers(low, top), label=f"size{i}") for i in range(ndim))
    n = data.draw(st.integers(1, 2), label="N")
    c = data.draw(st.integers(1, 3), label="C")
    return (n, c, *spatial)


# --- adaptive pooling -----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["avg", "max"])
@pytest.mark.parametrize("ndim", [1, 2, 3])
@property_test(20)
def test_adaptive_pool(ndim, reduction, data, dtype, layout, seed):
    shape = _draw_shape(data, ndim)
    # output sizes below, equal to and above the input's (windows then overlap or repeat);
    # None keeps the input's size (2d / 3d only, as torch)
    size = st.integers(1, 10)
    if ndim == 1:
        output_size = data.draw(size, label="output_size")
    else:
        output_size = data.draw(
            size | st.tuples(*[size | st.none() for _ in range(ndim)]), label="output_size"
        )
    return_indices = reduction == "max" and data.draw(st.booleans(), label="return_indices")
    kinds = ["randn", "ties", "nan"] if reduction == "max" else ["randn", "ties"]
    inp = make_input(shape, layout, dtype, data.draw(st.sampled_from(kinds)), seed, ndim)
    name = f"adaptive_{reduction}_pool{ndim}d"
    extra = {"return_indices": return_indices} if reduction == "max" else {}

    check_against_torch(
        lambda x: getattr(tgpool, name)(x, output_size, **extra),
        lambda x: getattr(F, name)(x, output_size, **extra),
        inp,
        blocked=_ADAPTIVE + TORCH_POOLS,
        seed=seed,
        exact=reduction == "max",
    )


# --- fractional max pooling -----------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [2, 3])
@property_test(30)
def test_fractional_max_pool(ndim, data, dtype, layout, seed):
    shape = _draw_shape(data, ndim, low=2)
    # (3d: windows up to 2, so that most tiny inputs leave room for an output, in - k >= 1)
    k = tuple(data.draw(st.integers(1, 5 - ndim), label=f"k{i}") for i in range(ndim))
    if data.draw(st.booleans(), label="use_ratio"):
        output_size = None
        # a tuple (torch's fractional_max_pool2d takes len() of it; 3d also takes a float)
        ratio = st.sampled_from([0.3, 0.5, 0.7])
        ratios = st.tuples(*[ratio] * ndim)
        output_ratio = data.draw(ratio | ratios if ndim == 3 else ratios, label="output_ratio")
    else:
        # up to torch's limit per dim (2d: in - k + 1, 3d: in - k); no room: torch's error
        output_size = tuple(
            data.draw(st.integers(1, max(n - kk + (1 if ndim == 2 else 0), 1)), label=f"out{i}")
            for i, (n, kk) in enumerate(zip(shape[2:], k, strict=True))
        )
        output_ratio = None
    return_indices = data.draw(st.booleans(), label="return_indices")
    kind = data.draw(st.sampled_from(["randn", "ties", "nan"]), label="values")
    inp = make_input(shape, layout, dtype, kind, seed, ndim)
    # the same samples for both; in the input's dtype, as torch draws them
    g = torch.Generator().manual_seed(seed)
    samples = torch.rand(shape[0], shape[1], ndim, generator=g, dtype=torch.float64).to(dtype)
    name = f"fractional_max_pool{ndim}d"
    kw = dict(output_size=output_size, output_ratio=output_ratio, _random_samples=samples)

    def tg(x):
        return getattr(tgpool, name)(x, k, return_indices=return_indices, **kw)

    def ref(x64):
        # ATen computes the windows in the input's dtype (tgpool emulates its CPU rule: windows
        # of float16 / bfloat16 differ from those of a float64 upcast), so torch runs on the
        # input itself; its values and indices are then read from the float64 input at torch's
        # indices, which is torch's backward too (the gradient goes to each window's argmax)
        out, idx = getattr(F, name)(x64.detach().to(dtype), k, return_indices=True, **kw)
        value = x64.flatten(2).gather(2, idx.flatten(2)).view(out.shape)
        assert torch.equal(value.detach().to(dtype), out) or out.isnan().any()
        return (value, idx) if return_indices else value

    check_against_torch(
        tg,
        ref,
        inp,
        blocked=_FRACTIONAL,
        prefix="fractional_max",
        seed=seed,
        exact=True,
    )


# --- max_unpool -----------------------------------------------------------------------------------


@pytest.mark.parametrize("ndim", [1, 2, 3])
@property_test(30)
def test_max_unpool(ndim, data, dtype, layout, seed):
    shape = _draw_shape(data, ndim)
    k = tuple(data.draw(st.integers(1, min(3, n)), label=f"k{i}") for i, n in enumerate(shape[2:]))
    # stride >= kernel: windows never overlap, so no index repeats (which value a repeated index
    # keeps is unspecified on CUDA: README, and tests/test_max_unpool.py pins the CPU rule)
    stride = tuple(
        kk + data.draw(st.integers(0, 1), label=f"extra_stride{i}") for i, kk in enumerate(k)
    )
    padding = tuple(data.draw(st.integers(0, kk // 2), label=f"pad{i}") for i, kk in enumerate(k))
    pool_shape = (1, *shape[1:]) if layout == "expanded" else shape
    x0 = make_input(pool_shape, "contiguous", torch.float64, "randn", seed, ndim).leaf.detach()
    pooled, indices = getattr(F, f"max_pool{ndim}d")(x0, k, stride, padding, return_indices=True)
    unpooled_shape = (shape[0], *pooled.shape[1:])
    if layout == "expanded":  # one batch row of values and indices, repeated
        indices = indices.expand(unpooled_shape)
    inp = relayout(pooled.to(dtype), layout, unpooled_shape)
    # torch's default output size, or one within (default - stride, default + stride) per dim;
    # a smaller one leaves indices out of range: torch's error
    default = [
        (i - 1) * s - 2 * p + kk for i, s, p, kk in zip(pooled.shape[2:], stride, padding, k)
    ]
    output_size = None
    if data.draw(st.booleans(), label="explicit_output_size"):
        output_size = [
            d + data.draw(st.integers(-(s - 1), s - 1), label=f"out{i}")
            for i, (d, s) in enumerate(zip(default, stride, strict=True))
        ]
    # an empty output: torch's forward returns it without checking the indices, then torch's own
    # backward raises IndexError; tgpool refuses the (out of range) indices at once
    assume(min(output_size or default) > 0)
    name = f"max_unpool{ndim}d"

    check_against_torch(
        lambda x: getattr(tgpool, name)(x, indices, k, stride, padding, output_size),
        lambda x: getattr(F, name)(x, indices, k, stride, padding, output_size),
        inp,
        blocked=_UNPOOL,
        prefix="max_unpool",
        # forced tiny blocks: several programs (the adaptive and fractional tests leave them to
        # their own files' block cases: forced blocks cost them seconds per example here)
        guard=draw_blocks(data),
        seed=seed,
        exact=True,
    )
