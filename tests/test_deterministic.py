"""Every op under torch.use_deterministic_algorithms(True) (issue 7).

Forward and backward run without raising, and two runs give bitwise-identical outputs and
gradients (inputs with ties, overlapping windows, so the order of accumulation matters), with
the Triton kernels (counted launches). Deterministic mode also fills torch.empty with NaN
(torch.utils.deterministic.fill_uninitialized_memory), so an output element a kernel forgot to
write would show up here as NaN.

tgpool calls no torch op that raises the nondeterministic alert on CUDA (no index_add_,
scatter_add_, index_put_(accumulate=True), put_, bincount, histc, cumsum) and its templates
use no atomics: every gradient element is summed by one program in a fixed order.

max_unpool with repeated indices holding different values is where torch itself refuses
deterministic mode (max_unpooling2d_forward_out "does not have a deterministic
implementation"): stores from different programs to one address land in any order on a GPU.
tgpool keeps only the last occurrence of a repeated index in that mode (tgpool.kernels.unpool.
last_writer_only: a stable sort, no host sync), which is torch's CPU result.
"""

from __future__ import annotations

import pytest
import torch
from conftest import launches

import tgpool


@pytest.fixture
def deterministic():
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def _ties(*shape):
    """Values with many ties (several windows pick the same element)."""
    g = torch.Generator().manual_seed(3)
    return torch.randint(-2, 3, shape, generator=g).float()


def _samples(n, c, k):
    g = torch.Generator().manual_seed(4)
    return torch.rand(n, c, k, generator=g)


def _unpool_inputs(n):
    x = torch.rand(2, 3, *(4,) * n, generator=torch.Generator().manual_seed(5))
    out, idx = getattr(torch.nn.functional, f"max_pool{n}d")(x, 2, return_indices=True)
    return out, idx


# name -> (the differentiable inputs, a call from them to one output tensor)
def _cases():
    c = {}
    for n in (1, 2, 3):
        sp = (5,) * n
        c[f"max_pool{n}d"] = (
            lambda sp=sp: [_ties(2, 3, *sp)],
            lambda x, n=n: getattr(tgpool, f"max_pool{n}d")(x, 3, 1, 1),
        )
        c[f"avg_pool{n}d"] = (
            lambda sp=sp: [_ties(2, 3, *sp)],
            lambda x, n=n: getattr(tgpool, f"avg_pool{n}d")(x, 3, 1, 1),
        )
        c[f"lp_pool{n}d"] = (
            lambda sp=sp: [_ties(2, 3, *sp).abs()],
            lambda x, n=n: getattr(tgpool, f"lp_pool{n}d")(x, 2, 2, 1),
        )
        c[f"adaptive_avg_pool{n}d"] = (
            lambda sp=sp: [_ties(2, 3, *sp)],
            lambda x, n=n: getattr(tgpool, f"adaptive_avg_pool{n}d")(x, 3),
        )
        c[f"adaptive_max_pool{n}d"] = (
            lambda sp=sp: [_ties(2, 3, *sp)],
            lambda x, n=n: getattr(tgpool, f"adaptive_max_pool{n}d")(x, 3),
        )
        c[f"max_unpool{n}d"] = (
            lambda n=n: [_unpool_inputs(n)[0]],
            lambda x, n=n: getattr(tgpool, f"max_unpool{n}d")(x, _unpool_inputs(n)[1], 2),
        )
    for n in (2, 3):
        c[f"fractional_max_pool{n}d"] = (
            lambda n=n: [_ties(2, 2, *(5,) * n)],
            lambda x, n=n: getattr(tgpool, f"fractional_max_pool{n}d")(
                x, 2, output_size=3, _random_samples=_samples(2, 2, n)
            ),
        )
    keep = torch.rand(2, 4, 5, generator=torch.Generator().manual_seed(6)) > 0.3
    c["global_max_pool_masked"] = (
        lambda: [_ties(2, 3, 4, 5)],
        lambda x: tgpool.global_max_pool(x, mask=keep),
    )
    c["global_avg_pool_channels_last"] = (
        lambda: [_ties(2, 4, 5, 3)],
        lambda x: tgpool.global_avg_pool(x, data_format="channels_last"),
    )
    c["global_pool_catavgmax"] = (
        lambda: [_ties(2, 3, 4, 5)],
        lambda x: tgpool.global_pool(x, "catavgmax"),
    )
    # a long row: the kernels split it and combine the partial results (asserted below)
    c["global_avg_pool_split_rows"] = (
        lambda: [torch.rand(1, 1, 8192, generator=torch.Generator().manual_seed(8))],
        lambda x: tgpool.global_avg_pool(x),
    )
    c["gem_learnable_p"] = (
        lambda: [_ties(2, 3, 4, 5).abs() + 0.5, torch.tensor([2.5])],
        lambda x, p: tgpool.gem(x, p),
    )
    offs = torch.tensor([0, 3, 3, 9])
    c["ragged_pool_max"] = (lambda: [_ties(9, 4)], lambda v: tgpool.ragged_pool(v, offs, "max"))
    c["ragged_pool_gem"] = (
        lambda: [_ties(9, 4).abs() + 0.5, torch.tensor([3.0])],
        lambda v, p: tgpool.ragged_pool(v, offs, "gem", p=p),
    )
    c["sppf"] = (lambda: [_ties(1, 2, 6, 6)], lambda x: tgpool.sppf(x, 3))
    return c


CASES = _cases()


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.dtype.itemsize])


def _run(name):
    make, call = CASES[name]
    inputs = [t.requires_grad_() for t in make()]
    out = call(*inputs)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(out, inputs, g)
    return out.detach(), grads


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_backward_are_deterministic(name, deterministic):
    before = launches()
    out1, grads1 = _run(name)
    out2, grads2 = _run(name)
    assert launches() > before, "no tgpool kernel ran"
    if name.endswith("split_rows"):
        assert launches("global_avg_combine") > 0, "the row was not split"
    assert not out1.isnan().any(), "an output element was left unwritten"
    assert torch.equal(bits(out1), bits(out2))
    for g1, g2 in zip(grads1, grads2, strict=True):
        assert not g1.isnan().any(), "a gradient element was left unwritten"
        assert torch.equal(bits(g1), bits(g2))


def _repeated_indices():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 3, 8, 8, generator=g)
    idx = torch.randint(0, 6, (2, 3, 8, 8), generator=g)  # 64 values onto 6 positions
    return x, idx


def test_unpool_with_repeated_indices_keeps_the_last_value(deterministic, monkeypatch):
    from tgpool.kernels import unpool

    calls = []
    real = unpool.last_writer_only
    monkeypatch.setattr(unpool, "last_writer_only", lambda i: calls.append(1) or real(i))
    x, idx = _repeated_indices()
    before = launches()
    first = tgpool.max_unpool2d(x, idx, 1)
    second = tgpool.max_unpool2d(x, idx, 1)
    assert launches() > before and len(calls) == 2, "the repeats were not resolved"
    torch.use_deterministic_algorithms(False)  # torch refuses the call in deterministic mode
    expected = torch.nn.functional.max_unpool2d(x, idx, 1)
    assert torch.equal(first, expected) and torch.equal(bits(first), bits(second))


def test_last_writer_only_marks_the_earlier_repeats():
    from tgpool.kernels.unpool import last_writer_only

    idx = torch.tensor([[[3, 1, 3, 0, 1, 3]]])
    assert last_writer_only(idx).tolist() == [[[-1, -1, -1, 0, 1, 3]]]
    assert last_writer_only(idx[:0]).shape == (0, 1, 6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_unpool_with_repeated_indices_is_deterministic(deterministic):
    x = torch.randn(64, 64, 32, 32, device="cuda")
    idx = torch.randint(0, 4, x.shape, device="cuda")  # many programs store to 4 positions
    runs = [tgpool.max_unpool2d(x, idx, 1) for _ in range(3)]
    assert all(torch.equal(bits(r), bits(runs[0])) for r in runs)
    torch.use_deterministic_algorithms(False)
    expected = torch.nn.functional.max_unpool2d(x.cpu(), idx.cpu(), 1)
    assert torch.equal(runs[0].cpu(), expected)


def test_fixture_restores_the_previous_mode(deterministic):
    assert torch.are_deterministic_algorithms_enabled()


def test_mode_is_off_again_after_the_fixture():
    assert not torch.are_deterministic_algorithms_enabled()
