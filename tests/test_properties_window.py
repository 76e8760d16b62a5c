"""Property tests (hypothesis) of the window pools: max_pool1d/2d/3d, avg_pool1d/2d/3d and
lp_pool1d/2d/3d over random windows, shapes, dtypes, layouts and values, against torch's own
functions on the float64 upcast of the same input, forward and backward: int, "same" and "valid"
padding, ceil_mode, dilation, count_include_pad, divisor_override, return_indices, norm types
(integer, non-integer, +-inf), windows of more than 64 taps (the separable passes), unbatched
inputs, and forced tiny launch blocks (1-D/2-D) so that rows span several programs.

Every example runs tgpool inside ``kernels_only`` (torch's pooling raises there) and checks that a
kernel launched in the forward and in the backward (tests/strategies.py). A spec torch refuses
(padding above kernel_size // 2, an empty output, avg_pool3d's window larger than the input) must
make tgpool raise the same exception type before any launch; about one example in ten draws a
padding just above the limit on purpose. ``assume()`` skips only max windows that lie wholly in
the padding (see ``_covers_input``).

Example counts: ``strategies.prop_settings`` (``TGPOOL_HYPOTHESIS_EXAMPLES`` scales them).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume
from hypothesis import strategies as st
from strategies import TORCH_POOLS, check_against_torch, draw_blocks, make_input, property_test
from test_same_padding import SameCase
from test_same_padding import reference as same_reference

import tgpool

_LP_POOLS = ["lp_pool1d", "lp_pool2d", "lp_pool3d"]


def _covers_input(size, k, s, p, d, ceil_mode) -> bool:
    """Whether every output window holds an input element (True too when the output is empty:
    that is torch's error to compare). torch's CPU max backward sends the gradient of an
    all-padding window (possible with dilation) outside the window (tests/cases.py,
    EMPTY_WINDOW_GRADIENT), so the strategy avoids those windows."""
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    windows = (range(o * s - p, o * s - p + d * k, d) for o in range(max(out, 0)))
    return all(any(0 <= t < size for t in w) for w in windows)


def _same_covers_input(size, k, s, d) -> bool:
    """_covers_input for padding="same" (TensorFlow's padding: the extra element after). An
    all-padding window (dilation again) has no index torch defines: the reference pads with -inf
    and maps its index back outside the input, tgpool follows torch's rule for int padding."""
    before = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0) // 2
    windows = (range(o * s - before, o * s - before + d * k, d) for o in range(-(-size // s)))
    return all(any(0 <= t < size for t in w) for w in windows)


def _draw_shape(data, ndim):
    """(N, C, *spatial), or (C, *spatial) unbatched (one example in eight), and whether to draw a
    window of more than 64 taps (2-D, one example in six: the separable large-window passes)."""
    big = ndim == 2 and data.draw(st.integers(0, 5), label="big") == 0
    top = 9 if ndim < 3 else 5
    low = 8 if big else 1
    spatial = tuple(data.draw(st.integers(low, top), label=f"size{i}") for i in range(ndim))
    n = data.draw(st.integers(1, 2), label="N")
    c = data.draw(st.integers(1, 3), label="C")
    if data.draw(st.integers(0, 7), label="unbatched") == 0:
        return (c, *spatial), big
    return (n, c, *spatial), big


def _draw_window(data, ndim, reduction, spatial, big):
    """kernel_size, stride (None or a tuple), padding (ints, "same" or "valid"), dilation."""
    # mostly windows that fit the input (+1: some outputs empty, torch's error); avg_pool3d
    # refuses a window larger than the input, padding or not
    fit = 0 if (reduction == "avg" and ndim == 3) else 1
    k = tuple(
        data.draw(st.integers(8 if big else 1, max(min(9 if big else 4, n + fit), 1)))
        for n in spatial
    )
    stride = data.draw(st.none() | st.tuples(*[st.integers(1, 3) for _ in spatial]), label="stride")
    dilation = (1,) * ndim
    if reduction == "max" and not big:
        dilation = data.draw(st.tuples(*[st.integers(1, 2) for _ in spatial]), label="dilation")
    mode = "int"
    if reduction in ("max", "avg"):
        mode = data.draw(st.sampled_from(["int", "int", "int", "same", "valid"]), label="mode")
    if mode != "int":
        return k, stride, mode, dilation
    padding = [data.draw(st.integers(0, kk // 2)) for kk in k]
    if data.draw(st.integers(0, 9), label="bad_padding") == 0:
        padding[0] = k[0] // 2 + 1  # torch refuses: tgpool must raise the same type
    return k, stride, tuple(padding), dilation


def _draw_spec(data, ndim, reduction):
    """The input's shape, then kernel_size, stride, padding, dilation and ceil_mode (False for
    padding="same", which has none)."""
    shape, big = _draw_shape(data, ndim)
    k, stride, padding, dilation = _draw_window(data, ndim, reduction, shape[-ndim:], big)
    ceil_mode = padding != "same" and data.draw(st.booleans(), label="ceil_mode")
    return shape, k, stride, padding, dilation, ceil_mode


def _check(tg, ref, inp, data, ndim, seed, *, also_blocked=(), **kw):
    """check_against_torch with torch's pooling refused and, for 1-D/2-D, forced tiny launch
    blocks drawn (3-D: too many programs to interpret)."""
    check_against_torch(
        tg,
        ref,
        inp,
        blocked=TORCH_POOLS + list(also_blocked),
        guard=draw_blocks(data) if ndim < 3 else None,
        seed=seed,
        **kw,
    )


@pytest.mark.parametrize("ndim", [1, 2, 3])
@property_test(20)
def test_max_pool(ndim, data, dtype, layout, seed):
    shape, k, stride, padding, dilation, ceil_mode = _draw_spec(data, ndim, "max")
    return_indices = data.draw(st.booleans(), label="return_indices")
    s = stride or k
    if isinstance(padding, tuple):
        assume(all(map(_covers_input, shape[-ndim:], k, s, padding, dilation, [ceil_mode] * ndim)))
    elif padding == "same":
        assume(all(map(_same_covers_input, shape[-ndim:], k, s, dilation)))
    # ties: the first maximum's index; nan: a NaN wins with the last NaN's index (ATen's rule)
    kind = data.draw(st.sampled_from(["randn", "ties", "nan"]), label="values")
    inp = make_input(shape, layout, dtype, kind, seed, ndim)

    def tg(x):
        fn = getattr(tgpool, f"max_pool{ndim}d")
        return fn(x, k, stride, padding, dilation, ceil_mode, return_indices)

    def ref(x):
        if padding == "same":
            case = SameCase("p", ndim, tuple(x.shape), k, stride, dilation)
            out, idx = same_reference(case, "max", x)
            return (out, idx) if return_indices else out
        fn = getattr(F, f"max_pool{ndim}d")
        pad = 0 if padding == "valid" else padding
        return fn(x, k, stride, pad, dilation, ceil_mode, return_indices)

    _check(tg, ref, inp, data, ndim, seed, exact=True, check_layout=padding != "same")


@pytest.mark.parametrize("ndim", [1, 2, 3])
@property_test(20)
def test_avg_pool(ndim, data, dtype, layout, seed):
    shape, k, stride, padding, _, ceil_mode = _draw_spec(data, ndim, "avg")
    count_include_pad = data.draw(st.booleans(), label="count_include_pad")
    divisor = None
    if ndim > 1:
        divisor = data.draw(st.sampled_from([None, None, None, 1, 3, -2]), label="divisor")
    kind = data.draw(st.sampled_from(["randn", "ties"]), label="values")
    inp = make_input(shape, layout, dtype, kind, seed, ndim)
    extra = {} if ndim == 1 else {"divisor_override": divisor}

    def tg(x):
        fn = getattr(tgpool, f"avg_pool{ndim}d")
        return fn(x, k, stride, padding, ceil_mode, count_include_pad, **extra)

    def ref(x):
        if padding == "same":
            case = SameCase("p", ndim, tuple(x.shape), k, stride, divisor_override=divisor)
            return same_reference(case, "avg", x)[0]
        fn = getattr(F, f"avg_pool{ndim}d")
        pad = 0 if padding == "valid" else padding
        return fn(x, k, stride, pad, ceil_mode, count_include_pad, **extra)

    _check(tg, ref, inp, data, ndim, seed, check_layout=padding != "same")


#: norm_type -> the values it is tested on. Non-integer p: positive values (x ** 2.5 of a negative
#: x is NaN in torch and tgpool alike; tests/test_lp_pool.py pins that case). +-inf: distinct
#: values, so |x| has one maximum per window (the gradient's sign then follows one element).
#: The reference is float64, so torch's own float16 overflow of x ** p above 65504 (a documented
#: difference: tgpool computes in fp32) never enters; values stay below ~5 anyway.
NORMS = {1.0: "randn", 2.0: "randn", 3.0: "randn", 1.5: "positive", 2.5: "positive"}
NORMS.update({math.inf: "distinct", -math.inf: "distinct"})


@pytest.mark.parametrize("ndim", [1, 2, 3])
@property_test(16)
def test_lp_pool(ndim, data, dtype, layout, seed):
    shape, k, stride, _, _, ceil_mode = _draw_spec(data, ndim, "lp")  # int padding: ceil_mode drawn
    p = data.draw(st.sampled_from(sorted(NORMS)), label="norm_type")
    if ndim == 1:  # torch's lp_pool1d multiplies by kernel_size: it takes ints only
        k, stride = k[0], stride if stride is None else stride[0]
    inp = make_input(shape, layout, dtype, NORMS[p], seed, ndim)

    def tg(x):
        return getattr(tgpool, f"lp_pool{ndim}d")(x, p, k, stride, ceil_mode)

    def ref(x):
        return getattr(F, f"lp_pool{ndim}d")(x, p, k, stride, ceil_mode)

    # fp32 powers are 2 ** (p * log2|x|): a few ulps more than torch's pow (test_lp_pool.py)
    _check(
        tg,
        ref,
        inp,
        data,
        ndim,
        seed,
        also_blocked=_LP_POOLS,
        exact=math.isinf(p),
        rtol_scale=8.0 if dtype == torch.float32 else 1.0,
        grad_scale=(10.0, 2.0),
    )
