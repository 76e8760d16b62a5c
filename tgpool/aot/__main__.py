"""``python -m tgpool.aot OP SHAPE -k K``: compile one op's kernels for sm_80 / sm_90a and print
the report table (``tgpool inspect`` is the full command)."""

from __future__ import annotations

from ..spec import DTYPES
from . import _LAYOUTS, ARCHS, DIRECTIONS, format_table, inspect_op


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m tgpool.aot",
        description="compile one op's kernels ahead of time and report on them",
    )
    p.add_argument("op", help="max_pool2d, avg_pool3d, ...")
    p.add_argument("shape", help="batched input shape, e.g. 8,64,56,56")
    p.add_argument("--dtype", default="float16", choices=sorted(DTYPES.values()))
    p.add_argument("--layout", default="channels_first", choices=sorted(_LAYOUTS))
    p.add_argument("--direction", default="fwd", choices=DIRECTIONS)
    p.add_argument("--arch", nargs="+", default=sorted(ARCHS), choices=sorted(ARCHS))
    p.add_argument("-k", "--kernel-size", type=int, required=True)
    p.add_argument("-s", "--stride", type=int)
    p.add_argument("-p", "--padding", type=int, default=0)
    p.add_argument("--with-indices", action="store_true")
    p.add_argument("--ttgir", action="store_true", help="also print each kernel's TTGIR")
    a = p.parse_args(argv)
    dtype = {v: k for k, v in DTYPES.items()}[a.dtype]
    shape = tuple(int(s) for s in a.shape.split(","))
    extra = {"with_indices": a.with_indices} if a.op.startswith("max") else {}
    reports = [
        r
        for arch in a.arch
        for r in inspect_op(
            a.op,
            shape,
            dtype,
            a.layout,
            arch=arch,
            direction=a.direction,
            kernel_size=a.kernel_size,
            stride=a.stride,
            padding=a.padding,
            **extra,
        )
    ]
    print(format_table(reports))
    for r in reports if a.ttgir else ():
        print(f"\n// {r.arch} {r.kernel} ({r.source})\n{r.asm['ttgir']}")


if __name__ == "__main__":
    main()
