"""Adaptive pooling as torch sees it: every bad input raises what torch raises (before any launch),
the custom ops pass opcheck, a model compiles with torch.compile(fullgraph=True) forward and
backward, the nn modules are torch's, and devices without Triton fall back to torch."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import tgpool.functional.adaptive as A
from tgpool import runtime
from tgpool.nn import adaptive as nn_adaptive
from tgpool.ops import adaptive as adaptive_ops

X1 = torch.randn(2, 3, 8)
X2 = torch.randn(2, 3, 8, 8)
X3 = torch.randn(2, 3, 4, 6, 6)

# --- bad input ------------------------------------------------------------------------------------

BAD_CALLS = [
    # (name, function, input, output_size, words tgpool's message must contain); the exception
    # type must be the one torch's function raises for the same call
    ("input_list_2d", "adaptive_avg_pool2d", [1.0], 2, "'input'"),  # torch: AttributeError
    ("input_list_3d", "adaptive_max_pool3d", [1.0], 2, "'input'"),
    ("input_list_1d", "adaptive_max_pool1d", [1.0], 2, "'input'"),  # torch: TypeError
    ("size_none_2d", "adaptive_avg_pool2d", X2, None, "output_size"),
    ("size_float_2d", "adaptive_max_pool2d", X2, 2.0, "output_size"),
    ("size_bool_2d", "adaptive_avg_pool2d", X2, True, "output_size"),
    ("size_str_2d", "adaptive_avg_pool2d", X2, "3", "output_size"),
    ("size_tensor_2d", "adaptive_avg_pool2d", X2, torch.tensor(3), "output_size"),
    ("size_float_element_3d", "adaptive_max_pool3d", X3, (2, 2.0, None), "output_size"),
    ("size_none_1d", "adaptive_avg_pool1d", X1, None, "output_size"),
    ("size_none_element_1d", "adaptive_max_pool1d", X1, (None,), "output_size"),
    ("size_float_1d", "adaptive_max_pool1d", X1, 2.0, "output_size"),
    ("two_sizes_for_1d", "adaptive_avg_pool1d", X1, (3, 4), "output_size"),
    ("three_sizes_for_2d", "adaptive_avg_pool2d", X2, (3, 4, 5), "output_size"),
    ("one_size_tuple_for_2d", "adaptive_max_pool2d", X2, (3,), "output_size"),
    ("two_sizes_for_3d", "adaptive_max_pool3d", X3, (3, 4), "output_size"),
    # torch compares the number of sizes with the input's rank before anything else
    ("more_sizes_than_input_dims", "adaptive_avg_pool2d", torch.randn(3, 8), (2, 2), "output_size"),
    ("negative_size_avg", "adaptive_avg_pool2d", X2, (-1, 3), "output_size"),
    ("negative_size_max", "adaptive_max_pool2d", X2, (None, -1), "output_size"),
    ("negative_size_1d", "adaptive_avg_pool1d", X1, -2, "output_size"),
    ("negative_size_3d", "adaptive_max_pool3d", X3, -2, "output_size"),
    ("rank_2_for_2d", "adaptive_avg_pool2d", torch.randn(3, 8), 2, "input of size"),
    ("rank_5_for_2d", "adaptive_max_pool2d", X3, 2, "input of size"),
    ("rank_4_for_1d", "adaptive_avg_pool1d", X2, 2, "input of size"),
    ("rank_1_for_1d", "adaptive_max_pool1d", torch.randn(8), 2, "input of size"),
    ("rank_3_for_3d", "adaptive_avg_pool3d", torch.randn(3, 8, 8), 2, "input of size"),
    ("rank_6_for_3d", "adaptive_max_pool3d", torch.randn(1, 2, 3, 4, 4, 4), 2, "input of size"),
    ("empty_height", "adaptive_avg_pool2d", torch.randn(2, 3, 0, 8), 2, "dimension 2"),
    ("empty_length", "adaptive_max_pool1d", torch.randn(2, 3, 0), 2, "dimension 2"),
    ("empty_depth", "adaptive_avg_pool3d", torch.randn(2, 3, 0, 4, 4), 2, "dimension 2"),
    # max and 3-D avg refuse empty channels in a batch (avg 1-D and 2-D accept them)
    ("empty_channels_max", "adaptive_max_pool2d", torch.randn(2, 0, 4, 8), 2, "dimension 1"),
    ("empty_channels_avg3d", "adaptive_avg_pool3d", torch.randn(2, 0, 4, 4, 4), 2, "dimension 1"),
    ("integer_input", "adaptive_max_pool2d", X2.long(), 2, "int64"),
    ("complex_input", "adaptive_avg_pool2d", X2.cfloat(), 2, "complex64"),
]


def _torch_error(fn: str, x, size) -> type:
    try:
        getattr(F, fn)(x, size)
    except Exception as e:  # noqa: BLE001  (the type is what the test compares)
        return type(e)
    raise AssertionError(f"torch accepts {fn}({size!r})")


@pytest.mark.parametrize(
    "fn, x, size, words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_what_torch_raises_before_any_launch(fn, x, size, words):
    expected = _torch_error(fn, x, size)
    before = sum(runtime.launch_counts.values())
    with pytest.raises(expected) as info:
        getattr(A, fn)(x, size)
    assert type(info.value) is expected
    assert words in str(info.value)
    assert sum(runtime.launch_counts.values()) == before, "a kernel launched before the error"


ACCEPTED_EMPTY = [
    # (name, function, input, output_size): torch accepts these and returns an empty output
    ("avg2d_empty_channels", "adaptive_avg_pool2d", torch.randn(2, 0, 4, 8), 2),
    ("avg1d_empty_channels", "adaptive_avg_pool1d", torch.randn(2, 0, 8), 3),
    ("max2d_unbatched_empty_channels", "adaptive_max_pool2d", torch.randn(0, 4, 8), 2),
    ("max3d_empty_batch_output_0", "adaptive_max_pool3d", torch.randn(0, 2, 3, 3, 3), (0, 2, 2)),
]


@pytest.mark.parametrize(
    "fn, x, size", [c[1:] for c in ACCEPTED_EMPTY], ids=[c[0] for c in ACCEPTED_EMPTY]
)
def test_empty_inputs_torch_accepts(fn, x, size):
    before = sum(runtime.launch_counts.values())
    out = getattr(A, fn)(x, size)
    ref = getattr(F, fn)(x, size)
    assert out.shape == ref.shape and out.stride() == ref.stride() and out.dtype == ref.dtype
    assert sum(runtime.launch_counts.values()) == before


def test_return_types_follow_torch():
    out, idx = A.adaptive_max_pool2d(X2, 3, True)
    assert type(A.adaptive_max_pool2d(X2, 3, True)) is type(F.adaptive_max_pool2d(X2, 3, True))
    assert isinstance(A.adaptive_max_pool1d(X1, 3), torch.Tensor)
    assert idx.dtype == torch.int64 and out.shape == idx.shape == (2, 3, 3, 3)
    with pytest.raises(TypeError):
        A.adaptive_avg_pool2d(X2, 2, 3)  # torch's avg functions take no third argument


# --- opcheck --------------------------------------------------------------------------------------


def _cl(x):
    return x.contiguous(memory_format=torch.channels_last)


OPCHECK_MAX = [
    # (name, input, output size, with_indices)
    ("overlap_indices", torch.randn(2, 3, 5, 7), [3, 4], True),
    ("upsample_no_indices", torch.randn(1, 2, 3, 2), [5, 3], False),
    ("channels_last", _cl(torch.randn(2, 8, 5, 6)), [2, 4], True),
    ("global_1x1x1", torch.randn(2, 3, 2, 3, 4), [1, 1, 1], True),
    ("1d", torch.randn(2, 3, 9), [4], True),
]


@pytest.mark.parametrize(
    "x, size, with_indices", [c[1:] for c in OPCHECK_MAX], ids=[c[0] for c in OPCHECK_MAX]
)
def test_opcheck_adaptive_max_pool(x, size, with_indices):
    x = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.library.opcheck(adaptive_ops.adaptive_max_pool, (x, size, with_indices))
        out, idx = adaptive_ops.adaptive_max_pool(x.detach(), size, True)
        grad = torch.randn_like(out)
        torch.library.opcheck(
            adaptive_ops.adaptive_max_pool_backward, (grad, idx, list(x.shape), False)
        )


OPCHECK_AVG = [
    # (name, input, output size)
    ("overlap", torch.randn(2, 3, 5, 7), [3, 4]),
    ("channels_last_upsample", _cl(torch.randn(2, 8, 3, 2)), [4, 5]),
    ("global_channels_last", _cl(torch.randn(2, 8, 3, 3)), [1, 1]),
    ("3d_none_resolved", torch.randn(1, 2, 3, 4, 5), [2, 4, 3]),
]


@pytest.mark.parametrize("x, size", [c[1:] for c in OPCHECK_AVG], ids=[c[0] for c in OPCHECK_AVG])
def test_opcheck_adaptive_avg_pool(x, size):
    x = x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.library.opcheck(adaptive_ops.adaptive_avg_pool, (x, size))
        grad = torch.randn_like(adaptive_ops.adaptive_avg_pool(x.detach(), size))
        channels_last = x.is_contiguous(memory_format=torch.channels_last)
        torch.library.opcheck(
            adaptive_ops.adaptive_avg_pool_backward, (grad, list(x.shape), channels_last)
        )


# --- torch.compile --------------------------------------------------------------------------------


class Head(torch.nn.Module):
    """A CNN head: adaptive pools to 3x3 (avg and max), and global max (output size 1)."""

    def __init__(self):
        super().__init__()
        self.avg = nn_adaptive.AdaptiveAvgPool2d((3, None))
        self.max = nn_adaptive.AdaptiveMaxPool2d(3)
        self.glob = nn_adaptive.AdaptiveMaxPool2d(1)

    def forward(self, x):
        a = self.avg(x)[..., :3]
        return a + self.max(x) + self.glob(x)


def test_compile_fullgraph_forward_backward():
    model = Head()
    x = _cl(torch.randn(2, 4, 7, 5)).requires_grad_()
    eager = model(x)
    (want,) = torch.autograd.grad(eager.sum(), x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with runtime.recording() as records:
        out = compiled(x)
        (grad,) = torch.autograd.grad(out.sum(), x)
    names = {r.kernel for r in records}
    assert any(n.startswith("adaptive_") for n in names), names
    assert any(n.startswith("global_") for n in names), names
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(grad, want)
    assert out.stride() == eager.stride()


# --- nn modules -----------------------------------------------------------------------------------

MODULES = [
    ("AdaptiveAvgPool1d", (4,), X1),
    ("AdaptiveAvgPool2d", ((None, 3),), X2),
    ("AdaptiveAvgPool3d", ((2, 3, None),), X3),
    ("AdaptiveMaxPool1d", (3, True), X1),
    ("AdaptiveMaxPool2d", ((5, 2),), X2),
    ("AdaptiveMaxPool3d", (2, True), X3),
]


@pytest.mark.parametrize("name, args, x", MODULES, ids=[m[0] for m in MODULES])
def test_nn_modules_are_torchs(name, args, x):
    ours, theirs = getattr(nn_adaptive, name)(*args), getattr(torch.nn, name)(*args)
    assert isinstance(ours, type(theirs))
    assert repr(ours) == repr(theirs)
    before = sum(n for k, n in runtime.launch_counts.items() if k.startswith("adaptive_"))
    got, want = ours(x), theirs(x)
    assert sum(n for k, n in runtime.launch_counts.items() if k.startswith("adaptive_")) > before
    if isinstance(want, tuple):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    elif name.startswith("AdaptiveMax"):
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want)


# --- devices without Triton -----------------------------------------------------------------------


def test_cpu_without_interpreter_uses_torch(monkeypatch):
    """CPU tensors without TRITON_INTERPRET: torch's own pooling, after the same checks."""
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    before = sum(runtime.launch_counts.values())
    x = _cl(torch.randn(2, 4, 7, 5))
    assert torch.equal(A.adaptive_max_pool2d(x, 3), F.adaptive_max_pool2d(x, 3))
    out, idx = A.adaptive_max_pool1d(X1, 3, return_indices=True)
    want = F.adaptive_max_pool1d(X1, 3, return_indices=True)
    assert torch.equal(out, want[0]) and torch.equal(idx, want[1])
    torch.testing.assert_close(
        A.adaptive_avg_pool3d(X3, (2, None, 1)), F.adaptive_avg_pool3d(X3, (2, None, 1))
    )
    with pytest.raises(RuntimeError):
        A.adaptive_avg_pool2d(X2, (-1, 2))
    assert sum(runtime.launch_counts.values()) == before
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):  # the ops need Triton
        adaptive_ops.adaptive_avg_pool(X2, [2, 2])
