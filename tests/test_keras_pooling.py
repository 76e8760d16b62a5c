"""tgpool.nn's Keras-style window pooling layers against Keras 3 itself (torch backend).

Both sides take the same torch tensors; forward values and input gradients are compared. Every
tgpool result is produced inside ``only_triton()``. The one known difference (AveragePooling with
uneven "same" padding, where Keras 3.15's torch backend replicates the edge element) is checked
against TensorFlow's rule instead, and the Keras behaviour it departs from is pinned by its own
test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from keras_reference import DTYPE_NAMES, assert_close, forward_backward, keras, pair

import tgpool.nn
from tgpool import runtime

LAYERS = [
    ("MaxPooling1D", 1),
    ("MaxPooling2D", 2),
    ("MaxPooling3D", 3),
    ("AveragePooling1D", 1),
    ("AveragePooling2D", 2),
    ("AveragePooling3D", 3),
]
LAYER_IDS = [n for n, _ in LAYERS]

# channels_last shapes (batch, *spatial, channels): small for the interpreter, even and odd sizes
SHAPES = {1: (2, 7, 3), 2: (2, 6, 5, 3), 3: (1, 4, 5, 3, 2)}

# (name, pool_size, strides, padding, uneven): uneven = "same" pads more after than before for
# some dim of SHAPES with a window holding several input elements: Keras 3.15's torch backend
# then averages replicated edge elements (see tgpool.nn.keras_window)
CONFIGS = [
    ("valid_defaults", None, None, "valid", False),
    ("valid_k3_s2", 3, 2, "valid", False),
    ("valid_k2_s1_overlap", 2, 1, "valid", False),
    ("same_k3_s1_even_padding", 3, 1, "same", False),
    ("same_k2_s2_pad_one_after", 2, 2, "same", False),  # the padded window holds 1 element
    ("same_k3_s2_uneven", 3, 2, "same", True),
    ("same_k4_s1_uneven", 4, 1, "same", True),
]
CONFIG_IDS = [c[0] for c in CONFIGS]


def _input(rank, data_format, dtype):
    """Seeded input; distinct multiples of 1/4 (exact in every dtype: max has one argmax)."""
    shape = SHAPES[rank]
    n = math.prod(shape)
    g = torch.Generator().manual_seed(rank * 100 + n)
    x = ((torch.randperm(n, generator=g).to(torch.float64) - n // 2) / 4).reshape(shape)
    if data_format == "channels_first":
        x = x.movedim(-1, 1).contiguous()
    return x.to(dtype)


def _kwargs(rank, pool, strides, padding, data_format):
    kw = {"padding": padding, "data_format": data_format}
    if pool is not None:
        kw["pool_size"] = (pool,) * rank
    if strides is not None:
        kw["strides"] = strides
    return kw


def tf_average_same(x, rank, pool, strides, data_format):
    """TensorFlow's "same" average in float64: window sums over input elements / their count."""
    cf = x.movedim(-1, 1) if data_format == "channels_last" else x
    pads = []
    for size in cf.shape[2:]:
        total = max((math.ceil(size / strides) - 1) * strides + pool - size, 0)
        pads.append((total // 2, total - total // 2))
    flat = [v for pair in reversed(pads) for v in pair]
    avg = getattr(F, f"avg_pool{rank}d")
    n = pool**rank
    sums = avg(F.pad(cf, flat), pool, strides) * n
    counts = (avg(F.pad(torch.ones_like(cf), flat), pool, strides) * n).round()
    out = sums / counts
    return out.movedim(1, -1) if data_format == "channels_last" else out


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_matches_keras(name, rank, config, data_format, only_triton):
    _, pool, strides, padding, uneven = config
    kw = _kwargs(rank, pool, strides, padding, data_format)
    if pool is None and name.startswith("Average"):  # its pool_size has no default
        kw["pool_size"] = 2
    ours, theirs = pair(name, **kw)
    is_max = name.startswith("Max")
    x = _input(rank, data_format, torch.float32)
    with only_triton():
        y, gx, g = forward_backward(ours, x)
    if uneven and not is_max:  # Keras 3.15 (torch) replicates the edge: TensorFlow's rule here
        ref_x = x.double().requires_grad_()
        y_ref = tf_average_same(ref_x, rank, pool, strides, data_format)
        y_ref.backward(g.double())
        assert_close(y.double(), y_ref.detach(), torch.float32, exact=False)
        assert_close(gx.double(), ref_x.grad, torch.float32, exact=False)
        return
    y_ref, gx_ref, _ = forward_backward(theirs, x, grad=g)
    assert_close(y, y_ref, torch.float32, exact=is_max)
    # overlapping windows add up (order differs)
    assert_close(gx, gx_ref, torch.float32, exact=False)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_matches_keras_dtypes(name, rank, dtype, only_triton):
    """Other dtypes against a Keras layer of that dtype policy; tgpool keeps the input's dtype
    with or without ``dtype=``."""
    kw = {**_kwargs(rank, 3, 2, "same", "channels_last"), "pool_size": 2}  # even padding
    x = _input(rank, "channels_last", dtype)
    is_max = name.startswith("Max")
    if name == "AveragePooling3D" and dtype.itemsize == 2:
        # Keras on a CPU torch cannot (avg_pool3d has no 16-bit CPU kernel): its float32 result
        theirs = getattr(keras.layers, name)(**kw)
        y_ref, gx_ref, g = forward_backward(theirs, x.float())
        y_ref, gx_ref, g = y_ref.to(dtype), gx_ref.to(dtype), g.to(dtype)
    else:
        theirs = getattr(keras.layers, name)(**kw, dtype=DTYPE_NAMES[dtype])
        y_ref, gx_ref, g = forward_backward(theirs, x)
    for ours in (
        getattr(tgpool.nn, name)(**kw, dtype=DTYPE_NAMES[dtype]),
        getattr(tgpool.nn, name)(**kw),
    ):
        with only_triton():
            y, gx, _ = forward_backward(ours, x, grad=g)
        assert_close(y, y_ref, dtype, exact=is_max)
        assert_close(gx, gx_ref, dtype, exact=is_max)  # windows do not overlap here: exact for max


def test_keras_torch_backend_replicates_edge_for_uneven_average():
    """The Keras behaviour tgpool departs from, pinned: x = [1, 2, 3, 4], pool 4, stride 1,
    "same" pads 1 before and 2 after; Keras 3.15 on torch averages [3, 4, 4, 4] for the last
    output (3.75), TensorFlow (and tgpool) the input elements [3, 4] (3.5)."""
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    ours = tgpool.nn.AveragePooling1D(4, 1, "same")(x).flatten().tolist()
    assert ours == [2.0, 2.5, 3.0, 3.5]
    theirs = keras.layers.AveragePooling1D(4, 1, "same")(x).flatten().tolist()
    if theirs == ours:
        pytest.skip("this Keras averages input elements only (keras-team/keras#23233)")
    assert theirs[-1] == 3.75


@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_channels_last_is_read_in_place(name, rank, only_triton):
    """(batch, *spatial, channels) goes to the channels-contiguous tile: no transpose copy."""
    layer = getattr(tgpool.nn, name)(2, padding="same")
    x = _input(rank, "channels_last", torch.float32)
    op = "max" if name.startswith("Max") else "avg"
    kernel = f"{op}_pool{rank}d_fwd_channels"
    before = runtime.launch_counts[kernel]
    with only_triton():
        y = layer(x)
    assert runtime.launch_counts[kernel] == before + 1, "the input was not read channels-last"
    assert y.shape == layer.compute_output_shape(x.shape)


@pytest.mark.parametrize("name, rank", LAYERS, ids=LAYER_IDS)
def test_constructor_defaults_match_keras(name, rank):
    if name.startswith("Average"):  # Keras's AveragePooling has no default pool_size
        with pytest.raises(TypeError):
            getattr(keras.layers, name)()
        with pytest.raises(TypeError):
            getattr(tgpool.nn, name)()
    args = (2,) if name.startswith("Average") else ()
    ours, theirs = getattr(tgpool.nn, name)(*args), getattr(keras.layers, name)(*args)
    assert ours.pool_size == theirs.pool_size == (2,) * rank
    assert ours.strides == theirs.strides
    assert ours.padding == theirs.padding == "valid"
    assert ours.data_format == theirs.data_format == "channels_last"
    assert ours.name.startswith(theirs.name.rsplit("_", 1)[0][:8])
    named = getattr(tgpool.nn, name)(3, strides=1, padding="SAME", name="pool", trainable=False)
    assert (named.name, named.padding, named.strides) == ("pool", "same", (1,) * rank)
    shape = (2, *(None if i == 0 else 7 for i in range(rank)), 4)
    kw = {"pool_size": 3, "strides": 2, "padding": "same"}
    ours, theirs = pair(name, **kw)
    assert tuple(ours.compute_output_shape(shape)) == tuple(theirs.compute_output_shape(shape))


BAD = [
    ("pool_size_zero", {"pool_size": 0}, ValueError),
    ("pool_size_wrong_length", {"pool_size": (2, 2, 2, 2)}, ValueError),
    ("strides_float", {"strides": 1.5}, ValueError),
    ("data_format_unknown", {"data_format": "nhwc"}, ValueError),
    ("unknown_keyword", {"kernel_size": 2}, ValueError),
]


@pytest.mark.parametrize("kwargs, exc", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_constructor_arguments_raise_as_keras(kwargs, exc):
    with pytest.raises(exc):
        tgpool.nn.MaxPooling2D(**kwargs)
    with pytest.raises(exc):
        keras.layers.MaxPooling2D(**kwargs)


def test_unknown_padding_raises_where_keras_pools_as_valid():
    """Stricter than Keras 3.15 on torch, which silently pools padding="full" as "valid"."""
    with pytest.raises(ValueError, match="padding"):
        tgpool.nn.MaxPooling2D(padding="full")


def test_wrong_rank_raises_before_launch():
    before = dict(runtime.launch_counts)
    with pytest.raises(ValueError, match="expected ndim=4"):
        tgpool.nn.AveragePooling2D(2)(torch.randn(2, 5, 3))
    assert dict(runtime.launch_counts) == before
