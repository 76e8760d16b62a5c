"""The global-pool custom ops as torch sees them (opcheck, torch.compile), and every bad input of
the global-pooling functions: the exception type torch raises for the same mistake, before any
launch.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import tgpool
from tgpool import runtime
from tgpool.ops import global_pool as global_ops

# --- bad input ------------------------------------------------------------------------------------

X = torch.randn(2, 3, 4, 5)
MASK = torch.ones(2, 4, 5, dtype=torch.bool)
VALUES = torch.randn(10, 3)
OFFSETS = torch.tensor([0, 4, 10])

BAD_CALLS = [
    # (name, call, exception type, words the message must contain)
    ("input_not_tensor", lambda: tgpool.global_pool([1.0, 2.0]), TypeError, "Tensor"),
    ("rank_2", lambda: tgpool.global_pool(torch.randn(2, 3)), RuntimeError, "3D, 4D or 5D"),
    ("rank_6", lambda: tgpool.global_pool(torch.randn(1, 1, 1, 1, 1, 1)), RuntimeError, "5D"),
    ("integer_input", lambda: tgpool.global_pool(X.long()), NotImplementedError, "int64"),
    ("complex_input", lambda: tgpool.global_pool(X.cfloat()), NotImplementedError, "complex64"),
    ("unknown_reduction", lambda: tgpool.global_pool(X, "median"), ValueError, "median"),
    ("unknown_data_format", lambda: tgpool.global_pool(X, data_format="NHWC"), ValueError, "NHWC"),
    (
        "indices_of_avg",
        lambda: tgpool.global_pool(X, "avg", return_indices=True),
        ValueError,
        "max",
    ),
    ("mask_not_tensor", lambda: tgpool.global_pool(X, mask=[[True]]), TypeError, "mask"),
    ("mask_float", lambda: tgpool.global_pool(X, mask=MASK.float()), RuntimeError, "bool"),
    ("mask_shape", lambda: tgpool.global_pool(X, mask=MASK[:, :3]), RuntimeError, "mask"),
    (
        "mask_channels_first_shape_on_channels_last",
        lambda: tgpool.global_pool(X, data_format="channels_last", mask=MASK),
        RuntimeError,
        "mask",
    ),
    (
        "lp_p_zero",
        lambda: tgpool.global_pool(X, "lp", p=0.0),
        ValueError,
        "p must be a positive finite",
    ),
    ("gem_p_negative", lambda: tgpool.gem(X, -1.0), ValueError, "p must be a positive finite"),
    ("gem_p_inf", lambda: tgpool.gem(X, float("inf")), ValueError, "finite"),
    ("gem_p_tensor_negative", lambda: tgpool.gem(X, torch.tensor([-2.0])), ValueError, "p must"),
    ("gem_p_tensor_two_values", lambda: tgpool.gem(X, torch.ones(2)), RuntimeError, "one-element"),
    ("gem_p_tensor_integer", lambda: tgpool.gem(X, torch.tensor([3])), RuntimeError, "floating"),
    ("gem_p_string", lambda: tgpool.gem(X, "3"), TypeError, "number"),
    ("lp_p_tensor", lambda: tgpool.global_pool(X, "lp", p=torch.ones(1)), TypeError, "lp"),
    ("gem_eps_zero", lambda: tgpool.gem(X, 3.0, 0.0), ValueError, "eps"),
    ("ragged_values_3d", lambda: tgpool.ragged_pool(X, OFFSETS), RuntimeError, "(total_tokens"),
    (
        "ragged_offsets_float",
        lambda: tgpool.ragged_pool(VALUES, OFFSETS.float()),
        RuntimeError,
        "int32 or int64",
    ),
    (
        "ragged_offsets_2d",
        lambda: tgpool.ragged_pool(VALUES, OFFSETS[None]),
        RuntimeError,
        "1-D",
    ),
    (
        "ragged_offsets_empty",
        lambda: tgpool.ragged_pool(VALUES, OFFSETS[:0]),
        RuntimeError,
        "at least one",
    ),
    (
        "ragged_offsets_decreasing",
        lambda: tgpool.ragged_pool(VALUES, torch.tensor([0, 6, 4, 10])),
        RuntimeError,
        "never decrease",
    ),
    (
        "ragged_offsets_short_of_total",
        lambda: tgpool.ragged_pool(VALUES, torch.tensor([0, 4, 9])),
        RuntimeError,
        "total_tokens (10)",
    ),
    (
        "ragged_offsets_not_from_zero",
        lambda: tgpool.ragged_pool(VALUES, torch.tensor([1, 4, 10])),
        RuntimeError,
        "start at 0",
    ),
    (
        "ragged_unknown_reduction",
        lambda: tgpool.ragged_pool(VALUES, OFFSETS, "mode"),
        ValueError,
        "mode",
    ),
    (
        "ragged_integer_values",
        lambda: tgpool.ragged_pool(VALUES.int(), OFFSETS),
        NotImplementedError,
        "int32",
    ),
]


@pytest.mark.parametrize(
    "call, error, words", [c[1:] for c in BAD_CALLS], ids=[c[0] for c in BAD_CALLS]
)
def test_bad_input_raises_before_any_launch(call, error, words):
    before = sum(runtime.launch_counts.values())
    with pytest.raises(error) as info:
        call()
    assert words in str(info.value)
    assert sum(runtime.launch_counts.values()) == before, "a kernel launched before the error"


def test_requires_grad_on_integer_input_is_refused_by_torch_first():
    with pytest.raises(RuntimeError, match="floating point"):
        torch.tensor([[[1, 2]]]).requires_grad_()


# --- opcheck --------------------------------------------------------------------------------------


def _op_samples():
    """(args, kwargs) of global_pool covering every layout, reduction and optional tensor."""
    x = torch.randn(2, 3, 4, 5)
    xl = torch.randn(2, 4, 5, 3)
    pos = torch.rand(2, 3, 4, 5) + 0.1
    mask = torch.rand(2, 4, 5) > 0.3
    values = torch.randn(9, 4)
    offsets = torch.tensor([0, 3, 3, 9])
    p = torch.tensor([3.0], requires_grad=True)
    p2 = torch.tensor([2.0])
    samples = [
        (x, None, None, None, "max", "channels_first", 0.0, 1e-6, True, False),
        (x, mask, None, None, "avg", "channels_first", 0.0, 1e-6, False, False),
        (xl, mask, None, None, "avg+max", "channels_last", 0.0, 1e-6, True, False),
        (x, None, None, None, "sum", "channels_first", 0.0, 1e-6, False, False),
        (pos, None, None, p2, "lp", "channels_first", 2.0, 1e-6, False, False),
        (pos, mask, None, p, "gem", "channels_first", 0.0, 1e-6, False, True),
        (values, None, offsets, None, "max", "ragged", 0.0, 1e-6, True, False),
        (values.abs(), None, offsets, p, "gem", "ragged", 0.0, 1e-6, False, True),
    ]
    return samples


@pytest.mark.parametrize("args", _op_samples(), ids=lambda a: f"{a[4]}-{a[5]}")
def test_opcheck_global_pool(args):
    x = args[0].clone().requires_grad_()
    args = (x, *args[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.library.opcheck(global_ops.global_pool, args)


def test_opcheck_global_pool_backward():
    x = torch.rand(2, 3, 4, 5) + 0.1
    mask = torch.rand(2, 4, 5) > 0.3
    p = torch.tensor([3.0])
    out, _, idx, _ = global_ops.global_pool(
        x, mask, None, p, "gem", "channels_first", 0, 1e-6, False, False
    )
    grad = torch.randn_like(out)
    torch.library.opcheck(
        global_ops.global_pool_backward,
        (grad, None, x, mask, None, idx, out, p, "gem", "channels_first", 0.0, 1e-6),
    )
    out, maxes, idx, _ = global_ops.global_pool(
        x, None, None, None, "avg+max", "channels_first", 0, 1e-6, True, False
    )
    torch.library.opcheck(
        global_ops.global_pool_backward,
        (
            grad,
            torch.randn_like(maxes),
            x,
            None,
            None,
            idx,
            out,
            None,
            "avg+max",
            "channels_first",
            0.0,
            1e-6,
        ),
    )


# --- torch.compile --------------------------------------------------------------------------------


class TextHead(torch.nn.Module):
    """Masked max and GeM (learnable p) heads over a channels-last sequence."""

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor([3.0]))

    def forward(self, x, mask):
        a = tgpool.global_pool(x, "max", data_format="channels_last", mask=mask)
        b = tgpool.gem(x.abs() + 0.1, self.p, data_format="channels_last", mask=mask)
        c = tgpool.global_pool(x, "catavgmax", data_format="channels_last", keepdim=True)
        return a + b + c.flatten(1)[:, : a.shape[1]]


def test_compile_fullgraph_forward_backward():
    model = TextHead()
    x = torch.randn(3, 7, 4, requires_grad=True)
    mask = torch.rand(3, 7) > 0.3
    eager = model(x, mask)
    eager.sum().backward()
    grads = (x.grad.clone(), model.p.grad.clone())
    x.grad, model.p.grad = None, None
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    before = sum(n for k, n in runtime.launch_counts.items() if k.startswith("global_"))
    out = compiled(x, mask)
    out.sum().backward()
    assert sum(n for k, n in runtime.launch_counts.items() if k.startswith("global_")) > before
    torch.testing.assert_close(out, eager)
    torch.testing.assert_close(x.grad, grads[0])
    torch.testing.assert_close(model.p.grad, grads[1])


def test_compile_fullgraph_ragged_inductor():
    values = torch.randn(12, 4, requires_grad=True)
    offsets = torch.tensor([0, 5, 5, 12])

    def fn(v, o):
        return tgpool.ragged_pool(v, o, "avg") * 2 + tgpool.ragged_pool(v, o, "max")

    want = fn(values, offsets)
    want.sum().backward()
    want_grad = values.grad.clone()
    values.grad = None
    got = torch.compile(fn, fullgraph=True)(values, offsets)
    got.sum().backward()
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(values.grad, want_grad)
