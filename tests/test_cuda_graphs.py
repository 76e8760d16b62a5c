"""CUDA graph capture of every tgpool op (GPU only; skipped without a CUDA device).

Each op is warmed up first on a side stream (kernels generated and compiled, configs looked up or
tuned: none of that may happen during capture), then its forward and a backward through
``torch.autograd.grad`` are captured under ``torch.cuda.set_sync_debug_mode("error")`` (any host
synchronisation inside the capture raises), new data is copied into the static inputs, the graph
is replayed and the result compared with an eager run on the same data.

The cases are test_no_sync.CASES (the same ops, forward and backward), with fractional max
pooling given its random samples as an input so eager and replayed runs draw the same windows.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from test_no_sync import CASES, _loss, _x

import tgpool

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _samples(d, n, c, dims):
    return torch.rand(n, c, dims, device=d)


GRAPH_CASES = {
    **CASES,
    "fractional_max_pool2d": (
        lambda d: [_x(d, 2, 3, 9, 9), _samples(d, 2, 3, 2)],
        lambda x, s: tgpool.fractional_max_pool2d(x, 2, output_size=5, _random_samples=s),
    ),
    "fractional_max_pool3d": (
        lambda d: [_x(d, 1, 2, 6, 6, 6), _samples(d, 1, 2, 3)],
        lambda x, s: tgpool.fractional_max_pool3d(x, 2, output_ratio=0.5, _random_samples=s),
    ),
}


@contextlib.contextmanager
def sync_errors():
    """Any host synchronisation in the block raises (torch.cuda.set_sync_debug_mode)."""
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _outputs(out) -> list[torch.Tensor]:
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _run(fn, inputs):
    """Outputs and the gradients of every floating input that requires grad."""
    out = fn(*inputs)
    wrt = [t for t in inputs if t.requires_grad]
    grads = torch.autograd.grad(_loss(out), wrt)
    return _outputs(out), list(grads)


def _refill(static, fresh) -> None:
    with torch.no_grad():
        for s, f in zip(static, fresh):
            s.copy_(f)


@pytest.mark.parametrize("name", list(GRAPH_CASES))
def test_capture_and_replay_match_eager(name):
    make, fn = GRAPH_CASES[name]
    torch.manual_seed(0)
    static = make("cuda")

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up: generate, compile, look up configs
            _run(fn, static)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with sync_errors():
            outs, grads = _run(fn, static)

    for seed in (1, 2):
        torch.manual_seed(seed)
        fresh = make("cuda")
        _refill(static, fresh)
        graph.replay()
        want_outs, want_grads = _run(fn, fresh)
        torch.cuda.synchronize()
        for got, want in zip(outs + grads, want_outs + want_grads):
            torch.testing.assert_close(got, want)


def test_graphed_module_trains_like_eager():
    """torch.cuda.make_graphed_callables on a network of tgpool modules: the graphed forward and
    backward give eager's output and parameter gradients."""

    def net():
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1),
            tgpool.nn.MaxPool2d(3, stride=2, padding=1),
            torch.nn.ReLU(),
            tgpool.nn.AvgPool2d(2),
            tgpool.nn.GeM(p=3.0),
            torch.nn.Linear(8, 4),
        ).cuda()

    eager, graphed = net(), net()
    x = torch.randn(4, 3, 16, 16, device="cuda", requires_grad=True)
    graphed = torch.cuda.make_graphed_callables(graphed, (x,))
    for seed in (1, 2):
        torch.manual_seed(seed)
        data = torch.randn(4, 3, 16, 16, device="cuda", requires_grad=True)
        for model in (eager, graphed):
            model.zero_grad(set_to_none=True)
            model(data).square().sum().backward()
        torch.testing.assert_close(graphed(data), eager(data))
        for (name, a), b in zip(eager.named_parameters(), graphed.parameters()):
            torch.testing.assert_close(b.grad, a.grad, msg=name)


def test_tuned_before_capture_then_cached_lookups_only(tmp_path, monkeypatch):
    """TGPOOL_AUTOTUNE=1: the warm-up tunes and stores; the capture tunes nothing, opens no cache
    file, and replays like eager."""
    from tgpool.tuning import tuner

    monkeypatch.setenv("TGPOOL_AUTOTUNE", "1")
    monkeypatch.setenv("TGPOOL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tuner, "_default", None)
    monkeypatch.setattr(tuner, "_memo", {})
    x = torch.randn(8, 16, 32, 32, device="cuda", requires_grad=True)

    def fn(t):
        return tgpool.max_pool2d(t, 3, 2, 1)

    torch.cuda.synchronize()
    _run(fn, [x])  # tunes every launch of the forward and backward, on the default stream
    cache = tmp_path / "autotune.json"
    assert cache.exists()
    stored = cache.read_bytes()

    ensured = []
    real_ensure = tuner.Tuner.ensure
    monkeypatch.setattr(
        tuner.Tuner, "ensure", lambda self, *a, **k: ensured.append(a) or real_ensure(self, *a, **k)
    )
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        _run(fn, [x])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        with sync_errors():
            outs, grads = _run(fn, [x])
    assert not ensured and cache.read_bytes() == stored
    with torch.no_grad():
        x.copy_(torch.randn_like(x))
    graph.replay()
    want_outs, want_grads = _run(fn, [x.detach().clone().requires_grad_()])
    for got, want in zip(outs + grads, want_outs + want_grads):
        torch.testing.assert_close(got, want)
