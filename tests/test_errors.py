"""Bad calls: tgpool raises the exception type torch raises, before any kernel launches.

Each case builds the arguments of one call for a given op; the test checks that torch rejects the
call with that type (where torch rejects it at all) and that tgpool raises the same type with
runtime.launch_counts unchanged. tgpool refuses every non-floating dtype with NotImplementedError,
also integer inputs that torch's CPU kernels accept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

import tgpool
from tgpool import runtime

OPS = [f"{r}_pool{n}d" for r in ("max", "avg") for n in (1, 2, 3)]


def _x(ndim: int, *, lead=(1, 2), size=6, dtype=torch.float32) -> torch.Tensor:
    return torch.ones(*lead, *(size,) * ndim).to(dtype)


@dataclasses.dataclass(frozen=True)
class ErrorCase:
    name: str
    error: type[Exception]
    #: ndim -> the positional arguments of the pooling call (input first)
    args: Callable[[int], tuple]
    kwargs: dict = dataclasses.field(default_factory=dict)
    ops: tuple[str, ...] = tuple(OPS)
    #: torch's CPU kernels accept the call (integer dtypes); only tgpool must raise
    torch_may_accept: bool = False


E = ErrorCase
MAX = tuple(op for op in OPS if op.startswith("max"))
AVG2D_3D = ("avg_pool2d", "avg_pool3d")  # avg_pool1d has no divisor_override
NOT_AVG2D = tuple(op for op in OPS if op != "avg_pool2d")
RANK3 = ("max_pool3d", "avg_pool3d")
x = _x
INTS = dict(error=NotImplementedError, torch_may_accept=True)

# One case per line.
# fmt: off
ERROR_CASES = [
    # window arguments out of range
    E("kernel_zero", RuntimeError, lambda n: (x(n), 0)),
    E("kernel_zero_stride_1", RuntimeError, lambda n: (x(n), 0, 1)),
    E("kernel_negative", RuntimeError, lambda n: (x(n), -1)),
    E("kernel_one_dim_zero", RuntimeError, lambda n: (x(n), (2,) * (n - 1) + (0,), 1)),
    E("stride_zero", RuntimeError, lambda n: (x(n), 2, 0)),
    E("stride_negative", RuntimeError, lambda n: (x(n), 2, -1)),
    E("padding_negative", RuntimeError, lambda n: (x(n), 2, 1, -1)),
    # padding may be at most half the kernel size: 3 // 2 = 1
    E("padding_over_half", RuntimeError, lambda n: (x(n), 3, 1, 2)),
    E("padding_over_half_one_dim", RuntimeError, lambda n: (x(n), 2, 1, (0,) * (n - 1) + (2,))),
    # ... of the kernel size, not of the dilated window ((3 - 1) * 2 + 1 = 5)
    E("padding_over_half_dilated", RuntimeError, lambda n: (x(n), 3, 1, 2, 2), ops=MAX),
    E("dilation_zero", RuntimeError, lambda n: (x(n), 2, 1, 0, 0), ops=MAX),
    E("dilation_negative", RuntimeError, lambda n: (x(n), 2, 1, 0, -1), ops=MAX),
    E(
        "divisor_override_zero",
        RuntimeError,
        lambda n: (x(n), 2),
        {"divisor_override": 0},
        ops=AVG2D_3D,
    ),
    # input shape
    E("rank_too_low", RuntimeError, lambda n: (torch.ones((6,) * n), 2), ops=NOT_AVG2D),
    # ATen's avg_pool2d reads input.size(-3) before it checks the rank: IndexError
    E("rank_too_low_avg2d", IndexError, lambda n: (torch.ones((6,) * n), 2), ops=("avg_pool2d",)),
    E("rank_too_high", RuntimeError, lambda n: (x(n, lead=(1, 1, 2)), 2)),
    E("zero_channels", RuntimeError, lambda n: (x(n, lead=(2, 0)), 2)),
    E("zero_channels_unbatched", RuntimeError, lambda n: (x(n, lead=(0,)), 2)),
    E("zero_spatial", RuntimeError, lambda n: (torch.ones(1, 2, *(6,) * (n - 1), 0), 1)),
    E(
        "zero_spatial_empty_batch",
        RuntimeError,
        lambda n: (torch.ones(0, 2, 0, *(6,) * (n - 1)), 1),
    ),
    E("output_below_one", RuntimeError, lambda n: (x(n, size=2), 3)),
    E("output_below_one_dilated", RuntimeError, lambda n: (x(n, size=4), 2, 1, 0, 4), ops=MAX),
    # ATen's avg_pool3d wants every spatial size >= the kernel's, padding or not
    E("avg3d_input_smaller_than_kernel", RuntimeError, lambda n: (x(n, size=2), 3, 1, 1),
      ops=("avg_pool3d",)),
    E("avg3d_input_smaller_than_kernel_empty_batch", RuntimeError,
      lambda n: (x(n, lead=(0, 2), size=2), 3, 1, 1), ops=("avg_pool3d",)),
    # dtypes: tgpool refuses every non-floating dtype (torch's CPU kernels take some integers)
    E("int64", args=lambda n: (x(n, dtype=torch.int64), 2), **INTS),
    E("int32", args=lambda n: (x(n, dtype=torch.int32), 2), **INTS),
    E("uint8", args=lambda n: (x(n, dtype=torch.uint8), 2), **INTS),
    E("bool", NotImplementedError, lambda n: (x(n, dtype=torch.bool), 2)),
    E("complex64", NotImplementedError, lambda n: (x(n, dtype=torch.complex64), 2)),
    # tuples of the wrong length (one element is allowed: it is repeated)
    E("kernel_tuple_too_long", RuntimeError, lambda n: (x(n), (2,) * (n + 1))),
    E("kernel_tuple_empty", RuntimeError, lambda n: (x(n), ())),
    E("kernel_tuple_too_short", RuntimeError, lambda n: (x(n), (2,) * (n - 1)), ops=RANK3),
    E("stride_tuple_too_long", RuntimeError, lambda n: (x(n), 2, (1,) * (n + 1))),
    E("padding_tuple_too_long", RuntimeError, lambda n: (x(n), 2, 1, (0,) * (n + 1))),
    E("dilation_tuple_too_long", RuntimeError, lambda n: (x(n), 2, 1, 0, (1,) * (n + 1)), ops=MAX),
    # non-int arguments
    E("kernel_float", TypeError, lambda n: (x(n), 2.0)),
    E("kernel_float_in_tuple", TypeError, lambda n: (x(n), (2,) * (n - 1) + (2.0,))),
    E("kernel_str", TypeError, lambda n: (x(n), "2")),
    E("kernel_none", TypeError, lambda n: (x(n), None)),
    E("kernel_bool", TypeError, lambda n: (x(n), True)),
    E("stride_float", TypeError, lambda n: (x(n), 2, 1.0)),
    E("padding_float", TypeError, lambda n: (x(n), 2, 1, 0.5)),
    E("dilation_float", TypeError, lambda n: (x(n), 2, 1, 0, 1.0), ops=MAX),
    E(
        "divisor_override_float",
        TypeError,
        lambda n: (x(n), 2),
        {"divisor_override": 2.0},
        ops=AVG2D_3D,
    ),
    E("input_not_tensor", TypeError, lambda n: ([[1.0] * 6] * 2, 2)),
]
# fmt: on


def _params() -> list:
    return [pytest.param(c, op, id=f"{op}-{c.name}") for c in ERROR_CASES for op in c.ops]


def _launches() -> dict:
    return dict(runtime.launch_counts)


@pytest.mark.parametrize("case, op", _params())
def test_bad_call_raises_torch_type(case, op):
    args, kwargs = case.args(int(op[-2])), case.kwargs
    if case.torch_may_accept:
        try:
            getattr(F, op)(*args, **kwargs)
        except Exception as e:  # where torch refuses the dtype too, it is with the same type
            assert type(e) is case.error, e
    else:
        with pytest.raises(case.error):
            getattr(F, op)(*args, **kwargs)

    before = _launches()
    with pytest.raises(case.error):
        getattr(tgpool, op)(*args, **kwargs)
    assert _launches() == before, "a kernel launched for a call that must fail"


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "valid, invalid",
    [
        pytest.param(2, 2.0, id="float"),
        pytest.param(1, True, id="bool"),
        pytest.param((2, 2, 2), (2.0, 2, 2), id="float_in_tuple"),
    ],
)
def test_non_int_kernel_rejected_after_equal_int_kernel(op, valid, invalid):
    """2.0 == True + 1 == 2 in Python: a valid call must not make an equal non-int one pass."""
    ndim = int(op[-2])
    valid = valid if isinstance(valid, int) else valid[:ndim]
    invalid = invalid if not isinstance(invalid, tuple) else invalid[:ndim]
    x = _x(ndim, size=4)
    getattr(tgpool, op)(x, valid)  # caches the spec for the valid window
    with pytest.raises(TypeError):
        getattr(F, op)(x, invalid)
    before = _launches()
    with pytest.raises(TypeError):
        getattr(tgpool, op)(x, invalid)
    assert _launches() == before


@pytest.mark.parametrize("op", [op for op in OPS if op.startswith("max")])
def test_max_return_indices_checks_before_launch(op):
    """The with-indices path checks its arguments the same way."""
    x = _x(int(op[-2]))
    with pytest.raises(RuntimeError):
        getattr(F, op)(x, 3, 1, 2, return_indices=True)
    before = _launches()
    with pytest.raises(RuntimeError):
        getattr(tgpool, op)(x, 3, 1, 2, return_indices=True)
    assert _launches() == before
