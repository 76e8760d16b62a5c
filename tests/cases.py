"""Named pooling cases shared by the correctness tests, and the inputs they describe.

Each case is one call of a torch pooling function: the input (shape, memory layout, values) and the
window. ``name`` is the pytest id, so a failure names the edge case it broke. Shapes stay tiny:
every kernel runs in the Triton interpreter.

The lists are per spatial rank (CASES_1D, CASES_2D, CASES_3D); a case runs for each reduction in
``reductions`` (cases with dilation are max-only, since avg pooling has no dilation).
"""

from __future__ import annotations

import dataclasses
import math
import random

import pytest
import torch

# --- dtypes and tolerances ------------------------------------------------------------------------

DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
DTYPE_PARAMS = [pytest.param(d, id=str(d).removeprefix("torch.")) for d in DTYPES]

#: (dtype, atol, rtol) for results that are sums (avg values, avg gradients, max gradients where
#: windows overlap), compared with torch in float64 on the same (upcast) input. tgpool accumulates
#: in fp32 (fp64 for fp64) and rounds once, so rtol is about twice the unit roundoff of the dtype;
#: atol covers fp32 cancellation in windows of up to ~100 taps.
TOLERANCES = [
    (torch.float16, 1e-5, 1e-3),  # u = 2^-11
    (torch.bfloat16, 1e-5, 8e-3),  # u = 2^-8
    (torch.float32, 1e-5, 1.3e-6),
    (torch.float64, 1e-12, 1e-12),
]
TOL = {dtype: (atol, rtol) for dtype, atol, rtol in TOLERANCES}


# --- cases ----------------------------------------------------------------------------------------

#: memory layouts of the input (built by make_input)
LAYOUTS = ("contiguous", "channels_last", "sliced", "channel_slice", "transposed", "expanded")
#: value patterns of the input (built by _values)
VALUES = ("randn", "nan_several", "inf", "neg_inf_windows", "ties")


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    ndim: int  # spatial dims: 1, 2 or 3
    shape: tuple[int, ...]  # (N, C, *spatial) or unbatched (C, *spatial)
    kernel_size: int | tuple[int, ...]
    stride: int | tuple[int, ...] | None = None
    padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1  # max only
    ceil_mode: bool = False
    count_include_pad: bool = True  # avg only
    divisor_override: int | None = None  # avg 2d/3d only
    layout: str = "contiguous"  # see LAYOUTS
    values: str = "randn"  # see VALUES
    reductions: tuple[str, ...] = ("max", "avg")
    #: force this (outer, inner) launch block so rows / channels span several programs
    blocks: tuple[int, int] | None = None
    #: a known difference from torch in the input gradient: the gradient check must fail (strict)
    #: and the test is reported as xfail, after the forward checks passed
    xfail_backward: str = ""

    def __post_init__(self):
        assert self.layout in LAYOUTS, self.layout
        assert self.values in VALUES, self.values
        if any(v != 1 for v in self._tuple(self.dilation)):  # avg pooling has no dilation
            object.__setattr__(self, "reductions", tuple(r for r in self.reductions if r == "max"))

    def __str__(self):
        return self.name

    def _tuple(self, v, default=None) -> tuple[int, ...]:
        v = default if v is None else v
        return (v,) * self.ndim if isinstance(v, int) else tuple(v) * (self.ndim // len(v))

    @property
    def windows_overlap(self) -> bool:
        """Whether some input element lies in two windows (max gradients then add up)."""
        k = self._tuple(self.kernel_size)
        s = self._tuple(self.stride, self.kernel_size)
        d = self._tuple(self.dilation)
        return any(ss < (kk - 1) * dd + 1 for kk, ss, dd in zip(k, s, d, strict=True))

    def kwargs(self, reduction: str) -> dict:
        """Keyword arguments of the torch.nn.functional call (without input and return_indices)."""
        kw = dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
        )
        if reduction == "max":
            kw["dilation"] = self.dilation
        else:
            kw["count_include_pad"] = self.count_include_pad
            if self.ndim > 1:
                kw["divisor_override"] = self.divisor_override
        return kw


C = Case  # short name for the tables below
AVG = ("avg",)  # avg-only cases

#: torch's CPU max-pool backward adds the gradient of an output whose window holds no input
#: element (all taps in the padding, possible with dilation: the output is -inf) into the element
#: at the index it reports, the window's first tap shifted into the input, which the window does
#: not cover (or past the end of the plane: an out-of-bounds write). tgpool's backward only gathers
#: from windows that cover an element, like torch's own CUDA 2-D NCHW backward
#: (max_pool_backward_nchw), so such outputs pass no gradient. Forward values and indices match.
EMPTY_WINDOW_GRADIENT = (
    "torch CPU sends the gradient of an all-padding window to its reported index, outside the "
    "window; tgpool gathers only from covering windows (as torch's CUDA 2-D NCHW backward)"
)

# The tables keep one case per line.
# fmt: off
CASES_1D = [
    # common real cases
    C("k3_s2_p1", 1, (2, 4, 11), 3, 2, 1),
    C("k2_s2", 1, (2, 3, 10), 2),
    C("k2_s2_odd_length_drops_last", 1, (2, 3, 9), 2),
    # ceil_mode: the last window starts inside the input (kept, partial) ...
    C("ceil_last_window_partial", 1, (2, 3, 9), 2, 2, ceil_mode=True),
    # ... or would start in the right padding (dropped: output 3, not 4)
    C("ceil_last_window_in_padding_dropped", 1, (2, 3, 5), 2, 2, 1, ceil_mode=True),
    C("pad_at_limit_k5_p2", 1, (2, 3, 7), 5, 1, 2),
    C("pad_at_limit_even_k4_p2", 1, (1, 3, 8), 4, 3, 2),
    C("stride_gt_kernel", 1, (2, 3, 11), 2, 3),
    C("dilation2_pad_at_limit", 1, (2, 3, 11), 3, 1, 1, dilation=2),
    C("dilation3_ceil", 1, (2, 3, 12), 2, 2, 1, dilation=3, ceil_mode=True),
    C("one_element_output", 1, (2, 4, 6), 6),
    C("kernel1_subsample", 1, (2, 3, 7), 1, 2),
    # layouts: (N, L, C) transposed is channels-last for torch; a strided slice along L
    C("channels_last_nlc", 1, (2, 8, 9), 3, 2, 1, layout="channels_last"),
    C("sliced_length", 1, (2, 3, 10), 3, 2, 1, layout="sliced"),
    C("transposed_batch_channels", 1, (3, 2, 9), 3, 1, 1, layout="transposed"),
    C("empty_batch", 1, (0, 3, 8), 2),
    C("unbatched", 1, (3, 10), 3, 2, 1),
    C("count_exclude_pad", 1, (2, 3, 9), 3, 2, 1, count_include_pad=False, reductions=AVG),
    C(
        "ceil_count_exclude_pad",
        1,
        (2, 3, 8),
        3,
        2,
        1,
        ceil_mode=True,
        count_include_pad=False,
        reductions=AVG,
    ),
    # several tiles along a row: halo columns come from the neighbouring program's segment
    C("tiles_k3_s1_p1", 1, (1, 2, 9), 3, 1, 1, blocks=(1, 2)),
    C("tiles_k3_s2_p1", 1, (1, 2, 13), 3, 2, 1, blocks=(1, 2)),
    C("tiles_k5_s4_p2", 1, (1, 2, 17), 5, 4, 2, blocks=(1, 2)),
    C("tiles_channels_last", 1, (1, 5, 9), 3, 2, 1, layout="channels_last", blocks=(4, 2)),
    # values
    C("nan_several", 1, (2, 3, 12), 5, 1, 2, values="nan_several"),  # 2 NaNs in some windows
    C("inf_both_signs", 1, (2, 3, 12), 3, 1, 1, values="inf"),
    C("ties", 1, (2, 3, 12), 3, 1, 1, values="ties"),
]

CASES_2D = [
    # common real cases: ResNet stem pool, VGG pool
    C("3x3_s2_p1", 2, (2, 4, 9, 11), 3, 2, 1),
    C("2x2_s2", 2, (2, 3, 8, 8), 2),
    C("2x2_s2_odd_drops_last", 2, (2, 3, 7, 9), 2),
    C("3x3_s1_p1", 2, (2, 3, 7, 8), 3, 1, 1),
    C("5x5_s1_p2", 2, (1, 3, 8, 9), 5, 1, 2),
    # ceil_mode: last window starts inside the input (kept) vs in the right padding (dropped)
    C("ceil_last_window_partial", 2, (2, 3, 7, 9), 2, 2, ceil_mode=True),
    C("ceil_last_window_in_padding_dropped", 2, (2, 3, 5, 5), 2, 2, 1, ceil_mode=True),
    C("ceil_3x3_s2_p1", 2, (2, 3, 8, 10), 3, 2, 1, ceil_mode=True),
    C("ceil_no_effect", 2, (2, 3, 9, 9), 3, 2, 1, ceil_mode=True),
    # padding at its limit: pad == kernel_size // 2 (torch's limit, whatever the dilation)
    C("pad_at_limit_k5_p2", 2, (2, 3, 7, 7), 5, 1, 2),
    C("pad_at_limit_even_k2_p1", 2, (2, 3, 6, 7), 2, 2, 1),
    C("non_square", 2, (2, 3, 7, 10), (2, 3), (1, 2), (1, 0)),
    C("non_square_ceil", 2, (2, 3, 8, 11), (3, 2), (2, 3), (1, 1), ceil_mode=True),
    C("stride_gt_kernel", 2, (2, 3, 11, 10), 2, 3),
    C("stride4_wide", 2, (2, 2, 6, 12), (3, 5), (2, 4), (1, 2)),
    C("one_element_output", 2, (2, 4, 5, 5), 5),
    C("one_element_output_padded", 2, (2, 4, 3, 3), 3, 3, 1),
    C("global_rect_window", 2, (2, 3, 4, 6), (4, 6)),
    C("kernel1_identity", 2, (2, 3, 5, 6), 1),
    # more than MAX_UNROLLED_TAPS (64) taps: the window loops at run time
    C("window_81_taps_loops", 2, (1, 2, 10, 11), 9, 1, 4),
    # dilation (max only)
    C("dilation2_pad_at_limit", 2, (2, 3, 11, 11), 3, 1, 1, dilation=2),  # window 5, pad 1
    C("dilation_s2_segment", 2, (2, 3, 9, 12), 3, 2, 1, dilation=2),
    C(
        "dilation_non_square_ceil",
        2,
        (2, 3, 10, 9),
        (2, 3),
        (1, 2),
        (1, 1),
        dilation=(3, 1),
        ceil_mode=True,
    ),
    # layouts
    C("channels_last", 2, (2, 8, 9, 9), 3, 2, 1, layout="channels_last"),
    C("channels_last_ceil", 2, (2, 8, 7, 9), 2, 2, ceil_mode=True, layout="channels_last"),
    C("channels_last_c1", 2, (2, 1, 8, 8), 3, 2, 1, layout="channels_last"),
    C("channels_last_one_element_output", 2, (2, 8, 4, 4), 4, layout="channels_last"),
    C("sliced_width", 2, (2, 3, 8, 9), 3, 2, 1, layout="sliced"),
    C("sliced_channels", 2, (2, 6, 8, 8), 2, layout="channel_slice"),
    C("transposed_hw", 2, (2, 3, 9, 7), 3, 2, 1, layout="transposed"),
    C("expanded_channels", 2, (2, 4, 8, 8), 3, 2, 1, layout="expanded"),
    C("empty_batch", 2, (0, 3, 8, 8), 3, 2, 1),
    C("empty_batch_channels_last", 2, (0, 8, 8, 8), 2, layout="channels_last"),
    C("unbatched", 2, (3, 8, 9), 3, 2, 1),
    C("unbatched_ceil", 2, (2, 7, 7), 2, 2, ceil_mode=True),
    # avg divisors
    C("count_exclude_pad", 2, (2, 3, 7, 8), 3, 2, 1, count_include_pad=False, reductions=AVG),
    C(
        "ceil_count_exclude_pad",
        2,
        (2, 3, 8, 8),
        3,
        2,
        1,
        ceil_mode=True,
        count_include_pad=False,
        reductions=AVG,
    ),
    C("ceil_count_include_pad_clipped", 2, (2, 3, 6, 6), 3, 2, 1, ceil_mode=True, reductions=AVG),
    C("divisor_override", 2, (2, 3, 8, 8), 3, 2, 1, divisor_override=3, reductions=AVG),
    C("divisor_override_negative", 2, (2, 3, 6, 6), 2, divisor_override=-5, reductions=AVG),
    # several programs per row / channel block
    C("tiles_3x3_s2_p1", 2, (1, 2, 3, 11), 3, 2, 1, blocks=(2, 2)),
    C("tiles_3x3_s1_p1", 2, (1, 2, 2, 7), 3, 1, 1, blocks=(2, 2)),
    C("tiles_channels_last", 2, (1, 5, 4, 5), 3, 2, 1, layout="channels_last", blocks=(4, 2)),
    # values: NaN wins (the LAST NaN's index when several), +-inf, ties report the first index
    C("nan_several", 2, (2, 3, 8, 8), 3, 1, 1, values="nan_several"),
    C(
        "nan_several_channels_last",
        2,
        (2, 4, 8, 8),
        3,
        1,
        1,
        values="nan_several",
        layout="channels_last",
    ),
    C("inf_both_signs", 2, (2, 3, 8, 8), 3, 1, 1, values="inf"),
    C("neg_inf_windows_first_tap", 2, (2, 3, 8, 8), 3, 2, 1, values="neg_inf_windows"),
    C("neg_inf_windows_dilated", 2, (2, 3, 8, 8), 3, 2, 1, dilation=2, values="neg_inf_windows"),
    # every window's taps (columns -1 and 2) lie in the padding: output -inf, reported index
    # row * 2 + 2, i.e. the next row's first element. Rows 0 and 2 only: the index of the last row
    # would lie past the plane, where torch's CPU backward writes out of bounds (heap corruption)
    C("window_all_in_padding_dilated", 2, (1, 2, 4, 2), (1, 2), (2, 3), (0, 1), dilation=(1, 3),
      xfail_backward=EMPTY_WINDOW_GRADIENT),
    C("ties", 2, (2, 3, 8, 8), 3, 1, 1, values="ties"),
    C("ties_channels_last", 2, (2, 4, 8, 8), 3, 2, 1, values="ties", layout="channels_last"),
]

CASES_3D = [
    C("3x3x3_s2_p1", 3, (2, 3, 6, 6, 6), 3, 2, 1),
    C("2x2x2_s2", 3, (2, 3, 4, 6, 6), 2),
    C("non_cubic", 3, (2, 2, 5, 6, 6), (1, 2, 3), (1, 2, 1), (0, 1, 1)),
    C("ceil_last_window_partial", 3, (1, 3, 5, 5, 5), 2, 2, ceil_mode=True),
    C("ceil_last_window_in_padding_dropped", 3, (1, 2, 5, 5, 5), 2, 2, 1, ceil_mode=True),
    C("pad_at_limit", 3, (1, 2, 5, 5, 5), 3, 1, 1),
    C("stride_gt_kernel", 3, (1, 2, 6, 6, 6), 2, 3),
    C("one_element_output", 3, (2, 3, 4, 4, 4), 4),
    C("window_80_taps_loops", 3, (1, 2, 5, 5, 6), (4, 4, 5), 1, 2),
    C("dilation", 3, (1, 2, 6, 6, 6), 2, 1, 1, dilation=2),
    C(
        "dilation_non_cubic_ceil",
        3,
        (1, 2, 6, 5, 6),
        (2, 2, 3),
        2,
        (1, 0, 1),
        dilation=(2, 1, 1),
        ceil_mode=True,
    ),
    C("channels_last_3d", 3, (2, 8, 4, 5, 5), 3, 2, 1, layout="channels_last"),
    C("channels_last_3d_ceil", 3, (1, 4, 5, 5, 5), 2, 2, ceil_mode=True, layout="channels_last"),
    C("sliced_width", 3, (1, 3, 4, 5, 5), 2, 1, layout="sliced"),
    C("transposed_hw", 3, (1, 3, 4, 6, 5), 3, 2, 1, layout="transposed"),
    C("empty_batch", 3, (0, 3, 4, 4, 4), 2),
    C("unbatched", 3, (2, 5, 5, 5), 3, 2, 1),
    C("count_exclude_pad", 3, (1, 2, 5, 5, 5), 3, 2, 1, count_include_pad=False, reductions=AVG),
    C("divisor_override", 3, (1, 2, 4, 4, 4), 2, divisor_override=7, reductions=AVG),
    C("tiles_channels_last", 3, (1, 3, 2, 3, 3), 2, 1, layout="channels_last", blocks=(2, 2)),
    C("nan_several", 3, (1, 2, 4, 5, 5), 2, 1, values="nan_several"),
    C("inf_both_signs", 3, (1, 2, 4, 5, 5), 3, 1, 1, values="inf"),
    C("ties", 3, (1, 2, 4, 5, 5), 2, 1, values="ties"),
]
# fmt: on

CASES = CASES_1D + CASES_2D + CASES_3D


# --- seeded random windows ----------------------------------------------------------------------


def _window_ok(size, k, s, p, d, ceil_mode, avg3d) -> bool:
    """Whether torch accepts the window along one dim and every output window holds an input
    element (all-padding windows: see EMPTY_WINDOW_GRADIENT)."""
    if p > k // 2 or (avg3d and size < k):
        return False
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    taps = (range(o * s - p, o * s - p + d * k, d) for o in range(out))
    return out >= 1 and all(any(0 <= t < size for t in w) for w in taps)


def random_cases(count: int, seed: int = 0) -> list[Case]:
    """``count`` random windows, shapes, layouts and block sizes that torch accepts, the same on
    every run (seeded): a sweep over combinations that the named cases do not spell out."""
    rng = random.Random(seed)
    cases = []
    while len(cases) < count:
        ndim, reduction = rng.choice((1, 2, 3)), rng.choice(("max", "avg"))
        spatial = [rng.randint(1, 9 if ndim < 3 else 5) for _ in range(ndim)]
        k = [rng.randint(1, n + 1) for n in spatial]
        s = [rng.randint(1, 4) for _ in range(ndim)]
        p = [rng.randint(0, kk // 2) for kk in k]
        d = [rng.randint(1, 3) for _ in range(ndim)] if reduction == "max" else [1] * ndim
        ceil_mode = rng.random() < 0.5
        avg3d = reduction == "avg" and ndim == 3
        if not all(_window_ok(*w, ceil_mode, avg3d) for w in zip(spatial, k, s, p, d, strict=True)):
            continue
        extra = {}
        if reduction == "avg":
            extra["count_include_pad"] = rng.random() < 0.5
            if ndim > 1 and rng.random() < 0.3:
                extra["divisor_override"] = rng.choice((1, 3, -2))
        cases.append(
            Case(
                f"random{len(cases)}_{reduction}",
                ndim,
                (rng.choice((1, 2)), rng.randint(1, 5), *spatial),
                tuple(k),
                tuple(s),
                tuple(p),
                dilation=tuple(d),
                ceil_mode=ceil_mode,
                layout=rng.choice(("contiguous", "channels_last", "sliced", "transposed")),
                reductions=(reduction,),
                blocks=rng.choice((None, None, (2, 2), (4, 2))),
                **extra,
            )
        )
    return cases


def params(reduction: str):
    """The cases that apply to one reduction, with ids like '2d-3x3_s2_p1'."""
    return [pytest.param(c, id=f"{c.ndim}d-{c.name}") for c in CASES if reduction in c.reductions]


# --- inputs ---------------------------------------------------------------------------------------


def _values(shape, kind: str) -> torch.Tensor:
    """Logical (contiguous, float32) values; exactly representable in every tested dtype where it
    matters (ties are small integers)."""
    if kind == "ties":
        return torch.randint(-2, 3, shape).float()
    x = torch.randn(shape)
    flat = x.view(-1)
    i = torch.arange(flat.numel())
    if kind == "nan_several":
        flat[i % 4 == 0] = math.nan  # most 3-tap rows hold one NaN, 3x3 windows two or more
    elif kind == "inf":
        flat[i % 7 == 0] = math.inf
        flat[i % 7 == 3] = -math.inf
    elif kind == "neg_inf_windows" and len(shape) >= 2:
        # whole windows of -inf: the index is the window's first in-bounds tap
        x[..., : shape[-2] // 2, :] = -math.inf
    return x


def make_input(case: Case, dtype: torch.dtype) -> torch.Tensor:
    """The case's input in ``dtype``, with its memory layout (the logical values do not depend on
    the layout)."""
    shape = case.shape
    if case.layout == "expanded":
        return _values((shape[0], 1, *shape[2:]), case.values).to(dtype).expand(shape)
    if case.layout == "channel_slice":
        big = _values((shape[0], 2 * shape[1], *shape[2:]), case.values).to(dtype)
        return big[:, ::2]
    x = _values(shape, case.values).to(dtype)
    if case.layout == "contiguous":
        return x
    if case.layout == "channels_last":
        assert len(shape) == case.ndim + 2, "channels_last needs a batched input"
        if case.ndim == 1:  # (N, L, C) viewed as (N, C, L)
            return x.transpose(1, 2).contiguous().transpose(1, 2)
        fmt = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        return x.contiguous(memory_format=fmt)
    if case.layout == "sliced":
        big = torch.zeros(*shape[:-1], 2 * shape[-1], dtype=dtype)
        big[..., ::2] = x
        return big[..., ::2]
    if case.layout == "transposed":
        a, b = (0, 1) if case.ndim == 1 else (-1, -2)
        return x.transpose(a, b).contiguous().transpose(a, b)
    raise AssertionError(case.layout)
