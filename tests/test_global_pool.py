"""Global pooling (tgpool.global_pool, gem, ragged_pool) against torch references in float64.

Every check runs inside ``global_kernels_ran()``: the pure-torch fallback raises there, and a
global-pool kernel must launch. Max values and indices are compared exactly; the rest against an
fp64 reference with a per-dtype tolerance. Interpreter shapes stay tiny.
"""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import tgpool
from tgpool import runtime
from tgpool.kernels import global_pool as launcher
from tgpool.reference import global_pool as global_reference

# --- proof that the kernels ran -------------------------------------------------------------------


@contextlib.contextmanager
def global_kernels_ran():
    """Inside the block the pure-torch reference path raises, and at least one global-pool kernel
    must launch."""
    saved = (global_reference.global_pool, global_reference.ragged_pool)

    def refuse(*args, **kwargs):
        raise AssertionError("the pure-torch global pooling ran inside global_kernels_ran()")

    global_reference.global_pool = global_reference.ragged_pool = refuse
    before = sum(n for k, n in runtime.launch_counts.items() if k.startswith("global_"))
    try:
        yield
    finally:
        global_reference.global_pool, global_reference.ragged_pool = saved
    after = sum(n for k, n in runtime.launch_counts.items() if k.startswith("global_"))
    assert after > before, "no global-pool kernel was launched"


# --- references -----------------------------------------------------------------------------------

#: (atol, rtol) against an fp64 reference computed from the same (rounded) inputs
TOL = {
    torch.float16: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),  # the interpreter truncates fp32 -> bf16 (no rounding)
    torch.float32: (1e-5, 1e-5),
    torch.float64: (1e-10, 1e-10),
}
DTYPES = list(TOL)
REDUCTIONS = ["max", "avg", "sum", "lp", "gem", "avgmax", "catavgmax"]


def as_ncs(x: torch.Tensor, data_format: str) -> torch.Tensor:
    """(N, C, S) float64 view of a dense input in ``data_format``."""
    x = x.double()
    if data_format == "channels_last":
        x = x.movedim(-1, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def reference(x, reduction, data_format="channels_first", mask=None, p=3.0, eps=1e-6):
    """(value (N, C'), first-max index (N, C) or None) in float64 by plain torch formulas.
    Differentiable in x (and p), with the max's gradient routed to the first maximum."""
    v = as_ncs(x, data_format)
    N, C, S = v.shape
    valid = torch.ones(N, S, dtype=torch.bool) if mask is None else mask.reshape(N, S)
    keep = valid[:, None, :].expand(N, C, S)
    count = valid.sum(1).double()[:, None]
    empty = count == 0

    def mx():
        filled = torch.where(keep, v, torch.tensor(float("-inf"), dtype=v.dtype))
        if S == 0:
            return v.new_zeros(N, C), torch.full((N, C), -1, dtype=torch.int64)
        index = filled.argmax(dim=2)  # first maximum
        value = v.gather(2, index[:, :, None]).squeeze(2)
        return value.masked_fill(empty, 0), index.masked_fill(empty, -1)

    def avg():
        return torch.where(keep, v, 0).sum(2) / count.clamp(min=1)

    if reduction == "max":
        return mx()
    if reduction == "avg":
        return avg(), None
    if reduction == "sum":
        return torch.where(keep, v, 0).sum(2), None
    if reduction == "lp":
        total = torch.where(keep, v.pow(p), 0).sum(2)
        return torch.where(empty, 0, total.pow(1.0 / p)), None
    if reduction == "gem":
        pw = p.double() if isinstance(p, torch.Tensor) else p
        mean = torch.where(keep, v.clamp(min=eps).pow(pw), 0).sum(2) / count.clamp(min=1)
        mean = torch.where(empty, 1.0, mean)
        return torch.where(empty, 0, mean.pow(1.0 / pw)), None
    a, (m, _) = avg(), mx()
    if reduction == "avgmax":
        return 0.5 * (a + m), None
    return torch.cat([a, m], dim=1), None


def expected_shape(x, reduction, data_format, keepdim):
    spatial = x.dim() - 2
    C = x.shape[-1] if data_format == "channels_last" else x.shape[1]
    C = 2 * C if reduction == "catavgmax" else C
    if not keepdim:
        return (x.shape[0], C)
    if data_format == "channels_last":
        return (x.shape[0], *([1] * spatial), C)
    return (x.shape[0], C, *([1] * spatial))


def close(actual, expected, dtype, reduction=None, msg=""):
    if reduction == "max":
        torch.testing.assert_close(actual.double(), expected.double(), rtol=0, atol=0, msg=msg)
        return
    atol, rtol = TOL[dtype]
    scale = max(1.0, float(expected.abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol * scale, rtol=rtol, equal_nan=True, msg=msg
    )


# --- cases ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A dense input: shape in its data format's order, memory layout, mask kind."""

    name: str
    shape: tuple  # (N, C, *spatial) for channels_first, (N, *spatial, C) for channels_last
    data_format: str = "channels_first"
    memory: str = "contiguous"  # contiguous | channels_last (memory format) | sliced | permuted
    mask: str = "none"  # none | random | with_empty_row

    def __str__(self):
        return self.name

    def make(self, dtype, reduction, requires_grad=True):
        g = torch.Generator().manual_seed(hash(self.name) % 2**31)
        shape = list(self.shape)
        if self.memory == "sliced":  # every other position of the last dim: strided reads
            shape[-2 if self.data_format == "channels_last" else -1] *= 2
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        if reduction in ("lp", "gem"):
            x = x.abs() + 0.05  # lp of a negative sum is NaN: keep the reference finite
        x = x.to(dtype)
        if self.memory == "channels_last":
            x = x.contiguous(memory_format=_memory_format(x.dim()))
        elif self.memory == "sliced":
            x = x[..., ::2, :] if self.data_format == "channels_last" else x[..., ::2]
        elif self.memory == "permuted":  # spatial dims swapped in memory: they do not collapse
            x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
        mask = None
        if self.mask != "none":
            spatial = self.shape[1:-1] if self.data_format == "channels_last" else self.shape[2:]
            mask = torch.rand((self.shape[0], *spatial), generator=g) > 0.4
            if self.mask == "with_empty_row":
                mask[0] = False
        return x.detach().requires_grad_(requires_grad), mask


def _memory_format(dim):
    return {4: torch.channels_last, 5: torch.channels_last_3d}.get(dim, torch.contiguous_format)


CASES = [
    # spatial ranks and typical shapes
    Case("1d_sentence", (2, 3, 9)),
    Case("2d_small", (2, 3, 5, 7)),
    Case("3d_video", (2, 2, 3, 4, 5)),
    Case("cnn_head_7x7", (2, 20, 7, 7)),
    Case("single_position", (2, 3, 1, 1)),
    Case("long_row", (1, 2, 300)),
    Case("odd_channels", (3, 33, 2, 3)),
    # data formats and memory layouts, read in place
    Case("keras_1d_channels_last", (2, 9, 4), "channels_last"),
    Case("keras_2d_channels_last", (2, 5, 6, 8), "channels_last"),
    Case("keras_3d_channels_last", (2, 3, 2, 4, 5), "channels_last"),
    Case("nchw_stored_channels_last", (2, 8, 5, 6), memory="channels_last"),
    Case("strided_positions", (2, 3, 4, 5), memory="sliced"),
    Case("strided_positions_channels_last", (2, 4, 5, 3), "channels_last", memory="sliced"),
    Case("non_collapsible_spatial", (2, 3, 4, 5), memory="permuted"),
    # masks
    Case("mask_1d", (3, 4, 11), mask="random"),
    Case("mask_1d_channels_last", (3, 11, 4), "channels_last", mask="random"),
    Case("mask_2d_fully_masked_row", (2, 3, 4, 5), mask="with_empty_row"),
    Case("mask_3d_channels_last", (2, 2, 3, 4, 6), "channels_last", mask="random"),
]


def _params():
    out = []
    for reduction in REDUCTIONS:
        for case in CASES:  # every case in float32
            out.append(pytest.param(case, reduction, torch.float32, id=f"{reduction}-{case}-f32"))
        for dtype in (torch.float16, torch.bfloat16, torch.float64):  # every dtype, two cases
            for case in (CASES[1], CASES[14]):
                out.append(pytest.param(case, reduction, dtype, id=f"{reduction}-{case}-{dtype}"))
    return out


def _p(reduction):
    return 2.0 if reduction == "lp" else 3.0


# --- forward and input gradient -------------------------------------------------------------------


@pytest.mark.parametrize("case, reduction, dtype", _params())
def test_matches_reference(case, reduction, dtype):
    x, mask = case.make(dtype, reduction)
    p = _p(reduction)
    with global_kernels_ran():
        out = tgpool.global_pool(x, reduction, data_format=case.data_format, mask=mask, p=p)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out.double() * weight).sum().backward()
    assert out.dtype == dtype and out.shape == expected_shape(x, reduction, case.data_format, 0)

    x_ref = x.detach().double().requires_grad_()
    want, _ = reference(x_ref, reduction, case.data_format, mask, p)
    (want * weight).sum().backward()
    close(out, want.detach(), dtype, reduction, f"{reduction} {case} {dtype}: output")
    close(x.grad, x_ref.grad, dtype, msg=f"{reduction} {case} {dtype}: input gradient")
    # the gradient keeps a dense input's strides (channels-last included), like torch.empty_like
    assert x.grad.stride() == torch.empty_like(x).stride()


@pytest.mark.parametrize("ndim", [1, 2, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_max_indices_equal_torch_adaptive_max_pool(ndim, dtype):
    """Values and the flat spatial index of the first maximum, identical to torch's."""
    x = torch.randn((2, 5) + (4, 3, 5)[:ndim]).to(dtype)
    want, want_idx = getattr(F, f"adaptive_max_pool{ndim}d")(x, 1, return_indices=True)
    with global_kernels_ran():
        out, idx = tgpool.global_pool(x, "max", keepdim=True, return_indices=True)
    assert torch.equal(out, want) and torch.equal(idx, want_idx)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_avg_and_lp_equal_torch_pools(ndim):
    """avg against adaptive_avg_pool, lp against lp_pool with the whole extent as its window."""
    x = torch.rand((2, 4) + (4, 3, 5)[:ndim], dtype=torch.float64) + 0.1
    with global_kernels_ran():
        avg = tgpool.global_pool(x, "avg", keepdim=True)
        lp = tgpool.global_pool(x, "lp", p=3.0, keepdim=True)
    torch.testing.assert_close(avg, getattr(F, f"adaptive_avg_pool{ndim}d")(x, 1))
    window = x.shape[2] if ndim == 1 else tuple(x.shape[2:])
    torch.testing.assert_close(lp, getattr(F, f"lp_pool{ndim}d")(x, 3.0, window))


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_keepdim_shapes(reduction, data_format):
    x = torch.rand(2, 3, 4, 5) + 0.1
    with global_kernels_ran():
        out = tgpool.global_pool(x, reduction, data_format=data_format, keepdim=True)
    assert out.shape == expected_shape(x, reduction, data_format, True)
    flat = tgpool.global_pool(x, reduction, data_format=data_format)
    assert torch.equal(out.reshape(flat.shape), flat)


def test_ties_report_the_first_maximum_and_nan_wins():
    x = torch.zeros(1, 2, 6)
    x[0, 0, [1, 4]] = 3.0  # a tie: index 1
    x[0, 1, [2, 5]] = float("nan")  # NaN wins; ATen's rule reports the last NaN
    with global_kernels_ran():
        out, idx = tgpool.global_pool(x, "max", return_indices=True)
    assert out[0, 0] == 3.0 and idx[0, 0] == 1
    assert torch.isnan(out[0, 1]) and idx[0, 1] == 5
    _, want_idx = F.adaptive_max_pool1d(x, 1, return_indices=True)
    assert idx[0, 1] == want_idx[0, 1, 0]


def test_max_of_all_minus_inf_reports_its_first_position():
    x = torch.full((1, 1, 5), float("-inf"))
    with global_kernels_ran():
        out, idx = tgpool.global_pool(x, "max", return_indices=True)
    assert out.item() == float("-inf") and idx.item() == 0


# --- empty rows -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fully_masked_rows_give_zero_and_zero_gradient(reduction):
    x = (torch.rand(2, 3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    mask = torch.tensor([[False] * 4, [True, False, True, True]])
    p = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    with global_kernels_ran():
        out = tgpool.global_pool(x, reduction, mask=mask, p=p if reduction == "gem" else 2.0)
        out.sum().backward()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert torch.equal(x.grad[0], torch.zeros_like(x.grad[0]))
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.equal(x.grad[1, :, 1], torch.zeros(3, dtype=torch.float64))  # masked position
    if reduction == "gem":
        assert torch.isfinite(p.grad).all()
    if reduction == "max":
        _, idx = tgpool.global_pool(x, "max", mask=mask, return_indices=True)
        assert (idx[0] == -1).all() and (idx[1] >= 0).all()


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_zero_size_dims(reduction):
    """No positions: every row is empty (0); no rows or channels: an empty result."""
    x = torch.randn(2, 3, 0, requires_grad=True)
    out = tgpool.global_pool(x, reduction)
    assert out.shape == expected_shape(x, reduction, "channels_first", False)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert x.grad.shape == x.shape
    for shape in [(0, 3, 4), (2, 0, 4)]:
        empty = tgpool.global_pool(torch.randn(shape), reduction)
        assert empty.shape == expected_shape(torch.randn(shape), reduction, "channels_first", 0)


# --- split rows (several programs per row, combined in order) -------------------------------------


@pytest.fixture
def split_rows(monkeypatch):
    """Make rows of a few dozen positions split over programs, as long rows do on a GPU."""
    monkeypatch.setattr(launcher, "MIN_SPLIT_POSITIONS", 8)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", [CASES[5], CASES[8], CASES[16]], ids=str)
def test_split_rows_match_reference_and_repeat_bitwise(split_rows, case, reduction):
    assert launcher.split_count(1, 300, 2) > 1
    x, mask = case.make(torch.float32, reduction)
    p = _p(reduction)
    results = []
    for _ in range(2):
        x.grad = None
        with runtime.recording() as launches, global_kernels_ran():
            out = tgpool.global_pool(x, reduction, data_format=case.data_format, mask=mask, p=p)
            out.sum().backward()
        results.append((out.detach().clone(), x.grad.clone()))
    assert any("combine" in r.kernel for r in launches), "the rows were not split"
    (a, ga), (b, gb) = results
    assert torch.equal(a, b) and torch.equal(ga, gb), "not identical from run to run"
    x_ref = x.detach().double().requires_grad_()
    want, _ = reference(x_ref, reduction, case.data_format, mask, p)
    want.sum().backward()
    close(a, want.detach(), torch.float32, reduction)
    close(ga, x_ref.grad, torch.float32)


def test_split_rows_keep_first_maximum_across_splits(split_rows):
    x = torch.zeros(1, 1, 200)
    x[0, 0, [30, 150]] = 1.0
    with global_kernels_ran():
        out, idx = tgpool.global_pool(x, "max", return_indices=True)
    assert out.item() == 1.0 and idx.item() == 30
    x[0, 0, [10, 190]] = float("nan")
    out, idx = tgpool.global_pool(x, "max", return_indices=True)
    assert torch.isnan(out).all() and idx.item() == 190


# --- GeM ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gem_learnable_p_gradient(dtype, data_format):
    x = (torch.rand(2, 3, 4, 5, dtype=torch.float64) + 0.05).to(dtype).requires_grad_()
    mask = torch.rand(2, 4, 5) > 0.3 if data_format == "channels_first" else None
    p = torch.tensor([2.5], requires_grad=True)
    with global_kernels_ran():
        out = tgpool.gem(x, p, 1e-6, data_format=data_format, mask=mask)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        (out.double() * weight).sum().backward()
    x_ref = x.detach().double().requires_grad_()
    p_ref = p.detach().double().requires_grad_()
    want, _ = reference(x_ref, "gem", data_format, mask, p_ref)
    (want * weight).sum().backward()
    close(out, want.detach(), dtype)
    close(x.grad, x_ref.grad, dtype)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(p.grad.double(), p_ref.grad, atol=10 * atol, rtol=10 * rtol)


def test_gem_clamps_at_eps_and_passes_gradient_only_above_it():
    x = torch.tensor([[[0.5, -1.0, 1e-8, 2.0]]], dtype=torch.float64, requires_grad=True)
    with global_kernels_ran():
        out = tgpool.gem(x, 3.0, 1e-6)
        out.sum().backward()
    x_ref = x.detach().clone().requires_grad_()
    want = x_ref.clamp(min=1e-6).pow(3.0).mean(-1).pow(1 / 3.0)
    want.sum().backward()
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(x.grad, x_ref.grad)
    assert x.grad[0, 0, 1] == 0 and x.grad[0, 0, 2] == 0


def test_gradcheck_float64():
    x = (torch.rand(2, 3, 3, 4, dtype=torch.float64) + 0.2).requires_grad_()
    mask = torch.rand(2, 3, 4) > 0.3
    for reduction in ["avg", "sum", "lp", "avgmax", "catavgmax", "max"]:
        fn = lambda t, r=reduction: tgpool.global_pool(t, r, mask=mask, p=2.5)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)
    p = torch.tensor([2.5], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda t, q: tgpool.gem(t, q, 1e-6, mask=mask), (x, p), eps=1e-6, atol=1e-6
    )


# --- packed (ragged) segments ---------------------------------------------------------------------

RAGGED = [
    # (name, segment lengths, channels)
    ("sentences", [4, 0, 7, 9], 5),
    ("one_segment", [13], 3),
    ("all_empty", [0, 0], 4),
    ("many_short", [1, 2, 1, 3, 1, 1, 2], 6),
    ("wide_channels", [3, 5], 40),
]


def ragged_reference(values, lengths, reduction, p):
    outs, idxs = [], []
    start = 0
    for n in lengths:
        seg = values[start : start + n].t()[None]  # (1, C, n)
        v, i = reference(seg, reduction, "channels_first", None, p)
        outs.append(v[0])
        idxs.append(i[0] if i is not None else None)
        start += n
    return torch.stack(outs), (torch.stack(idxs) if reduction == "max" else None)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("name, lengths, channels", RAGGED, ids=[r[0] for r in RAGGED])
def test_ragged_matches_per_segment_reference(name, lengths, channels, reduction):
    T = sum(lengths)
    values = torch.randn(T, channels, dtype=torch.float64)
    if reduction in ("lp", "gem"):
        values = values.abs() + 0.05
    values = values.float().requires_grad_()
    offsets = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()))
    p = _p(reduction)
    with global_kernels_ran():
        out = tgpool.ragged_pool(values, offsets, reduction, p=p)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(2))
        (out * weight).sum().backward()
    v_ref = values.detach().double().requires_grad_()
    want, want_idx = ragged_reference(v_ref, lengths, reduction, p)
    if want.requires_grad:
        (want * weight).sum().backward()
    want_grad = v_ref.grad if v_ref.grad is not None else torch.zeros_like(v_ref)
    close(out, want.detach(), torch.float32, reduction)
    close(values.grad, want_grad, torch.float32)
    if reduction == "max":
        _, idx = tgpool.ragged_pool(values.detach(), offsets, "max", return_indices=True)
        assert torch.equal(idx, want_idx)


def test_ragged_int32_offsets_and_split_segments(split_rows):
    values = torch.randn(120, 4)
    offsets = torch.tensor([0, 50, 50, 120], dtype=torch.int32)
    with runtime.recording() as launches, global_kernels_ran():
        out = tgpool.ragged_pool(values, offsets, "avg")
    assert any("combine" in r.kernel for r in launches)
    want = torch.stack([values[:50].mean(0), torch.zeros(4), values[50:].mean(0)])
    torch.testing.assert_close(out, want)


def test_ragged_unchecked_bad_offsets_stay_in_bounds():
    """validate=False skips the check; bounds are clamped and a reversed segment is empty."""
    values = torch.randn(10, 3)
    offsets = torch.tensor([0, 6, 4, 25])
    with global_kernels_ran():
        out = tgpool.ragged_pool(values, offsets, "sum", validate=False)
    want = torch.stack([values[:6].sum(0), torch.zeros(3), values[4:].sum(0)])
    torch.testing.assert_close(out, want)


def test_ragged_channels_not_contiguous():
    values = torch.randn(4, 12).t()  # (12, 4) with positions contiguous
    offsets = torch.tensor([0, 5, 12])
    with global_kernels_ran():
        out = tgpool.ragged_pool(values, offsets, "max")
    torch.testing.assert_close(out, torch.stack([values[:5].amax(0), values[5:].amax(0)]))


# --- tile choice ----------------------------------------------------------------------------------

TILES = [
    # (case, data_format, memory, tile the forward and backward must use)
    ((2, 8, 7, 7), "channels_first", "contiguous", "flat"),  # 49-element rows: not aligned
    ((2, 8, 4, 4), "channels_first", "contiguous", "rows"),  # 16-element rows: aligned
    ((2, 8, 7, 7), "channels_first", "channels_last", "channels"),
    ((2, 7, 7, 8), "channels_last", "contiguous", "channels"),
    ((1, 3, 600), "channels_first", "contiguous", "rows"),  # longer than a flat tile
]


@pytest.mark.parametrize("shape, data_format, memory, tile", TILES)
def test_tile_follows_the_contiguous_axis(shape, data_format, memory, tile):
    x = torch.randn(shape)
    if memory == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    with runtime.recording() as launches, global_kernels_ran():
        out = tgpool.global_pool(x, "avgmax", data_format=data_format)
        out.sum().backward()
    assert [r.kernel.split("_")[3] for r in launches] == [tile, tile], launches
    want, _ = reference(x.detach(), "avgmax", data_format)
    close(out, want, torch.float32)


# --- no host synchronisation ----------------------------------------------------------------------


def test_ragged_hot_path_reads_no_device_value_on_the_host(monkeypatch):
    """With validate=False nothing reads offsets (or any tensor) back to Python: the kernels do."""
    values = torch.randn(12, 4, requires_grad=True)
    offsets = torch.tensor([0, 5, 5, 12])

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    with global_kernels_ran():
        out = tgpool.ragged_pool(values, offsets, "gem", p=3.0, validate=False)
        out.sum().backward()
    monkeypatch.undo()
    assert out.shape == (3, 4) and values.grad.shape == values.shape


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_no_cuda_synchronisation_in_ragged_and_masked_pooling():
    values = torch.randn(1000, 64, device="cuda", requires_grad=True)
    offsets = torch.tensor([0, 100, 100, 1000], device="cuda")
    x = torch.randn(8, 32, 50, device="cuda", requires_grad=True)
    mask = torch.rand(8, 50, device="cuda") > 0.5
    p = torch.tensor([3.0], device="cuda", requires_grad=True)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = tgpool.ragged_pool(values, offsets, "max").sum()
        out = out + tgpool.gem(x.abs(), p, mask=mask).sum()
        out.backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- double backward ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reduction, data_format",
    [
        ("max", "channels_first"),
        ("avg", "channels_last"),
        ("sum", "channels_first"),
        ("catavgmax", "channels_first"),
        ("avgmax", "channels_last"),
    ],
)
def test_gradgradcheck(reduction, data_format):
    """Tiny inputs: gradgradcheck's numerical Jacobians launch the kernels once per element."""
    x = torch.randn(2, 2, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, True, True]])
    mask = mask if data_format == "channels_first" else mask[:, :2]
    fn = lambda t: tgpool.global_pool(t, reduction, data_format=data_format, mask=mask)  # noqa: E731
    with global_kernels_ran():
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_gradgradcheck_ragged_max_and_avg():
    values = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    offsets = torch.tensor([0, 2, 2, 5])
    for reduction in ("max", "avg"):
        fn = lambda v, r=reduction: tgpool.ragged_pool(v, offsets, r)  # noqa: E731
        assert torch.autograd.gradgradcheck(fn, (values,))


def test_double_backward_of_gem_is_refused():
    x = (torch.rand(2, 3, 4, dtype=torch.float64) + 0.1).requires_grad_()
    (g,) = torch.autograd.grad(tgpool.gem(x).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()
