"""Property tests (hypothesis) of global pooling and SPPF: global_pool (every reduction, both data
formats, keepdim, masks), global_max_pool, global_avg_pool, gem, ragged_pool (random segment
lengths, empty ones included) and sppf, over random shapes, dtypes, layouts and values, forward
and backward.

References: tests/test_global_pool.py's float64 formulas (``reference``, ``ragged_reference``:
plain torch, written independently of tgpool/reference/global_pool.py) and torch's chain of three
max_pool2d for sppf (``sppf_reference``). Every example runs tgpool with the pure-torch fallbacks
refused (``global_kernels_ran``, ``kernels_only``) and checks that a kernel launched in the
forward and in the backward (tests/strategies.py).

Example counts: ``strategies.prop_settings`` (``TGPOOL_HYPOTHESIS_EXAMPLES`` scales them).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import event
from hypothesis import strategies as st
from strategies import TORCH_POOLS, assert_close, check_against_torch, make_input, property_test
from test_global_pool import expected_shape, global_kernels_ran, ragged_reference, reference

import tgpool
from tgpool.functional.sppf_pooling import sppf_reference

REDUCTIONS = ["max", "avg", "sum", "lp", "gem", "avgmax", "catavgmax"]
#: the powers tested: integer and not. lp runs on positive values (lp of a negative sum is NaN
#: for a non-integer 1/p, in the reference as in torch's lp_pool); gem clamps at eps, so it runs
#: on randn values, negative ones included
POWERS = {"lp": [1.0, 2.0, 3.0, 2.5], "gem": [1.0, 3.0, 2.5]}
#: gradient (atol, rtol) scales: lp's and gem's backward read the output rounded to the dtype,
#: (p - 1) more roundings than a float64 chain (test_global_pool.py allows 2e-3 for float16)
GRAD_SCALE = {"lp": (10.0, 2.0), "gem": (10.0, 2.0)}
#: value (atol, rtol) scales: avgmax is 0.5 * (avg + max) of the avg rounded to the dtype (as
#: timm composes it), so where avg and max cancel its error is the avg's rounding, relative to
#: |avg| and not to the result: atol becomes rtol (1e-3 for float16, 1.6e-2 for bfloat16)
VALUE_SCALE = {"avgmax": {torch.float16: 100.0, torch.bfloat16: 1600.0}}
#: values per reduction. No NaN: the reference's argmax reports the first of several NaNs where
#: ATen's max rule (and tgpool) reports the last (test_global_pool.py pins NaN rows)
KINDS = {"lp": ["positive"], "gem": ["randn", "positive"]}


def _mask(data, shape, data_format, seed):
    kind = data.draw(st.sampled_from(["none", "none", "random", "empty_row"]), label="mask")
    if kind == "none":
        return None
    spatial = shape[1:-1] if data_format == "channels_last" else shape[2:]
    g = torch.Generator().manual_seed(seed + 1)
    mask = torch.rand((shape[0], *spatial), generator=g) > 0.4
    if kind == "empty_row":
        mask[0] = False  # a row with no valid position: 0, index -1, zero gradient
    return mask


def _check(tg, ref, inp, reduction, dtype, seed):
    """check_against_torch for a global kernel (the pure-torch fallbacks refused), with the
    reduction's tolerances; no layout check: (N, C) results (test_global_pool.py checks gradient
    strides)."""
    check_against_torch(
        tg,
        ref,
        inp,
        blocked=[],
        prefix="global_",
        guard=global_kernels_ran,
        seed=seed,
        exact=reduction == "max",
        value_atol_scale=VALUE_SCALE.get(reduction, {}).get(dtype, 1.0),
        grad_scale=GRAD_SCALE.get(reduction, (1.0, 1.0)),
        check_layout=False,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@property_test(15)
def test_global_pool(reduction, data, dtype, layout, seed):
    ndim = data.draw(st.integers(1, 3), label="spatial_dims")
    data_format = data.draw(st.sampled_from(["channels_first", "channels_last"]), label="format")
    spatial = [data.draw(st.integers(1, 9 if ndim < 3 else 4)) for _ in range(ndim)]
    n, c = data.draw(st.integers(1, 3), label="N"), data.draw(st.integers(1, 5), label="C")
    shape = (n, *spatial, c) if data_format == "channels_last" else (n, c, *spatial)
    keepdim = data.draw(st.booleans(), label="keepdim")
    mask = _mask(data, shape, data_format, seed)
    p = data.draw(st.sampled_from(POWERS.get(reduction, [3.0])), label="p")
    return_indices = reduction == "max" and data.draw(st.booleans(), label="return_indices")
    kind = data.draw(st.sampled_from(KINDS.get(reduction, ["randn", "ties"])), label="values")
    inp = make_input(shape, layout, dtype, kind, seed, ndim + 1)
    # the dedicated entry points, or global_pool itself
    entry = data.draw(st.booleans(), label="dedicated_function")
    kw = dict(data_format=data_format, keepdim=keepdim, mask=mask)
    # GeM's learnable p: a one-element tensor whose gradient is compared too
    learnable = reduction == "gem" and data.draw(st.booleans(), label="learnable_p")
    p_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    p_tensor = torch.tensor([p], dtype=p_dtype, requires_grad=True) if learnable else None
    p_ref = torch.tensor([p], dtype=torch.float64, requires_grad=True) if learnable else p
    if learnable:
        p = p_tensor

    def tg(x):
        if entry and reduction == "max":
            return tgpool.global_max_pool(x, return_indices=return_indices, **kw)
        if entry and reduction == "avg":
            return tgpool.global_avg_pool(x, **kw)
        if entry and reduction == "gem":
            return tgpool.gem(x, p, **kw)
        return tgpool.global_pool(x, reduction, p=p, return_indices=return_indices, **kw)

    def ref(x):
        value, idx = reference(x, reduction, data_format, mask, p_ref)
        out_shape = expected_shape(x, reduction, data_format, keepdim)
        value = value.reshape(out_shape)
        if not return_indices:
            return value
        return value, idx.reshape(expected_shape(x, "max", data_format, keepdim))

    _check(tg, ref, inp, reduction, dtype, seed)
    if learnable and p_ref.grad is not None:
        # a sum over every position: float32 accumulation, and 16-bit inputs' rounded powers
        event("learnable p: gradient compared")
        assert p_tensor.grad is not None, "no gradient reached p"
        assert_close(p_tensor.grad, p_ref.grad, dtype, atol_scale=100.0, rtol_scale=10.0, msg="p")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@property_test(12)
def test_ragged_pool(reduction, data, dtype, layout, seed):
    # segments of 0 to 6 tokens: empty segments give 0 (index -1)
    lengths = data.draw(st.lists(st.integers(0, 6), min_size=1, max_size=5), label="lengths")
    if not sum(lengths):
        lengths[-1] = 1  # at least one token (zero tokens: test_global_pool's zero-size test)
    c = data.draw(st.integers(1, 6), label="C")
    offsets_dtype = data.draw(st.sampled_from([torch.int32, torch.int64]), label="offsets")
    offsets = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=offsets_dtype)
    p = data.draw(st.sampled_from(POWERS.get(reduction, [3.0])), label="p")
    return_indices = reduction == "max" and data.draw(st.booleans(), label="return_indices")
    kind = data.draw(st.sampled_from(KINDS.get(reduction, ["randn", "ties"])), label="values")
    # (T, C) values; "channels_last" is contiguous for 2-D, "expanded" repeats one token
    inp = make_input((sum(lengths), c), layout, dtype, kind, seed, 1)

    def tg(x):
        return tgpool.ragged_pool(x, offsets, reduction, p=p, return_indices=return_indices)

    def ref(x):
        value, idx = ragged_reference(x, lengths, reduction, p)
        return (value, idx) if return_indices else value

    _check(tg, ref, inp, reduction, dtype, seed)


@property_test(10)
def test_sppf(data, dtype, layout, seed):
    # odd k (an even k is refused by torch's chain, in cat, and by tgpool: one example in five)
    k = data.draw(st.sampled_from([1, 3, 5, 7, 2]), label="k")
    h, w = data.draw(st.integers(1, 9), label="H"), data.draw(st.integers(1, 9), label="W")
    # at most two planes: the interpreter runs SPPF's fused kernels at ~0.4 s per plane (k = 5)
    n = data.draw(st.integers(1, 2), label="N")
    shape = (n, data.draw(st.integers(1, 3 - n), label="C"), h, w)
    # distinct values in each plane: with tied maxima in a (2k-1)^2 or (3k-2)^2 window, tgpool's
    # gradient goes to another tied position than torch's chain (documented: sppf.TIE_RULE)
    inp = make_input(shape, layout, dtype, "distinct", seed, 2)
    check_against_torch(
        lambda x: tgpool.sppf(x, k),
        lambda x: sppf_reference(x, k),
        inp,
        blocked=TORCH_POOLS,
        prefix="sppf",
        seed=seed,
        exact=True,
    )
