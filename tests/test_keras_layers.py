"""tgpool.nn's Keras-style global pooling layers against Keras 3 itself.

Keras runs on its torch backend, so both sides take the same torch tensors and autograd reaches
through Keras's call: forward values and input gradients are compared directly. Every tgpool
result here is produced inside ``only_triton()`` with tgpool's pure-torch reference disabled, so
it came from the generated kernels. Behaviour Keras does not have (masks for max and for 2D/3D,
fully masked rows) is checked against torch formulas instead.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from keras_reference import DTYPE_NAMES, assert_close, forward_backward, keras, pair

import tgpool.nn
from tgpool.reference import global_pool as global_reference

# (layer, spatial rank); the Keras class has the same name
LAYERS = [
    ("GlobalMaxPooling1D", 1),
    ("GlobalMaxPooling2D", 2),
    ("GlobalMaxPooling3D", 3),
    ("GlobalAveragePooling1D", 1),
    ("GlobalAveragePooling2D", 2),
    ("GlobalAveragePooling3D", 3),
]
LAYER_IDS = [name for name, _ in LAYERS]

# channels_last shapes (batch, *spatial, channels): odd sizes, small for the interpreter
SHAPES = {1: (3, 7, 5), 2: (2, 4, 5, 3), 3: (2, 3, 2, 4, 3)}


@pytest.fixture(autouse=True)
def _kernels_only(monkeypatch):
    """tgpool's pure-torch path raises here: a tgpool result can only come from the kernels."""

    def refuse(*args, **kwargs):
        raise AssertionError("tgpool's reference path ran instead of the Triton kernels")

    monkeypatch.setattr(global_reference, "global_pool", refuse)


def _input(rank, data_format, dtype, distinct):
    """Seeded input in ``data_format``; ``distinct``: no two values equal (max's gradient goes to
    one position here and is split by Keras between ties), exact in every dtype."""
    shape = SHAPES[rank]
    n = int(np.prod(shape))
    if distinct:
        x = (torch.randperm(n).to(torch.float64) - n // 2) / 4  # multiples of 1/4 below 64
        x = x.reshape(shape)
    else:
        x = torch.randn(shape, dtype=torch.float64)
    if data_format == "channels_first":
        x = x.movedim(-1, 1).contiguous()
    return x.to(dtype)


#: NaN (e.g. a fully masked row's average) compares equal to NaN here
_assert_close = functools.partial(assert_close, equal_nan=True)


# --- forward and backward against Keras ----------------------------------------------------------


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_matches_keras(name, rank, data_format, keepdims, only_triton):
    """float32 with Keras's default dtype policy: the plain Keras layer, unchanged."""
    ours, theirs = pair(name, data_format=data_format, keepdims=keepdims)
    is_max = "Max" in name
    x = _input(rank, data_format, torch.float32, distinct=is_max)
    with only_triton():
        y, gx, g = forward_backward(ours, x)
    y_ref, gx_ref, _ = forward_backward(theirs, x, grad=g)
    _assert_close(y, y_ref, torch.float32, exact=is_max)
    _assert_close(gx, gx_ref, torch.float32, exact=is_max)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_matches_keras_dtypes(name, rank, dtype, only_triton):
    """Other dtypes against a Keras layer whose policy is that dtype (without it Keras computes
    in float32); tgpool keeps the input's dtype with or without ``dtype=``."""
    data_format = "channels_first" if rank == 2 else "channels_last"
    kwargs = {"data_format": data_format, "dtype": DTYPE_NAMES[dtype]}
    theirs = getattr(keras.layers, name)(**kwargs)
    is_max = "Max" in name
    x = _input(rank, data_format, dtype, distinct=is_max)
    y_ref, gx_ref, g = forward_backward(theirs, x)
    for ours in (
        getattr(tgpool.nn, name)(**kwargs),
        getattr(tgpool.nn, name)(data_format=data_format),
    ):
        with only_triton():
            y, gx, _ = forward_backward(ours, x, grad=g)
        _assert_close(y, y_ref, dtype, exact=is_max)
        _assert_close(gx, gx_ref, dtype, exact=is_max)
    if dtype == torch.float64 and not is_max:
        dims = (
            tuple(range(2, rank + 2))
            if data_format == "channels_first"
            else tuple(range(1, rank + 1))
        )
        torch.testing.assert_close(y, x.mean(dims), atol=1e-12, rtol=1e-12)


def test_dtype_policy_casts_like_keras(only_triton):
    """``dtype="float32"`` casts a float64 input as Keras's default policy does."""
    x = _input(2, "channels_last", torch.float64, distinct=False)
    with only_triton():
        y = tgpool.nn.GlobalAveragePooling2D(dtype="float32")(x)
    y_ref = keras.layers.GlobalAveragePooling2D()(x)
    assert y.dtype == y_ref.dtype == torch.float32
    _assert_close(y, y_ref, torch.float32, exact=False)


# 1D average with a Keras mask: variable lengths, a full row and a length-one row
LENGTHS = [7, 3, 1]
MASK_KINDS = {
    "bool": lambda m: m,
    "int64": lambda m: m.to(torch.int64),
    "float32": lambda m: m.to(torch.float32),
    "float-nonzero": lambda m: m.to(torch.float32) * 0.5,  # Keras casts to bool: 0.5 is True
}


@pytest.mark.parametrize("kind", list(MASK_KINDS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_masked_average_1d_matches_keras(data_format, dtype, kind, only_triton):
    kwargs = {"data_format": data_format, "keepdims": data_format == "channels_first"}
    kwargs["dtype"] = DTYPE_NAMES[dtype]
    ours, theirs = pair("GlobalAveragePooling1D", **kwargs)
    x = _input(1, data_format, dtype, distinct=False)
    steps = SHAPES[1][1]
    mask = MASK_KINDS[kind](torch.arange(steps)[None, :] < torch.tensor(LENGTHS)[:, None])
    with only_triton():
        y, gx, g = forward_backward(ours, x, mask=mask)
    y_ref, gx_ref, _ = forward_backward(theirs, x, mask=mask, grad=g)
    _assert_close(y, y_ref, dtype, exact=False)
    _assert_close(gx, gx_ref, dtype, exact=False)
    padded = (gx.movedim(1, -1) if data_format == "channels_first" else gx)[1, LENGTHS[1] :]
    assert (padded == 0).all(), "padding steps must get no gradient"


def test_max_nan_propagates_like_keras(only_triton):
    x = _input(1, "channels_last", torch.float32, distinct=True)
    x[1, 4, 2] = float("nan")
    ours, theirs = pair("GlobalMaxPooling1D")
    with only_triton():
        y = ours(x)
    _assert_close(y, theirs(x), torch.float32, exact=True)
    assert y[1, 2].isnan() and not y[0].isnan().any()


def test_numpy_input_like_keras(only_triton):
    """Keras takes arrays; so do these layers (float64 here: both keep it with dtype="float64")."""
    x = _input(2, "channels_last", torch.float64, distinct=True).numpy()
    ours, theirs = pair("GlobalMaxPooling2D", dtype="float64")
    with only_triton():
        y = ours(x)
    _assert_close(y, theirs(x), torch.float64, exact=True)


# --- constructor and shapes ----------------------------------------------------------------------


@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_constructor_like_keras(name, rank):
    ours, theirs = pair(name)
    assert (ours.data_format, ours.keepdims) == (theirs.data_format, theirs.keepdims)
    assert ours.data_format == "channels_last" and ours.keepdims is False
    assert pair(name, data_format="Channels_First")[0].data_format == "channels_first"
    assert getattr(tgpool.nn, name)(name="pool").name == "pool"
    assert isinstance(ours, torch.nn.Module) and list(ours.parameters()) == []
    for bad in ({"data_format": "NCHW"}, {"foo": 1}, {"trainable": "yes"}):
        with pytest.raises(ValueError):
            getattr(keras.layers, name)(**bad)
        with pytest.raises(ValueError):
            getattr(tgpool.nn, name)(**bad)
    wrong_rank = torch.zeros((2,) * (rank + 3))
    with pytest.raises(ValueError):
        theirs(wrong_rank)
    with pytest.raises(ValueError, match=f"expected ndim={rank + 2}, found ndim={rank + 3}"):
        ours(wrong_rank)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_output_shape_like_keras(name, rank, data_format, keepdims):
    ours, theirs = pair(name, data_format=data_format, keepdims=keepdims)
    shape = (None, *SHAPES[rank][1:])
    assert ours.compute_output_shape(shape) == theirs.compute_output_shape(shape)


# --- tgpool's extensions (no Keras counterpart): checked against torch ---------------------------


def _torch_masked(x, mask, data_format, reduction):
    """float64 masked max / mean over the spatial dims of a (N, ..) input, channels moved last."""
    x = x.double()
    if data_format == "channels_first":
        x = x.movedim(1, -1)
    x = x.reshape(x.shape[0], -1, x.shape[-1])
    keep = mask.reshape(mask.shape[0], -1, 1)
    if reduction == "max":
        return x.masked_fill(~keep, float("-inf")).amax(1)
    return x.masked_fill(~keep, 0).sum(1) / keep.sum(1)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_masks_beyond_keras(name, rank, data_format, only_triton):
    """Masks for max and for 2D/3D, (batch, *spatial) in either data format."""
    layer = getattr(tgpool.nn, name)(data_format=data_format)
    is_max = "Max" in name
    x = _input(rank, data_format, torch.float32, distinct=is_max)
    spatial = SHAPES[rank][1:-1]
    mask = torch.rand((SHAPES[rank][0], *spatial)) < 0.6
    mask.reshape(mask.shape[0], -1)[:, 0] = True  # every row keeps a position
    with only_triton():
        y = layer(x, mask=mask.to(torch.int32))
    expected = _torch_masked(x, mask, data_format, "max" if is_max else "avg")
    _assert_close(y, expected.float(), torch.float32, exact=is_max)


@pytest.mark.parametrize("name", ["GlobalMaxPooling1D", "GlobalAveragePooling1D"])
def test_fully_masked_row_is_zero(name, only_triton):
    """A row with no valid step pools to 0 with no gradient (Keras's masked average: NaN)."""
    x = _input(1, "channels_last", torch.float32, distinct=True)
    mask = torch.tensor([[1, 1, 0, 0, 0, 0, 0], [0] * 7, [1] * 7])
    with only_triton():
        y, gx, _ = forward_backward(getattr(tgpool.nn, name)(), x, mask=mask)
    assert (y[1] == 0).all() and (gx[1] == 0).all()
    rows = [0, 2]
    reduction = "max" if "Max" in name else "avg"
    expected = _torch_masked(x[rows], mask[rows].bool(), "channels_last", reduction).float()
    _assert_close(y[rows], expected, torch.float32, exact=reduction == "max")
    if name == "GlobalAveragePooling1D":
        assert keras.layers.GlobalAveragePooling1D()(x, mask=mask)[1].isnan().all()
