"""``tgpool demo``: a small CNN on tgpool's pooling, checked against the same CNN on torch's.

The two models share their weights; only the pooling modules differ (``tgpool.nn`` subclasses
``torch.nn``'s, so ``load_state_dict`` moves between them). The demo runs forward and backward on
both, compares outputs and every gradient, and prints each generated kernel that launched: its
variant, source file, launch config, grid and time.

A second model does the same for text: padded sentences of different lengths through embeddings
and a Conv1d, then global max pooling over each sentence's real tokens only (tgpool's mask; the
torch reference fills padding with -inf before ``amax``), then a linear classifier.

A third part switches an existing model over with one call: a tiny ResNet built from torch.nn only
(``resnet_demo.TinyResNet``) is deep-copied, ``tgpool.patch`` replaces the copy's pooling modules,
and both run forward and backward on the same input.

A fourth leaves a model's code alone: ``tgpool.enabled()`` routes its functional pooling and global
means to tgpool (cli/enable_demo.py), and a table shows the calls routed per ATen op.
"""

from __future__ import annotations

import copy
import os
import sys

import torch

RUNS_INTERPRETED = "No CUDA GPU: the generated Triton kernels run through the Triton interpreter on CPU (TRITON_INTERPRET=1). Times below are interpreter times, not GPU timings."  # noqa: E501


def small_cnn(nn) -> torch.nn.Module:
    """A CIFAR-sized CNN whose pooling comes from ``nn`` (torch.nn or tgpool.nn)."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1),
        torch.nn.ReLU(),
        nn.MaxPool2d(3, stride=2, padding=1),  # ResNet-stem style 3x3 s2 p1
        torch.nn.Conv2d(16, 32, 3, padding=1),
        torch.nn.ReLU(),
        nn.AvgPool2d(2),  # VGG-style 2x2 s2
        torch.nn.Conv2d(32, 32, 3, padding=1),
        torch.nn.ReLU(),
        nn.MaxPool2d(2, ceil_mode=True),
        nn.AvgPool2d(4),  # global average over the last 4x4 map (Network in Network head)
        torch.nn.Flatten(),
        torch.nn.Linear(32, 10),
    )


class TextClassifier(torch.nn.Module):
    """Embeddings -> Conv1d -> global max over each sentence's tokens -> linear.

    ``pool(h, mask)`` maps (N, C, L) features and the (N, L) token mask to (N, C): padding must
    not win the max, or a short sentence's features would depend on its padding.
    """

    def __init__(self, pool, vocab: int = 50, dim: int = 8, channels: int = 16, classes: int = 3):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim, padding_idx=0)
        self.conv = torch.nn.Conv1d(dim, channels, 3, padding=1)
        self.pool = pool
        self.fc = torch.nn.Linear(channels, classes)

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = torch.arange(tokens.shape[1], device=tokens.device) < lengths[:, None]
        # no ReLU before the max: ReLU's zeros would tie, and ties route gradients differently
        # (tgpool: the first maximum, as torch's max pooling; amax: split between them)
        features = self.conv(self.embed(tokens).transpose(1, 2))
        return self.fc(torch.relu(self.pool(features, mask)))


class MaskedMaxReference(torch.nn.Module):
    """The torch formulation: padding filled with -inf, then ``amax`` over the tokens."""

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return h.masked_fill(~mask[:, None, :], float("-inf")).amax(-1)


def _compare_text(a, b, tokens, lengths) -> tuple[float, float]:
    ya, yb = a(tokens, lengths), b(tokens, lengths)
    target = torch.arange(tokens.shape[0], device=tokens.device) % ya.shape[1]
    torch.nn.functional.cross_entropy(ya, target).backward()
    torch.nn.functional.cross_entropy(yb, target).backward()
    out_diff = (ya - yb).abs().max().item()
    grad_diff = max(
        (pa.grad - pb.grad).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters())
    )
    return out_diff, grad_diff


def text_demo(device: str) -> bool:
    """Masked global max pooling in a text classifier, forward and backward, against torch."""
    import tgpool
    from tgpool import runtime

    torch.manual_seed(0)
    reference = TextClassifier(MaskedMaxReference()).to(device)
    model = TextClassifier(tgpool.nn.GlobalMaxPool()).to(device)
    model.load_state_dict(reference.state_dict())
    lengths = torch.tensor([12, 7, 3, 1], device=device)
    tokens = torch.randint(1, 50, (len(lengths), int(lengths.max())), device=device)
    tokens = tokens.masked_fill(torch.arange(tokens.shape[1], device=device) >= lengths[:, None], 0)
    with runtime.recording() as records:
        out_diff, grad_diff = _compare_text(model, reference, tokens, lengths)
    good = out_diff <= 1e-5 and grad_diff <= 1e-5 and len(records) > 0
    print(
        f"\n== text: embeddings -> Conv1d -> masked global max -> linear, forward and backward,"
        f" {len(records)} tgpool kernel launches\n"
        f"{len(lengths)} sentences of lengths {lengths.tolist()} padded to {tokens.shape[1]}"
    )
    print(_table(records))
    print(
        f"max |output - torch| = {out_diff:.2e}; max |gradient - torch| = {grad_diff:.2e}"
        f" -> {'OK' if good else 'MISMATCH'}"
    )
    return good


def _forward_backward(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.zero_grad()
    y = model(x.clone().requires_grad_())
    y.square().mean().backward()
    return y.detach()


def _differences(original, patched, x) -> tuple[float, float, str, int]:
    """(max |output difference|, max |parameter gradient difference|, its parameter, tgpool
    launches of the original)."""
    from tgpool import runtime

    before = sum(runtime.launch_counts.values())
    ya = _forward_backward(original, x)
    original_launches = sum(runtime.launch_counts.values()) - before
    yb = _forward_backward(patched, x)
    grads = [
        ((pa.grad - pb.grad).abs().max().item(), name)
        for (name, pa), pb in zip(original.named_parameters(), patched.parameters(), strict=True)
    ]
    grad_diff, worst = max(grads)
    return (ya - yb).abs().max().item(), grad_diff, worst, original_launches


def resnet_demo(device: str, batch: int = 2, size: int = 18) -> bool:
    """Patch a deep copy of a torch.nn ResNet: same outputs and gradients as the original (to
    float32 rounding), and only the copy launches tgpool kernels. ``size`` 18 leaves the ResNet-D
    shortcuts' ceil_mode windows partial."""
    from tgpool import runtime
    from tgpool.cli.resnet_demo import TinyResNet
    from tgpool.integrations.patch import patch, unpatch

    torch.manual_seed(0)
    original = TinyResNet().to(device)
    patched = copy.deepcopy(original)
    report = patch(patched)
    print(f"\n== patch: a torch.nn ResNet switched to tgpool in place\n{report}")
    x = torch.randn(batch, 3, size, size, device=device)
    with runtime.recording() as records:
        out_diff, grad_diff, worst, original_launches = _differences(original, patched, x)
    launched = len(records) - original_launches
    good = out_diff <= 1e-5 and grad_diff <= 1e-5 and launched > 0 and original_launches == 0
    print(
        f"forward + backward on {batch}x3x{size}x{size}: the original launched"
        f" {original_launches} tgpool kernels, the patched copy {launched}"
        f" ({', '.join(sorted({r.kernel for r in records}))})\n"
        f"max |output difference| = {out_diff:.2e}; max |gradient difference| over"
        f" {sum(1 for _ in original.parameters())} parameters = {grad_diff:.2e} ({worst})"
    )
    # Which pooling each difference comes from: patch one family at a time.
    unpatch(patched)
    print("one family patched at a time (0 = bitwise identical to torch):")
    for family in ("max_pool", "avg_pool", "adaptive_avg_pool"):
        patch(patched, ops=[family])
        out_d, grad_d, _, _ = _differences(original, patched, x)
        unpatch(patched)
        print(f"  {family:<18} output {out_d:.2e}  gradients {grad_d:.2e}")
    print(
        "Max pooling's values and indices are exact; its gradient can round differently where"
        " overlapping 3x3/2 windows share a maximum (their gradients are summed in another order"
        " than ATen's). The 2x2/2 average pools do not overlap: identical. The global average sums"
        " in another order than ATen's mean: float32 rounding, carried on through the layers."
    )
    print(f"-> {'OK' if good else 'MISMATCH'}")
    return good


def _compare(a: torch.nn.Module, b: torch.nn.Module, x: torch.Tensor) -> tuple[float, float]:
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    target = torch.arange(x.shape[0]) % 10
    torch.nn.functional.cross_entropy(ya, target).backward()
    torch.nn.functional.cross_entropy(yb, target).backward()
    out_diff = (ya - yb).abs().max().item()
    grads = [(xa.grad, xb.grad)] + [
        (pa.grad, pb.grad) for pa, pb in zip(a.parameters(), b.parameters())
    ]
    grad_diff = max((ga - gb).abs().max().item() for ga, gb in grads)
    return out_diff, grad_diff


def _table(records) -> str:
    header = ("kernel", "variant", "generated source", "config", "grid", "ms")
    rows = [
        (
            r.kernel,
            r.variant,
            os.path.basename(r.source),
            r.config,
            "x".join(map(str, r.grid)),
            f"{r.seconds * 1e3:.2f}",
        )
        for r in records
    ]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main(device: str | None = None, batch: int = 4, size: int = 32) -> int:
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        # Triton fixes interpreter mode when triton.language is imported (torch imported it
        # already), so the demo runs itself again with the variable set from the start.
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        argv = [
            sys.executable,
            "-m",
            "tgpool",
            "demo",
            "--device",
            "cpu",
            "--batch",
            str(batch),
            "--size",
            str(size),
        ]
        sys.stdout.flush()
        os.execve(sys.executable, argv, env)
    if device == "cpu":
        print(RUNS_INTERPRETED)
    import tgpool
    from tgpool import runtime

    torch.manual_seed(0)
    reference = small_cnn(torch.nn).to(device)
    model = small_cnn(tgpool.nn).to(device)
    model.load_state_dict(reference.state_dict())
    dtype = torch.float32
    print(f"device: {device}; input: {batch}x3x{size}x{size} {str(dtype).removeprefix('torch.')}")

    ok = True
    for layout in ("contiguous", "channels_last"):
        x = torch.randn(batch, 3, size, size, device=device, dtype=dtype)
        if layout == "channels_last":
            x = x.to(memory_format=torch.channels_last)
            model, reference = (m.to(memory_format=torch.channels_last) for m in (model, reference))
        reference.zero_grad()
        model.zero_grad()
        with runtime.recording() as records:
            out_diff, grad_diff = _compare(model, reference, x)
        good = out_diff <= 1e-4 and grad_diff <= 1e-4 and len(records) > 0
        ok &= good
        print(f"\n== {layout}: forward and backward, {len(records)} tgpool kernel launches")
        print(_table(records))
        print(
            f"max |output - torch| = {out_diff:.2e}; max |gradient - torch| = {grad_diff:.2e}"
            f" -> {'OK' if good else 'MISMATCH'}"
        )
    ok &= text_demo(device)
    ok &= resnet_demo(device)
    from tgpool.cli.enable_demo import enable_demo

    ok &= enable_demo(device)
    print("\nall checks passed" if ok else "\nFAILED: tgpool differs from torch")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
