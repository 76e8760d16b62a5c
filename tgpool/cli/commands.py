"""The ``tgpool`` command line: demo, codegen, inspect, list, (cli/tune.py) tune and cache, and
(cli/bench.py) bench.

Exit codes: 0 on success, 1 when a check fails (``inspect --fail-on-spill`` finding a spill), 2 on
usage errors (argparse's convention) and where a needed GPU is missing, with a one-line reason.
"""

from __future__ import annotations

import argparse
import os
import sys

OPS = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d"]
#: ``tgpool inspect``'s input shape for an op when --input-shape is not given, by spatial dims
INSPECT_SHAPES = {1: (8, 64, 3136), 2: (8, 64, 112, 112), 3: (2, 32, 16, 32, 32)}
#: global_pool: the CNN head (N, C, H, W); ragged_pool: (total_tokens, C)
GLOBAL_INSPECT_SHAPES = {"global_pool": (256, 2048, 7, 7), "ragged_pool": (4096, 256)}
GLOBAL_OPS = ("global_pool", "ragged_pool")
REDUCTIONS = ("max", "avg", "sum", "lp", "gem", "avgmax", "catavgmax")


def _ints(text: str) -> tuple[int, ...] | int:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an int or comma-separated ints, got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def _codegen(args) -> int:
    import dataclasses

    from .. import codegen
    from ..kernels import window as window_pool
    from ..spec import CHANNELS_FIRST, CHANNELS_LAST, DTYPES, window_spec

    reduction, ndim = args.op[:3], int(args.op[-2])
    if args.dtype not in DTYPES.values():
        print(
            f"tgpool codegen: unknown dtype {args.dtype!r}; choose from "
            f"{', '.join(DTYPES.values())}",
            file=sys.stderr,
        )
        return 2
    try:
        spec = window_spec(
            reduction,
            ndim,
            args.kernel_size,
            args.stride,
            args.padding,
            args.dilation if reduction == "max" else 1,
            args.ceil_mode,
            not args.no_count_include_pad,
            args.divisor_override,
        )
    except (RuntimeError, TypeError, ValueError) as e:
        print(f"tgpool codegen: {e}", file=sys.stderr)
        return 2
    layout = CHANNELS_LAST if args.channels_last else CHANNELS_FIRST
    spec = dataclasses.replace(spec, dtype=args.dtype, layout=layout)
    if args.backward:
        family, ctx = window_pool.BACKWARD, window_pool.backward_context(spec)
    else:
        family = window_pool.FORWARD
        ctx = window_pool.forward_context(spec, args.with_indices)
    print(codegen.render(family, **ctx), end="")
    return 0


def _demo(args) -> int:
    from . import demo

    return demo.main(device=args.device, batch=args.batch, size=args.size)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tgpool", description="Template-generated Triton pooling kernels for PyTorch."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="run a small CNN on tgpool's pooling, checked against torch",
        description="Run a small CNN forward and backward on tgpool's pooling, "
        "check it against the same CNN on torch's pooling, and print every "
        "kernel launched. Without a GPU the kernels run in the Triton interpreter.",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default=None,
        help="default: cuda when available, else cpu (interpreter)",
    )
    p.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    p.add_argument("--size", type=int, default=32, help="input height and width (default 32)")
    p.set_defaults(run=_demo)

    p = sub.add_parser(
        "codegen",
        help="print the generated Triton source of one kernel variant",
        description="Print the Triton source tgpool generates for one variant, "
        "e.g. `tgpool codegen max_pool2d --kernel-size 3 --stride 2 "
        "--dtype float16`.",
    )
    p.add_argument("op", choices=OPS)
    _window_options(p, kernel_required=True, dtype="float32")
    p.add_argument("--backward", action="store_true", help="the backward kernel")
    p.set_defaults(run=_codegen)

    p = sub.add_parser(
        "inspect",
        help="compile kernels for sm_80/sm_90a without a GPU: registers, spills, widths",
        description="Compile the kernels tgpool launches for OP (forward, backward and double "
        "backward; without OP, an example of every kernel family) ahead of time for a GPU "
        "target, without a GPU, and print per kernel: registers, spilled bytes, shared memory, "
        "and the widths of its global loads and stores (bits x instructions).",
    )
    p.add_argument(
        "op", nargs="?", choices=OPS + list(GLOBAL_OPS), help="default: one example per family"
    )
    p.add_argument(
        "--arch",
        action="append",
        choices=["sm_80", "sm_90a"],
        help="target (repeatable; default both)",
    )
    p.add_argument(
        "--input-shape",
        type=_ints,
        default=None,
        help="batched input shape, e.g. 8,64,112,112 (default by op)",
    )
    p.add_argument("--direction", choices=["fwd", "bwd", "double_bwd", "all"], default="all")
    _window_options(p, kernel_required=False, dtype="float16")
    p.add_argument(
        "--reduction", choices=REDUCTIONS, default="avg", help="global ops (default avg)"
    )
    p.add_argument("--masked", action="store_true", help="global_pool with a (N, *spatial) mask")
    p.add_argument(
        "--fail-on-spill", action="store_true", help="exit 1 when a kernel spills registers (CI)"
    )
    p.set_defaults(run=_inspect)

    p = sub.add_parser(
        "list",
        help="the ops and kernel families",
        description="List tgpool's ops and its kernel families.",
    )
    p.set_defaults(run=_list)

    from . import bench as cli_bench
    from . import tune as cli_tune

    cli_tune.add_parsers(sub)
    cli_bench.add_parser(sub)
    return parser


def _window_options(p, *, kernel_required: bool, dtype: str) -> None:
    """The window and variant options shared by codegen and inspect."""
    p.add_argument(
        "--kernel-size", type=_ints, required=kernel_required, help="int or comma-separated ints"
    )
    p.add_argument("--stride", type=_ints, default=None, help="default: the kernel size")
    p.add_argument("--padding", type=_ints, default=0)
    p.add_argument("--dilation", type=_ints, default=1, help="max pooling only")
    p.add_argument("--ceil-mode", action="store_true")
    p.add_argument("--no-count-include-pad", action="store_true", help="avg pooling only")
    p.add_argument("--divisor-override", type=int, default=None, help="avg pooling only")
    p.add_argument(
        "--dtype", default=dtype, help=f"float16, bfloat16, float32 or float64 (default {dtype})"
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="the channels-last variant (default: channels-first)",
    )
    p.add_argument("--with-indices", action="store_true", help="max pooling writing its argmax")


def _inspect_calls(args) -> list[dict]:
    """aot.inspect_op calls for ``tgpool inspect``'s arguments (ValueError: a usage error)."""
    from ..aot.families import FAMILIES

    if args.op is None:
        examples = [dict(f.example) for f in FAMILIES.values()]
    elif args.op in GLOBAL_OPS:
        shape = args.input_shape or (
            GLOBAL_INSPECT_SHAPES["ragged_pool"]
            if args.op == "ragged_pool"
            else GLOBAL_INSPECT_SHAPES["global_pool"]
        )
        shape = (shape,) if isinstance(shape, int) else shape
        if args.direction == "double_bwd":
            raise ValueError(f"{args.op}: its double backward reuses the forward kernels")
        directions = ["fwd", "bwd"] if args.direction == "all" else [args.direction]
        examples = [
            {
                "op": args.op,
                "input_shape": tuple(shape),
                "direction": d,
                "reduction": args.reduction,
                "masked": args.masked,
            }
            for d in directions
        ]
    else:
        if args.kernel_size is None:
            raise ValueError(f"{args.op} needs --kernel-size")
        ndim = int(args.op[-2])
        shape = args.input_shape or INSPECT_SHAPES[ndim]
        shape = (shape,) if isinstance(shape, int) else shape
        window = {
            "kernel_size": args.kernel_size,
            "stride": args.stride,
            "padding": args.padding,
            "ceil_mode": args.ceil_mode,
        }
        if args.op.startswith("max"):
            window.update(dilation=args.dilation, with_indices=args.with_indices)
        else:
            if args.dilation != 1:
                raise ValueError(f"{args.op} has no dilation")
            window.update(
                count_include_pad=not args.no_count_include_pad,
                divisor_override=args.divisor_override,
            )
        directions = ["fwd", "bwd", "double_bwd"] if args.direction == "all" else [args.direction]
        examples = [
            {"op": args.op, "input_shape": tuple(shape), "direction": d, **window}
            for d in directions
        ]
    dtypes = {"float16", "bfloat16", "float32", "float64"}
    if args.dtype not in dtypes:
        raise ValueError(f"unknown dtype {args.dtype!r}; choose from {', '.join(sorted(dtypes))}")
    import torch

    layout = "channels_last" if args.channels_last else "channels_first"
    return [
        {**e, "dtype": getattr(torch, args.dtype), "layout": layout, "arch": arch}
        for arch in args.arch or ["sm_80", "sm_90a"]
        for e in examples
    ]


def _inspect(args) -> int:
    try:
        calls = _inspect_calls(args)
        if args.op is not None and args.op not in GLOBAL_OPS:  # check the window first
            from .. import aot

            window = {k: v for k, v in calls[0].items() if k in _WINDOW_KEYS}
            aot.op_spec(args.op, **window)
    except (ValueError, TypeError, RuntimeError) as e:
        print(f"tgpool inspect: {e}", file=sys.stderr)
        return 2
    from .. import aot

    results = aot.inspect_many(calls, return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    for e in failed:
        print(f"tgpool inspect: {e}", file=sys.stderr)
    reports = [r for rs in results if not isinstance(rs, Exception) for r in rs]
    print(aot.format_table(reports))
    spilled = [r for r in reports if r.spill_bytes]
    for r in spilled:
        print(
            f"tgpool inspect: {r.kernel} on {r.arch} spills {r.spill_bytes} bytes per thread",
            file=sys.stderr,
        )
    return 1 if failed or (spilled and args.fail_on_spill) else 0


_WINDOW_KEYS = (
    "kernel_size",
    "stride",
    "padding",
    "dilation",
    "ceil_mode",
    "count_include_pad",
    "divisor_override",
)


def _list(args) -> int:
    from ..aot.families import FAMILIES, ops

    print("ops:")
    for op in ops():
        print(f"  {op}")
    print("kernel families (templates/<family>.py.jinja):")
    width = max(len(name) for name in FAMILIES)
    for f in FAMILIES.values():
        print(f"  {f.name.ljust(width)}  {f.description}")
        print(f"  {' ' * width}  ops: {', '.join(f.ops)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Triton 3.9 warns on every compile that this default will change; keeping today's default
    # (fusion on, as the tests run) keeps the command's stderr to its own one-line messages.
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    if hasattr(args, "check"):
        args.check(parser, args)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
