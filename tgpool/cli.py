"""The ``tgpool`` command line: ``tgpool demo`` and ``tgpool codegen``.

Exit codes: 0 on success, 1 when a check fails, 2 on usage errors (argparse's convention).
"""

from __future__ import annotations

import argparse
import sys

OPS = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d"]


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

    from . import codegen, window_pool
    from .spec import CHANNELS_FIRST, CHANNELS_LAST, DTYPES, window_spec

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
    p.add_argument("--kernel-size", type=_ints, required=True, help="int or comma-separated ints")
    p.add_argument("--stride", type=_ints, default=None, help="default: the kernel size")
    p.add_argument("--padding", type=_ints, default=0)
    p.add_argument("--dilation", type=_ints, default=1, help="max pooling only")
    p.add_argument("--ceil-mode", action="store_true")
    p.add_argument("--no-count-include-pad", action="store_true", help="avg pooling only")
    p.add_argument("--divisor-override", type=int, default=None, help="avg pooling only")
    p.add_argument(
        "--dtype", default="float32", help="float16, bfloat16, float32 or float64 (default float32)"
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="the channels-last variant (default: channels-first)",
    )
    p.add_argument("--with-indices", action="store_true", help="max pooling writing its argmax")
    p.add_argument("--backward", action="store_true", help="the backward kernel")
    p.set_defaults(run=_codegen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
