"""Under torch.compile, tgpool's ops decompose into their Triton launches (tgpool/traced.py).

On the CPU there is no Inductor for Triton kernels, so these tests force the decomposition
(TGPOOL_TRACE_KERNELS=1) and compile with ``aot_eager``, which runs the graph's
``triton_kernel_wrapper`` nodes: the kernels run through the interpreter, counted by name. Fake
CUDA tensors show what a GPU trace holds. The GPU test compiles with Inductor (skipped here).
"""

from __future__ import annotations

import pytest
import torch
from conftest import launched_kernels
from torch._dynamo.testing import AotEagerAndRecordGraphs
from torch._functorch.aot_autograd import aot_function
from torch._subclasses.fake_tensor import FakeTensorMode

import tgpool
from tgpool import runtime, traced

HOP = "triton_kernel_wrapper"


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv("TGPOOL_TRACE_KERNELS", "1")


def _graph_targets(graphs) -> list[str]:
    return [str(n.target) for g in graphs for n in g.graph.nodes if n.op == "call_function"]


def _outputs(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


#: one call per family; ``grad``: whether the first output is differentiable in x
FAMILIES = {
    "max_pool2d": (lambda x: tgpool.max_pool2d(x, 3, 2, 1), True),
    "max_pool2d_indices": (lambda x: tgpool.max_pool2d(x, 2, return_indices=True), True),
    "avg_pool2d": (lambda x: tgpool.avg_pool2d(x, 3, 2, 1, count_include_pad=False), True),
    "avg_pool3d": (lambda x: tgpool.avg_pool3d(x.unsqueeze(2).expand(-1, -1, 2, -1, -1), 2), True),
    "lp_pool2d": (lambda x: tgpool.lp_pool2d(x, 2.0, 2), True),
    "large_window": (lambda x: tgpool.max_pool2d(x, 9, 1, 4), True),
    "adaptive_avg": (lambda x: tgpool.adaptive_avg_pool2d(x, 3), True),
    "adaptive_max": (lambda x: tgpool.adaptive_max_pool2d(x, 3, return_indices=True), True),
    "global_avg": (lambda x: tgpool.global_pool(x, "avg"), True),
    "global_catavgmax": (lambda x: tgpool.global_pool(x, "catavgmax"), True),
    "gem": (lambda x: tgpool.gem(x.abs() + 0.1), True),
    "unpool": (
        lambda x: tgpool.max_unpool2d(*tgpool.max_pool2d(x, 2, return_indices=True), 2),
        True,
    ),
    "fractional": (
        lambda x: tgpool.fractional_max_pool2d(
            x, 2, output_size=4, _random_samples=torch.full((2, 3, 2), 0.5)
        ),
        True,
    ),
    "sppf": (lambda x: tgpool.sppf(x, 3), True),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_compiled_graphs_launch_the_kernels_themselves(family, forced, caplog):
    call, differentiable = FAMILIES[family]
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    expected = _outputs(call(x))
    (grad,) = torch.autograd.grad(expected[0].square().sum(), x)

    backend = AotEagerAndRecordGraphs()
    compiled = torch.compile(call, backend=backend, fullgraph=True)
    with launched_kernels() as counts:
        got = _outputs(compiled(x))
        (got_grad,) = torch.autograd.grad(got[0].square().sum(), x)

    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_grad, grad, rtol=1e-5, atol=1e-6)
    targets = _graph_targets(backend.fw_graphs + backend.bw_graphs)
    assert any(HOP in t for t in targets), targets
    assert not any(t.startswith("tgpool.") for t in targets), "an op stayed opaque"
    assert counts, "no tgpool kernel ran in the compiled graph"
    # torch read what each kernel writes from its Triton IR, as on a GPU (no blanket clones)
    assert "assuming every input is mutated" not in caplog.text


def test_without_the_setting_the_cpu_keeps_the_op(monkeypatch):
    # Inductor cannot launch Triton kernels on the CPU: there the op stays one node
    monkeypatch.delenv("TGPOOL_TRACE_KERNELS", raising=False)
    backend = AotEagerAndRecordGraphs()
    x = torch.randn(2, 3, 8, 8)
    out = torch.compile(lambda t: tgpool.max_pool2d(t, 2), backend=backend, fullgraph=True)(x)
    torch.testing.assert_close(out, torch.nn.functional.max_pool2d(x, 2))
    targets = _graph_targets(backend.fw_graphs)
    assert "tgpool.max_pool.default" in targets and not any(HOP in t for t in targets)


def test_dynamic_shapes_keep_the_op(forced):
    backend = AotEagerAndRecordGraphs()
    call = torch.compile(
        lambda t: tgpool.avg_pool2d(t, 2), backend=backend, fullgraph=True, dynamic=True
    )
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(call(x), torch.nn.functional.avg_pool2d(x, 2))
    targets = _graph_targets(backend.fw_graphs)
    assert any(t.startswith("tgpool.") for t in targets) and not any(HOP in t for t in targets)


def test_export_keeps_the_op(forced):
    class Pool(torch.nn.Module):
        def forward(self, t):
            return tgpool.max_pool2d(t, 2)

    program = torch.export.export(Pool(), (torch.randn(2, 3, 8, 8),))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert "tgpool.max_pool.default" in targets and not any(HOP in t for t in targets)


def test_an_opcheck_with_the_decomposition_passes(forced):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    torch.library.opcheck(
        torch.ops.tgpool.max_pool.default, (x, [2, 2], [2, 2], [0, 0], [1, 1], False, True)
    )


# --- what a GPU trace holds, with fake CUDA tensors -----------------------------------------------


class _Captured(Exception):
    def __init__(self, graph):
        super().__init__("captured")
        self.graph = graph


def _trace_fake_cuda(fn, *shape):
    """The forward graph AOTAutograd gives ``fn`` on a fake CUDA tensor (nothing runs)."""

    def capture(graph, _inputs):
        raise _Captured(graph)

    with FakeTensorMode():
        x = torch.empty(*shape, device="cuda")
        try:
            aot_function(fn, fw_compiler=capture)(x)
        except _Captured as c:
            return c.graph
    raise AssertionError("nothing was traced")


@pytest.fixture
def no_gpu_queries(monkeypatch):
    """The tuner asks the GPU for its name: a fake CUDA tensor has none."""
    from tgpool.tuning import tuner

    monkeypatch.setattr(tuner, "cuda_device_info", lambda index: tuner.DeviceInfo("fake", "9.0"))
    monkeypatch.delenv("TGPOOL_TRACE_KERNELS", raising=False)


@pytest.mark.parametrize("family", ["max_pool2d", "adaptive_avg", "global_catavgmax", "sppf"])
def test_a_cuda_trace_holds_the_kernels(family, no_gpu_queries):
    call, _ = FAMILIES[family]
    graph = _trace_fake_cuda(call, 2, 3, 8, 8)
    wrappers = [n for n in graph.graph.nodes if HOP in str(n.target)]
    assert wrappers, graph.code
    assert not any(str(n.target).startswith("tgpool.") for n in graph.graph.nodes)
    kernels = torch._higher_order_ops.triton_kernel_wrap.kernel_side_table
    names = {kernels.get_kernel(n.kwargs["kernel_idx"]).fn.__name__ for n in wrappers}
    with launched_kernels() as eager:  # the same call in eager mode, on the CPU
        call(torch.randn(2, 3, 8, 8))
    assert names == set(eager)


def test_trace_kernels_off_keeps_the_op_on_cuda(no_gpu_queries, monkeypatch):
    monkeypatch.setenv("TGPOOL_TRACE_KERNELS", "0")
    graph = _trace_fake_cuda(lambda t: tgpool.max_pool2d(t, 2), 2, 3, 8, 8)
    targets = [str(n.target) for n in graph.graph.nodes]
    assert "tgpool.max_pool.default" in targets and not any(HOP in t for t in targets)


def test_only_what_a_kernel_writes_is_cloned(no_gpu_queries, caplog):
    # max_pool2d without indices passes its output again in the indices slot, which the variant
    # never touches: torch reads what the kernel writes from its Triton IR (built for sm_80 here)
    graph = _trace_fake_cuda(lambda t: tgpool.max_pool2d(t, 2), 2, 3, 8, 8)
    (wrapper,) = [n for n in graph.graph.nodes if HOP in str(n.target)]
    kwargs = wrapper.kwargs["kwargs"]
    assert kwargs["idx_ptr"] is kwargs["out_ptr"]
    assert wrapper.kwargs["tensors_to_clone"] == ["out_ptr"]
    assert "assuming every input is mutated" not in caplog.text


def test_launches_outside_a_trace_run_as_usual():
    assert getattr(runtime._thread, "traced_launch", None) is None
    with traced.tracing():
        assert runtime._thread.traced_launch is traced.launch
    assert runtime._thread.traced_launch is None


# --- on a GPU: Inductor launches tgpool's kernels -------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_inductor_launches_the_kernels_on_a_gpu(family):
    from torch._inductor.utils import run_and_get_code

    call, _ = FAMILIES[family]
    x = torch.randn(2, 3, 16, 16, device="cuda")
    with launched_kernels() as eager:
        expected = _outputs(call(x))
    compiled = torch.compile(call, fullgraph=True)
    _, (code, *_) = run_and_get_code(compiled, x)
    with launched_kernels() as counts:
        got = _outputs(compiled(x))
    assert not counts, "tgpool launched from Python inside a compiled graph"
    assert "torch.ops.tgpool" not in code
    assert all(name in code for name in eager), (sorted(eager), code)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)
