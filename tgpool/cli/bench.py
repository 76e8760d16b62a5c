"""``tgpool bench``: the benchmark suite (bench/cases.py) against its peers (bench/run.py),
written as CSV, markdown and PNG (bench/report.py).

Exit codes as in cli/commands.py: 0 on success, 1 when tgpool's result differs from a peer's or
its kernels did not run, 2 on usage errors and without a GPU (unless --tiny), with a one-line
reason.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

NO_GPU = (
    "tgpool bench: no CUDA GPU (torch.cuda.is_available() is False); `tgpool bench --tiny` runs "
    "the harness on tiny shapes through the Triton interpreter (not a timing)."
)


def add_parser(sub) -> None:
    from ..bench import cases as bench_cases
    from ..bench import run as bench_run

    p = sub.add_parser(
        "bench",
        help="benchmark real layer shapes against ATen, torch.compile and the heuristic",
        description="Time tgpool on real layer shapes (ResNet stem, CNN head, VGG, SPPF, video, "
        "DenseNet, adaptive 7x7, masked text max, long sequence, GeM) against ATen eager, "
        "torch.compile (default and max-autotune) and tgpool's heuristic configs; append a CSV "
        "under --out, write a PNG plot and print a markdown table. Needs a CUDA GPU, except "
        "with --tiny.",
    )
    p.add_argument(
        "--out", default="benchmarks/results", help="output folder (default benchmarks/results)"
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny shapes through the Triton interpreter on the CPU: checks the harness, "
        "not a timing",
    )
    names = [c.name for c in bench_cases.CASES]
    p.add_argument("--case", action="append", choices=names, help="repeatable (default: all)")
    p.add_argument("--dtype", action="append", choices=list(bench_run.DTYPES))
    p.add_argument("--layout", action="append", choices=list(bench_cases.LAYOUTS))
    p.add_argument("--direction", action="append", choices=list(bench_run.DIRECTIONS))
    p.add_argument(
        "--no-max-autotune", action="store_true", help="skip the max-autotune peer (slow compiles)"
    )
    p.set_defaults(run=_bench)


def _options(args):
    from ..bench.run import Options

    opts = Options(tiny=args.tiny, max_autotune=not args.no_max_autotune)
    if args.tiny and not args.dtype:
        opts.dtypes = ("float32",)  # keeps the interpreter run short
    for name, field in (("case", "cases"), ("dtype", "dtypes"), ("layout", "layouts")):
        if getattr(args, name):
            setattr(opts, field, tuple(getattr(args, name)))
    if args.direction:
        opts.directions = tuple(args.direction)
    return opts


def _reexec_interpreted(argv: list[str]) -> None:
    """Triton fixes interpreter mode when a kernel is created; run again with it on (as demo)."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", "tgpool", *argv], env)


def _bench(args) -> int:
    import torch

    from .. import runtime
    from ..bench import report as bench_report
    from ..bench import run as bench_run

    if args.tiny and not runtime.interpreter_enabled():
        _reexec_interpreted(sys.argv[1:])
    if not args.tiny and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"tgpool bench: cannot create {out}: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows, copy = bench_run.run(
        _options(args),
        progress=lambda s: print(f"[{time.perf_counter() - start:6.1f} s] {s}", file=sys.stderr),
    )
    rows += bench_report.geomean_rows(rows)
    env = bench_report.environment(args.tiny)
    stem = "tgpool-bench-tiny" if args.tiny else "tgpool-bench"
    csv_path = bench_report.write_csv(
        out / f"{stem}.csv", bench_report.csv_records(rows, env, copy)
    )
    png = bench_report.plot(out / f"{stem}.png", rows, env)
    table = bench_report.markdown(rows, env, copy)
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {csv_path}, {out / f'{stem}.md'}, ", end="")
    print(png if png else "no plot (matplotlib is not installed)")
    print(f"bench took {time.perf_counter() - start:.1f} s")
    bad = [r for r in rows if r.matches_peer not in ("", "yes") or r.deterministic == "no"]
    for r in bad:
        print(
            f"tgpool bench: {r.case} {r.dtype} {r.layout} {r.direction}: matches peer: "
            f"{r.matches_peer}, deterministic: {r.deterministic or '-'}",
            file=sys.stderr,
        )
    return 1 if bad else 0
