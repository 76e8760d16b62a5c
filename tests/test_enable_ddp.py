"""tgpool.enable() under DistributedDataParallel (gloo, CPU, two processes): an unmodified torch.nn
model with a functional pool and a mean head trains one step with its pooling routed to tgpool.
Both ranks hold identical gradients, equal to ATen's single process over the whole batch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from processes import gloo_group, run_ranks
from torch import nn

BATCH = 4


class Plain(nn.Module):
    """Only torch: a pooling module, a functional pool, a squeeze-excite mean and a mean head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.excite = nn.Linear(8, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = F.avg_pool2d(self.pool(F.relu(self.conv(x))), 2)
        x = x * torch.sigmoid(self.excite(x.mean((2, 3))))[:, :, None, None]
        return self.head(x.mean([2, 3]))


def make():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    return Plain(), torch.randn(BATCH, 3, 12, 12, generator=g), torch.randn(BATCH, 5, generator=g)


def _worker(rank: int, root: str, port: int):
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("TGPOOL_CACHE_DIR", str(Path(root) / f"cache{rank}"))
    torch.set_num_threads(1)
    import tgpool
    from tgpool import runtime

    with gloo_group(rank, port), tgpool.enabled(strict=True) as report:
        net, x, y = make()
        model = nn.parallel.DistributedDataParallel(net)
        half = BATCH // 2
        x, y = x[rank * half : (rank + 1) * half], y[rank * half : (rank + 1) * half]
        F.mse_loss(model(x), y).backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    torch.save(
        {"grads": grads, "routed": dict(report.routed), "launches": dict(runtime.launch_counts)},
        Path(root) / f"rank{rank}.pt",
    )


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return run_ranks(_worker, tmp_path_factory.mktemp("enable_ddp"))


def test_ranks_agree_with_atens_single_process(ranks):
    net, x, y = make()
    F.mse_loss(net(x), y).backward()  # ATen, not enabled
    for name, p in net.named_parameters():
        assert torch.equal(ranks[0]["grads"][name], ranks[1]["grads"][name]), name
        torch.testing.assert_close(ranks[0]["grads"][name], p.grad, atol=1e-6, rtol=1e-5)


def test_every_pooling_call_was_routed_in_each_rank(ranks):
    for result in ranks:
        assert result["routed"] == {"max_pool2d": 1, "avg_pool2d": 1, "mean": 2}
        assert sum(result["launches"].values()) > 0
