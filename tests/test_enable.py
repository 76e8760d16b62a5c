"""tgpool.enable(): ATen's pooling, functional calls and global reductions run on tgpool's kernels.

Everything runs on CPU tensors through the interpreter (enable registers the CPU's autograd key
while TRITON_INTERPRET=1). Each routed call is compared with the same call with tgpool disabled
(ATen's kernels): outputs and input gradients, and tgpool's kernels must have run.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import launches

import tgpool
from tgpool.integrations import enable as enabling
from tgpool.integrations.routes import ROUTES, global_layout


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype, requires_grad=dtype.is_floating_point)


def _outputs(result):
    if isinstance(result, tuple):
        return tuple(result)
    return (result,)


def _run(call, x):
    """Outputs and the input's gradient (of a fixed weighting of the float outputs)."""
    outs = _outputs(call(x))
    floats = [o for o in outs if o.is_floating_point()]
    grad = None
    if any(o.requires_grad for o in floats):
        weights = [torch.linspace(-1, 1, o.numel()).reshape(o.shape).to(o.dtype) for o in floats]
        loss = sum((o * w).sum() for o, w in zip(floats, weights))
        (grad,) = torch.autograd.grad(loss, x)
    return outs, grad


#: (ATen op as the report names it, input shape, call): every path a model takes to pooling
CASES = {
    "F.max_pool1d": ("max_pool1d", (2, 3, 10), lambda x: F.max_pool1d(x, 3, 2, 1)),
    "F.max_pool1d indices": (
        "max_pool1d",
        (2, 3, 10),
        lambda x: F.max_pool1d(x, 2, return_indices=True),
    ),
    "F.max_pool2d": ("max_pool2d", (2, 3, 9, 9), lambda x: F.max_pool2d(x, 3, 2, 1)),
    "torch._C._nn.max_pool2d_with_indices": (
        "max_pool2d_with_indices",
        (2, 3, 8, 8),
        lambda x: torch._C._nn.max_pool2d_with_indices(x, 2),
    ),
    "torch._C._nn.max_pool3d_with_indices": (
        "max_pool3d_with_indices",
        (1, 2, 4, 6, 6),
        lambda x: torch._C._nn.max_pool3d_with_indices(x, 2),
    ),
    "torch.max_pool1d_with_indices": (
        "max_pool1d_with_indices",
        (2, 3, 10),
        lambda x: torch.max_pool1d_with_indices(x, 2),
    ),
    "F.max_pool2d ceil dilation": (
        "max_pool2d",
        (2, 3, 9, 9),
        lambda x: F.max_pool2d(x, 2, 2, 0, 2, ceil_mode=True),
    ),
    "F.max_pool2d indices": (
        "max_pool2d",
        (2, 3, 8, 8),
        lambda x: F.max_pool2d(x, 2, return_indices=True),
    ),
    "torch.max_pool2d": ("max_pool2d", (2, 3, 8, 8), lambda x: torch.max_pool2d(x, 2)),
    "F.max_pool3d": ("max_pool3d", (1, 2, 4, 6, 6), lambda x: F.max_pool3d(x, 2)),
    "F.max_pool3d indices": (
        "max_pool3d",
        (1, 2, 4, 6, 6),
        lambda x: F.max_pool3d(x, 2, return_indices=True),
    ),
    "F.avg_pool1d": ("avg_pool1d", (2, 3, 10), lambda x: F.avg_pool1d(x, 3, 2, 1)),
    "F.avg_pool2d": (
        "avg_pool2d",
        (2, 3, 9, 9),
        lambda x: F.avg_pool2d(x, 3, 1, 1, count_include_pad=False),
    ),
    "F.avg_pool2d divisor": (
        "avg_pool2d",
        (2, 3, 8, 8),
        lambda x: F.avg_pool2d(x, 2, divisor_override=3),
    ),
    "F.avg_pool3d": ("avg_pool3d", (1, 2, 4, 6, 6), lambda x: F.avg_pool3d(x, 2, ceil_mode=True)),
    "F.lp_pool2d": ("lp_pool2d", (2, 3, 8, 8), lambda x: F.lp_pool2d(x.abs() + 0.1, 2.0, 2)),
    "F.lp_pool1d": ("lp_pool1d", (2, 3, 10), lambda x: F.lp_pool1d(x.abs() + 0.1, 3.0, 2)),
    "F.lp_pool3d": ("lp_pool3d", (1, 2, 4, 6, 6), lambda x: F.lp_pool3d(x.abs() + 0.1, 2.0, 2)),
    "torch.avg_pool1d": ("avg_pool1d", (2, 3, 10), lambda x: torch.avg_pool1d(x, 2)),
    "torch.adaptive_max_pool1d": (
        "adaptive_max_pool1d",
        (2, 3, 10),
        lambda x: torch.adaptive_max_pool1d(x, 4),
    ),
    "torch.max_pool3d": ("max_pool3d", (1, 2, 4, 6, 6), lambda x: torch.max_pool3d(x, 2)),
    "torch._C._nn.max_unpool3d": (
        "max_unpool3d",
        (1, 2, 4, 4, 4),
        lambda x: torch._C._nn.max_unpool3d(
            *torch._C._nn.max_pool3d_with_indices(x, 2), [4, 4, 4], [2, 2, 2], [0, 0, 0]
        ),
    ),
    "F.max_unpool1d": (
        "max_unpool1d",
        (2, 3, 8),
        lambda x: F.max_unpool1d(*F.max_pool1d(x, 2, return_indices=True), 2),
    ),
    "F.adaptive_avg_pool1d": (
        "adaptive_avg_pool1d",
        (2, 3, 10),
        lambda x: F.adaptive_avg_pool1d(x, 4),
    ),
    "F.adaptive_avg_pool2d": (
        "adaptive_avg_pool2d",
        (2, 3, 9, 9),
        lambda x: F.adaptive_avg_pool2d(x, (4, 3)),
    ),
    "F.adaptive_avg_pool2d 1": (
        "adaptive_avg_pool2d",
        (2, 3, 9, 9),
        lambda x: F.adaptive_avg_pool2d(x, 1),
    ),
    "F.adaptive_avg_pool3d": (
        "adaptive_avg_pool3d",
        (1, 2, 4, 6, 6),
        lambda x: F.adaptive_avg_pool3d(x, 2),
    ),
    "F.adaptive_max_pool1d": (
        "adaptive_max_pool1d",
        (2, 3, 10),
        lambda x: F.adaptive_max_pool1d(x, 3, return_indices=True),
    ),
    "F.adaptive_max_pool2d": (
        "adaptive_max_pool2d",
        (2, 3, 9, 9),
        lambda x: F.adaptive_max_pool2d(x, 4),
    ),
    "F.adaptive_max_pool3d": (
        "adaptive_max_pool3d",
        (1, 2, 4, 6, 6),
        lambda x: F.adaptive_max_pool3d(x, 3),
    ),
    "F.fractional_max_pool2d": (
        "fractional_max_pool2d",
        (2, 3, 9, 9),
        lambda x: F.fractional_max_pool2d(
            x, 2, output_size=4, _random_samples=torch.full((2, 3, 2), 0.4)
        ),
    ),
    "F.fractional_max_pool3d": (
        "fractional_max_pool3d",
        (1, 2, 6, 6, 6),
        lambda x: F.fractional_max_pool3d(
            x, 2, output_size=3, _random_samples=torch.full((1, 2, 3), 0.4)
        ),
    ),
    "F.max_unpool2d": (
        "max_unpool2d",
        (2, 3, 8, 8),
        lambda x: F.max_unpool2d(*torch.nn.functional.max_pool2d(x, 2, return_indices=True), 2),
    ),
    "F.max_unpool3d": (
        "max_unpool3d",
        (1, 2, 4, 4, 4),
        lambda x: F.max_unpool3d(*F.max_pool3d(x, 2, return_indices=True), 2),
    ),
    "mean (2, 3)": ("mean", (2, 3, 5, 6), lambda x: x.mean((2, 3))),
    "mean [2, 3] keepdim": ("mean", (2, 3, 5, 6), lambda x: x.mean([2, 3], keepdim=True)),
    "mean (-2, -1) 3-D spatial": ("mean", (2, 3, 2, 4, 5), lambda x: x.mean((-3, -2, -1))),
    "mean channels-last dims": ("mean", (2, 5, 6, 3), lambda x: torch.mean(x, (1, 2))),
    "mean tokens dim=1": ("mean", (2, 7, 4), lambda x: x.mean(dim=1)),
    "torch.mean keepdim=": ("mean", (2, 3, 5, 6), lambda x: torch.mean(x, (2, 3), keepdim=True)),
    "torch.amax no grad": ("amax", (2, 3, 5), lambda x: torch.amax(x.detach(), 2)),
    "sum (2, 3)": ("sum", (2, 3, 5, 6), lambda x: x.sum((2, 3))),
    "amax (2, 3) no grad": ("amax", (2, 3, 5, 6), lambda x: x.detach().amax((2, 3))),
    "max dim=2 of (N, C, L)": ("max", (2, 3, 7), lambda x: x.max(dim=2)),
    "max dim=1 of (N, L, C) keepdim": ("max", (2, 7, 3), lambda x: x.max(1, keepdim=True)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_route_matches_aten_with_its_gradient(case):
    op, shape, call = CASES[case]
    x = _x(*shape)
    expected, expected_grad = _run(call, x)
    before = launches()
    with tgpool.enabled() as report:
        got, grad = _run(call, x)
    assert report.routed[op] >= 1, report.table()
    assert report.fell_through_count() == 0, report.table()
    assert launches() > before, "no tgpool kernel ran"
    for a, b in zip(got, expected, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride()
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(a, b)  # indices: exact
    if expected_grad is not None:
        assert grad is not None, "the gradient was lost"
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def test_every_route_has_a_case():
    from tgpool.integrations import entry_points

    named = {op for op, _, _ in CASES.values()}
    routes = {name.split(".")[0] for name in ROUTES}
    assert routes - named == set()
    assert set(entry_points.FUNCTIONAL) - named == set()
    assert set(entry_points.REDUCTIONS) - named == set()


def test_routed_outputs_carry_tgpools_autograd():
    x = _x(2, 3, 8, 8)
    with tgpool.enabled():
        y = F.adaptive_avg_pool2d(x, 1)  # CompositeImplicitAutograd in ATen
    assert y.grad_fn is not None and "adaptive_avg_pool" in type(y.grad_fn).__name__


# --- what ATen keeps ------------------------------------------------------------------------------


def test_unsupported_dtypes_fall_through_with_the_same_result():
    x = torch.randint(-5, 5, (2, 3, 8, 8))
    before = launches()
    with tgpool.enabled() as report:
        got = F.max_pool2d(x, 2)
    assert torch.equal(got, F.max_pool2d(x, 2))
    assert launches() == before
    assert report.routed["max_pool2d"] == 0
    assert report.fell_through["max_pool2d"] == {"dtype int64": 1}
    assert "dtype int64" in report.table()


def test_plain_cpu_tensors_are_left_to_aten(monkeypatch):
    x = _x(2, 3, 8, 8)
    with tgpool.enabled(strict=True) as report:  # by design, not a failure
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # CPU tensors now take torch's own pooling
        before = launches()
        got = [F.max_pool2d(x, 2), torch.max_pool2d(x, 2), x.mean((2, 3))]
        assert launches() == before
    monkeypatch.undo()
    assert report.routed == {}
    assert all("without the Triton interpreter" in r for r in report.fell_through["max_pool2d"])
    torch.testing.assert_close(got[0], F.max_pool2d(x, 2))


def test_strict_raises_before_any_launch():
    x = torch.randint(-5, 5, (2, 3, 8, 8))
    before = launches()
    with tgpool.enabled(strict=True), pytest.raises(NotImplementedError, match="dtype int64"):
        F.max_pool2d(x, 2)
    assert launches() == before


@pytest.mark.parametrize(
    "shape, call",
    [
        ((4, 6), lambda t: t.mean(-1)),  # over features of a 2-D tensor
        ((4, 6), lambda t: t.mean()),
        ((4, 6), lambda t: t.sum(0)),
        ((4, 6), lambda t: t.amax(1)),
        ((2, 4, 6), lambda t: t.mean((0, 2))),  # the batch dim is not spatial
        ((2, 4, 6), lambda t: (t > 0).sum(dim=2)),  # counting a mask: not pooling
        ((2, 4, 6), lambda t: t.long().amax(2, keepdim=True)),
    ],
)
def test_reductions_that_are_not_pooling_are_left_alone(shape, call):
    x = torch.randn(*shape)
    before = launches()
    with tgpool.enabled(strict=True) as report:
        got = call(x)
    assert torch.equal(got, call(x))
    assert launches() == before
    assert report.ops() == []


def test_global_layout():
    x4 = torch.empty(2, 3, 4, 5)
    assert global_layout(x4, (2, 3)) == "channels_first"
    assert global_layout(x4, [-1, -2]) == "channels_first"
    assert global_layout(x4, (1, 2)) == "channels_last"
    assert global_layout(torch.empty(2, 7, 4), 1) == "channels_last"
    assert global_layout(torch.empty(2, 7, 4), -1) == "channels_first"
    for dims in [(1, 3), (0, 2, 3), (2,), None, ()]:
        assert global_layout(x4, dims) is None
    assert global_layout(torch.empty(4, 5), 1) is None
    assert global_layout(torch.empty(1, 2, 3, 4, 5, 6), (2, 3, 4, 5)) is None


def test_amax_with_grad_keeps_atens_tie_rule():
    x = torch.tensor([[[[1.0, 3.0], [3.0, 2.0]]]], requires_grad=True)
    with tgpool.enabled() as report:
        y = x.amax((2, 3))
    y.sum().backward()
    assert torch.equal(x.grad, torch.tensor([[[[0.0, 0.5], [0.5, 0.0]]]]))
    assert "tied maxima" in report.table()


def test_inference_mode_routes_the_swapped_entry_points_only():
    x = torch.randn(2, 3, 8, 8)
    with tgpool.enabled() as report, torch.inference_mode():
        F.max_pool2d(x, 2)  # the swapped F function: routed
        torch.max_pool2d(x, 2)  # the dispatcher's route: inference mode skips its key
    assert report.routed["max_pool2d"] == 1


def test_disable_puts_every_original_back():
    def entry_points():
        return [F.max_pool2d, F.avg_pool2d, torch.Tensor.mean, torch.mean, torch.Tensor.max]

    originals = entry_points()
    with tgpool.enabled():
        assert F.max_pool2d is not originals[0] and torch.Tensor.mean is not originals[2]
    assert entry_points() == originals
    x = torch.randn(2, 3, 8, 8)
    before = launches()
    F.max_pool2d(x, 2), x.mean((2, 3)), torch.max_pool2d(x, 2)
    assert launches() == before


def test_enable_disable_nest_and_restore():
    x = torch.randn(2, 3, 8, 8)
    outer = tgpool.enable()
    try:
        with tgpool.enabled() as inner:
            F.avg_pool2d(x, 2)
        F.avg_pool2d(x, 2)
        assert enabling.is_enabled()
    finally:
        tgpool.disable()
    assert not enabling.is_enabled()
    assert inner.routed["avg_pool2d"] == 1 and outer.routed["avg_pool2d"] == 2
    before = launches()
    F.avg_pool2d(x, 2)
    assert launches() == before
    tgpool.disable()  # disabling twice does nothing


def test_subclass_forward_calling_functional_is_routed():
    class SamePadMaxPool(torch.nn.MaxPool2d):  # like timm's MaxPool2dSame
        def forward(self, x):
            return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=-float("inf")), self.kernel_size, 2)

    x = _x(2, 3, 7, 7)
    expected = SamePadMaxPool(2)(x)
    with tgpool.enabled() as report:
        got = SamePadMaxPool(2)(x)
    assert report.routed["max_pool2d"] == 1
    torch.testing.assert_close(got, expected)


def test_autocast_gives_atens_dtypes():
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = [F.avg_pool2d(x, 2), x.mean((2, 3)), F.max_pool2d(x.bfloat16(), 2)]
        with tgpool.enabled() as report:
            got = [F.avg_pool2d(x, 2), x.mean((2, 3)), F.max_pool2d(x.bfloat16(), 2)]
    assert sum(report.routed.values()) == 3
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)


def test_deterministic_mode_backward_runs():
    x = _x(1, 2, 4, 6, 6)
    torch.use_deterministic_algorithms(True)
    try:
        with tgpool.enabled() as report:
            grads = [
                torch.autograd.grad(F.adaptive_max_pool3d(x, 3).sum(), x)[0],
                torch.autograd.grad(F.avg_pool3d(x, 2).sum(), x)[0],
            ]
    finally:
        torch.use_deterministic_algorithms(False)
    assert report.routed["adaptive_max_pool3d"] == 1 and report.routed["avg_pool3d"] == 1
    assert all(g.abs().sum() > 0 for g in grads)


# --- torch.compile and torch.export: ATen's ops stay in the graph ---------------------------------


def test_compile_traces_atens_ops_and_routes_what_the_graph_calls():
    # tracing sees fake tensors: the graph holds ATen's ops (Inductor lowers those itself); a
    # backend that runs the graph's ATen ops eagerly (aot_eager) has them routed like any call
    from torch._dynamo.backends.common import aot_autograd

    torch._dynamo.reset()
    graphs = []

    def capture(graph, _inputs):
        graphs.append(graph)
        return graph

    backend = aot_autograd(fw_compiler=capture)
    x = torch.randn(2, 3, 8, 8)

    def f(t):
        return F.max_pool2d(t, 2).mean((2, 3))

    compiled = torch.compile(f, backend=backend, fullgraph=True)
    caches_off = torch._functorch.config.patch(enable_autograd_cache=False)  # trace, here
    with caches_off, tgpool.enabled() as report:
        got = compiled(x)
        before = launches()
        again = compiled(x)
    torch.testing.assert_close(got, f(x))
    torch.testing.assert_close(again, f(x))
    targets = [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]
    assert any("max_pool2d" in t for t in targets), targets
    assert not any(t.startswith("tgpool") for t in targets), targets
    assert launches() > before and report.routed["max_pool2d_with_indices"] >= 1
    torch._dynamo.reset()


def test_traced_tensors_are_atens_by_design():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from tgpool.integrations.routes import BY_DESIGN, servable

    with FakeTensorMode():
        reason = servable(torch.empty(2, 3, 8, 8))
    assert reason.startswith("traced") and reason.startswith(BY_DESIGN)
    assert servable(torch.empty(2, 3, 8, 8)) is None
    assert servable(torch.empty(2, 3, 8, 8, dtype=torch.int32)) == "dtype int32"


def test_export_keeps_atens_ops():
    class Head(torch.nn.Module):
        def forward(self, t):
            return F.adaptive_avg_pool2d(F.max_pool2d(t, 2), 1)

    with tgpool.enabled(strict=True):  # tracing is defined behaviour, not a failure
        program = torch.export.export(Head(), (torch.randn(2, 3, 8, 8),))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert any("max_pool2d" in t for t in targets) and not any("tgpool" in t for t in targets)


# --- on a GPU -------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_deterministic_training_is_bit_identical_on_a_gpu():
    """ATen refuses these backward passes under deterministic algorithms on CUDA."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(2, 4, 3, padding=1),
        torch.nn.MaxPool3d(2),
        torch.nn.AvgPool3d(2, ceil_mode=True),
        torch.nn.Flatten(0, 1),
        torch.nn.AdaptiveAvgPool2d(3),
        torch.nn.AdaptiveMaxPool2d(2),
    ).cuda()
    x = torch.randn(2, 2, 8, 16, 16, device="cuda")

    def step():
        model.zero_grad()
        model(x).square().sum().backward()
        return [p.grad.clone() for p in model.parameters()]

    torch.use_deterministic_algorithms(True)
    try:
        with tgpool.enabled(strict=True):
            first, second = step(), step()
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
