"""DistributedDataParallel with the gloo backend on CPU: two processes (torch.multiprocessing
spawn, the Triton interpreter in each) train one step of a small network built on tgpool modules
(max pool, avg pool, adaptive max pool, a global average head, GeM with a learnable p), each rank
on its own half of a batch.

Checks: both ranks hold bit-identical gradients and parameters after the step; the gradients equal
a single process's over the whole batch (within float32 tolerance); tgpool kernels of every family
in the model ran forward and backward in each rank (torch's pooling refused there).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from processes import gloo_group, run_ranks
from torch import nn

import tgpool.nn
from tgpool import runtime

BATCH = 4  # two samples per rank
#: kernels that must launch in each rank: every tgpool module's forward and backward
KERNELS = (
    "max_pool2d_fwd",
    "max_pool2d_bwd",
    "avg_pool2d_fwd",
    "avg_pool2d_bwd",
    "adaptive_max_pool2d_fwd",
    "adaptive_max_pool2d_bwd",
    "global_avg_fwd",  # AdaptiveAvgPool2d(1) runs the global kernels
    "global_avg_bwd",
    "global_gem_fwd",
    "global_gem_bwd",
)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.max = tgpool.nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.avg = tgpool.nn.AvgPool2d(2)
        self.adaptive = tgpool.nn.AdaptiveMaxPool2d(2)
        self.mean = tgpool.nn.AdaptiveAvgPool2d(1)
        self.gem = tgpool.nn.GeM(p=3.0)
        self.head = nn.Linear(8 * 4 + 8 + 8, 5)

    def forward(self, x):
        x = self.max(F.relu(self.conv1(x)))
        x = self.avg(F.relu(self.conv2(x)))  # (N, 8, 3, 3)
        parts = [self.adaptive(x).flatten(1), self.mean(x).flatten(1), self.gem(x)]
        return self.head(torch.cat(parts, dim=1))


def make_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(BATCH, 3, 12, 12, generator=g), torch.randn(BATCH, 5, generator=g)


def make_model() -> Net:
    torch.manual_seed(0)
    return Net()


def _refuse_torch_pooling():
    """torch's pooling functions raise: every pooling result must come from tgpool's kernels."""

    def refuse(*args, **kwargs):
        raise AssertionError("torch's own pooling ran")

    for name in dir(F):
        if "pool" in name and callable(getattr(F, name)):
            setattr(F, name, refuse)


def _worker(rank: int, root: str, port: int):
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TGPOOL_CACHE_DIR", str(Path(root) / f"cache{rank}"))
    torch.set_num_threads(1)
    with gloo_group(rank, port):
        _refuse_torch_pooling()
        model = nn.parallel.DistributedDataParallel(make_model())
        x, y = make_data()
        half = BATCH // 2
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.module.named_parameters()}
        optimizer.step()
        torch.save(
            {
                "grads": grads,
                "params": {n: p.detach().clone() for n, p in model.module.named_parameters()},
                "launches": dict(runtime.launch_counts),
            },
            Path(root) / f"rank{rank}.pt",
        )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_ranks(_worker, tmp_path_factory.mktemp("ddp"))


def test_both_ranks_hold_identical_gradients_and_parameters(ranks):
    zero, one = ranks
    assert zero["grads"].keys() == one["grads"].keys()
    assert "gem.p" in zero["grads"]  # the learnable p is trained too
    for name in zero["grads"]:
        assert torch.equal(zero["grads"][name], one["grads"][name]), name
        assert torch.equal(zero["params"][name], one["params"][name]), name


def test_gradients_equal_one_process_over_the_whole_batch(ranks):
    model = make_model()
    x, y = make_data()
    F.mse_loss(model(x), y).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(ranks[0]["grads"][name], p.grad, atol=1e-6, rtol=1e-5)
        assert p.grad.abs().sum() > 0, f"{name}: no gradient reached it"


def test_every_rank_ran_tgpool_kernels(ranks):
    for rank, result in enumerate(ranks):
        for kernel in KERNELS:
            ran = sum(n for k, n in result["launches"].items() if k.startswith(kernel))
            assert ran > 0, f"rank {rank}: no {kernel}* kernel launched: {result['launches']}"
