"""Shared pieces of the hypothesis property tests (tests/test_properties_*.py).

- ``prop_settings(n)``: the one settings profile (derandomized, no database, no deadline) with
  ``n`` examples, times ``TGPOOL_HYPOTHESIS_EXAMPLES`` (a float, default 1) for longer local runs;
  ``property_test(n)``: that profile and ``@given(data, dtype, layout, seed)``, the header of
  every property test. ``TORCH_POOLS``: torch's pooling functions (conftest), refused in them.
- ``make_input(...)`` / ``relayout(...)``: a leaf tensor and the view of it an op receives
  (contiguous, channels_last, every other element of the last dim, N and C transposed, an expanded
  batch), with values of a chosen kind.
- ``check_against_torch(...)``: runs torch's reference on the float64 upcast of the same view, then
  tgpool inside ``kernels_only`` (torch's functions raise, a tgpool kernel must launch in the
  forward and again in the backward), and compares values, indices, memory format and the input
  gradient for a random upstream gradient. An input torch refuses must make tgpool raise the same
  exception type before any kernel launches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os

import torch
from cases import TOL as CASES_TOL
from conftest import _TORCH_POOLS, kernels_only, launches
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_window_pool import launch_blocks

#: multiplies every test's example count (e.g. TGPOOL_HYPOTHESIS_EXAMPLES=10 for a long local run)
SCALE = float(os.environ.get("TGPOOL_HYPOTHESIS_EXAMPLES", "1"))


def prop_settings(examples: int):
    """The settings of every property test: reproducible (derandomize, no example database) and
    without deadline (the Triton interpreter's first call of a variant renders and loads it)."""
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )


DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: memory layouts of an op's input (see view_of)
LAYOUTS = ("contiguous", "channels_last", "sliced", "transposed", "expanded")

dtypes = st.sampled_from(DTYPES)
layouts = st.sampled_from(LAYOUTS)
seeds = st.integers(0, 2**31 - 1)

#: torch.nn.functional's pooling functions: kernels_only makes them raise
TORCH_POOLS = list(_TORCH_POOLS)


def property_test(examples: int):
    """A property test of ``examples`` examples (prop_settings) drawing ``data`` (st.data()),
    ``dtype``, ``layout`` and ``seed``."""

    def decorate(test):
        given_test = given(data=st.data(), dtype=dtypes, layout=layouts, seed=seeds)(test)
        return prop_settings(examples)(given_test)

    return decorate


#: (atol, rtol) of sums against a float64 reference: tests/cases.py's, except bfloat16: the Triton
#: interpreter truncates fp32 -> bf16 (no rounding), an error up to 2^-7 (test_fractional_max_pool)
TOL = {**CASES_TOL, torch.bfloat16: (1e-5, 1.6e-2)}


# --- inputs ---------------------------------------------------------------------------------------


def values(shape, kind: str, plane_dims: int, seed: int) -> torch.Tensor:
    """float64 values of ``shape``. Kinds: randn; ties (integers -2..2, many equal maxima);
    nan (randn with about one NaN in six); positive (|randn| + 0.1); distinct (within each plane
    of the last ``plane_dims`` dims a permutation of small integers, so no window has tied
    maxima)."""
    g = torch.Generator().manual_seed(seed)
    if kind == "ties":
        return torch.randint(-2, 3, shape, generator=g).double()
    if kind == "distinct":
        plane = math.prod(shape[len(shape) - plane_dims :])
        # |value| <= plane / 2: exact in bfloat16 (integers up to 256) for planes up to 512
        assert plane <= 512, f"distinct values of a {plane}-element plane are not exact in bf16"
        planes = math.prod(shape[: len(shape) - plane_dims])
        keys = torch.rand(planes, plane, generator=g)
        ranks = keys.argsort(dim=1).double() - plane // 2
        return ranks.reshape(shape)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "positive":
        return x.abs() + 0.1
    if kind == "nan":
        x[torch.rand(shape, generator=g) < 1 / 6] = math.nan
    return x


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t`` stored channels-last (C innermost); (N, C, L) as (N, L, C) transposed."""
    if t.dim() == 3:
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    fmt = torch.channels_last if t.dim() == 4 else torch.channels_last_3d
    return t.contiguous(memory_format=fmt)


def leaf_shape(shape, layout: str) -> tuple[int, ...]:
    """The shape of the leaf tensor whose ``layout`` view has ``shape``."""
    n, c, *rest = shape
    if layout == "transposed":
        return (c, n, *rest)
    if layout == "sliced":
        return (n, c, *rest[:-1], 2 * rest[-1]) if rest else (n, 2 * c)
    if layout == "expanded":
        return (1, c, *rest)
    return tuple(shape)


def view_of(layout: str, shape):
    """The function that turns a leaf of ``leaf_shape(shape, layout)`` into the op's input of
    ``shape``: differentiable, so the gradient reaches the leaf."""
    if layout == "channels_last":
        return channels_last
    if layout == "sliced":
        return lambda t: t[..., ::2]  # every other element of the last dim: stride 2
    if layout == "transposed":
        return lambda t: t.transpose(0, 1)  # N and C swapped in memory
    if layout == "expanded":
        return lambda t: t.expand(shape[0], *t.shape[1:])  # batch stride 0
    return lambda t: t


@dataclasses.dataclass
class Input:
    leaf: torch.Tensor  # requires grad, in the tested dtype
    view: object  # leaf -> the op's input
    dtype: torch.dtype

    @property
    def x(self) -> torch.Tensor:
        return self.view(self.leaf)

    def reference_leaf(self) -> torch.Tensor:
        return self.leaf.detach().double().requires_grad_()


def make_input(shape, layout: str, dtype, kind: str, seed: int, plane_dims: int) -> Input:
    """A random input of ``shape`` in ``layout`` (values drawn for the leaf, so an expanded batch
    holds equal rows)."""
    if layout == "channels_last" and len(shape) not in (3, 4, 5):
        layout = "contiguous"
    base = values(leaf_shape(shape, layout), kind, plane_dims, seed)
    leaf = base.to(dtype).requires_grad_()
    return Input(leaf, view_of(layout, shape), dtype)


def relayout(t: torch.Tensor, layout: str, shape) -> Input:
    """``t`` (the logical values, shape ``shape``, or (1, ...) for "expanded") as the ``layout``
    view of a new leaf."""
    if layout == "sliced":
        leaf = t.new_zeros(leaf_shape(shape, layout))
        leaf[..., ::2] = t
    elif layout == "transposed":
        leaf = t.transpose(0, 1).contiguous()
    else:
        leaf = t.clone()
    return Input(leaf.requires_grad_(), view_of(layout, shape), t.dtype)


def draw_blocks(data):
    """A guard for check_against_torch: forced (outer, inner) launch blocks, so a tiny input spans
    several programs (tile edges, halos from the neighbouring program), or the heuristic's."""
    choices = [None] * 5 + [(2, 2), (4, 2)]  # 2 in 7: many programs are slow to interpret
    blocks = data.draw(st.sampled_from(choices), label="blocks")
    return lambda: launch_blocks(blocks, require_tiles=False)


# --- comparisons ----------------------------------------------------------------------------------


def same_layout(actual: torch.Tensor, expected: torch.Tensor) -> bool:
    """Whether two tensors of one shape have the same strides where the size exceeds 1 (the
    stride of a size-1 dim is arbitrary)."""
    return all(
        a == b
        for n, a, b in zip(expected.shape, actual.stride(), expected.stride(), strict=True)
        if n > 1
    )


def assert_close(actual, expected, dtype, *, exact=False, rtol_scale=1.0, atol_scale=1.0, msg=""):
    """``actual`` (dtype) against a float64 reference: bit-exact for max values, else the dtype's
    (atol, rtol) from tests/cases.py, atol relative to the reference's largest magnitude."""
    assert actual.shape == expected.shape, f"{msg}: shape {actual.shape} != {expected.shape}"

    def message(generated: str) -> str:
        return f"{msg}: {generated}"

    if exact:
        torch.testing.assert_close(
            actual.double(), expected.double(), rtol=0, atol=0, equal_nan=True, msg=message
        )
        return
    atol, rtol = TOL[dtype]
    finite = expected[expected.isfinite()]
    scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
    torch.testing.assert_close(
        actual.double(),
        expected.double(),
        atol=atol * atol_scale * scale,
        rtol=rtol * rtol_scale,
        equal_nan=True,
        msg=message,
    )


def _split(result):
    """(values, indices or None) of an op's result."""
    if isinstance(result, tuple):
        return result[0], result[1]
    return result, None


def upstream(shape, dtype, seed: int) -> torch.Tensor:
    """A random upstream gradient, rounded to ``dtype`` (the reference gets the same values)."""
    g = torch.Generator().manual_seed(seed ^ 0x5EED)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def expect_same_error(tg_call, inp: Input, error: BaseException) -> None:
    """tgpool refuses what torch refused: the same exception type, before any kernel launches."""
    before = launches()
    try:
        tg_call(inp.x.detach())
    except Exception as e:  # noqa: BLE001 - the type is compared below
        assert type(e) is type(error) or isinstance(e, type(error)), (
            f"torch raised {type(error).__name__} ({error}); tgpool raised {type(e).__name__} ({e})"
        )
    else:
        raise AssertionError(f"torch raised {type(error).__name__} ({error}); tgpool did not")
    assert launches() == before, "a kernel launched before the error"


TORCH_ERRORS = (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError)


def check_against_torch(
    tg_call,
    ref_call,
    inp: Input,
    *,
    blocked,
    seed: int,
    prefix: str = "",
    exact: bool = False,
    rtol_scale: float = 1.0,
    value_atol_scale: float = 1.0,
    grad_scale: tuple[float, float] = (1.0, 1.0),
    check_layout: bool = True,
    guard=None,
) -> bool:
    """tgpool's ``tg_call(x)`` against torch's ``ref_call(x64)``, forward and backward.

    ``x64`` is the same view of the float64 upcast of the leaf. The gradients compared are those
    w.r.t. ``x`` and ``x64``: what the backward of tgpool's op and of torch's return.
    ``value_atol_scale`` multiplies the value's atol, ``grad_scale`` the gradient's (atol, rtol);
    ``guard()``, a context manager, also wraps tgpool's forward and backward. Returns False when
    torch refused the input (after checking that tgpool refuses it the same way)."""
    x64 = inp.view(inp.reference_leaf())
    x64.retain_grad()
    try:
        ref = ref_call(x64)
    except TORCH_ERRORS as e:
        event(f"torch refused the input: {type(e).__name__}")
        expect_same_error(tg_call, inp, e)
        return False
    event("compared with torch")
    ref_val, ref_idx = _split(ref)

    x = inp.x
    x.retain_grad()  # the gradient tgpool's backward returns (before a view's own backward)
    # an empty output (torch allows some, e.g. a small output_ratio) launches nothing
    empty = not ref_val.numel()
    blocking = contextlib.nullcontext() if empty else kernels_only(blocked, prefix)
    if empty:
        event("empty output")
    with blocking, guard() if guard and not empty else contextlib.nullcontext():
        before = launches()
        out_val, out_idx = _split(tg_call(x))
        forward = launches() - before
        g = upstream(out_val.shape, out_val.dtype, seed)
        out_val.backward(g)
        backward = launches() - before - forward
    assert empty or forward > 0, "no tgpool kernel launched in the forward"
    assert empty or backward > 0, "no tgpool kernel launched in the backward"

    assert out_val.dtype == inp.dtype, f"output dtype {out_val.dtype}"
    assert_close(
        out_val,
        ref_val.detach(),
        inp.dtype,
        exact=exact,
        rtol_scale=rtol_scale,
        atol_scale=value_atol_scale,
        msg="value",
    )
    if check_layout:
        assert same_layout(out_val, ref_val), (
            f"output strides {out_val.stride()}, torch's {ref_val.stride()}"
        )
    if ref_idx is not None:
        assert out_idx is not None and out_idx.dtype == ref_idx.dtype
        assert torch.equal(out_idx, ref_idx), f"indices differ:\n{out_idx}\n{ref_idx}"

    ref_val.backward(g.double())
    assert x.grad is not None, "no gradient reached the input"
    assert_close(
        x.grad,
        x64.grad,
        inp.dtype,
        atol_scale=grad_scale[0],
        rtol_scale=rtol_scale * grad_scale[1],
        msg="input gradient",
    )
    if check_layout:
        assert same_layout(x.grad, x64.grad), (
            f"gradient strides {x.grad.stride()}, torch's {x64.grad.stride()}"
        )
    return True
