"""``tgpool bench``: the benchmark suite (bench/cases.py) against its peers (bench/run.py),
written as CSV, markdown and PNG (bench/report.py).

``tgpool bench --overhead``: host time per eager call of every function family beside ATen's
(bench/overhead.py); on a machine without CUDA through the Triton interpreter, launches stubbed.

Exit codes as in cli/commands.py: 0 on success, 1 when tgpool's result differs from a peer's or its
kernels did not run, 2 on usage errors and without a GPU (unless --tiny or --overhead), with a
one-line reason.
"""

from __future__ import annotations

import contextlib
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
    from ..bench import overhead as bench_overhead
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
    o = p.add_argument_group("host cost per call (--overhead)")
    o.add_argument(
        "--overhead",
        action="store_true",
        help="host us per eager call of every function family (forward; forward with an input "
        "that requires grad; forward + backward) beside ATen's same call, and the geomean ratio; "
        "writes tgpool-overhead[-cpu].csv (appended) and .md under --out. On a GPU: real "
        "launches; without one: through the Triton interpreter, launches stubbed after a warm-up",
    )
    o.add_argument(
        "--quick", action="store_true", help="with --overhead: 3 short rounds (harness check)"
    )
    o.add_argument(
        "--overhead-rounds", type=int, metavar="N", help="with --overhead: rounds (default 7)"
    )
    o.add_argument(
        "--overhead-case",
        action="append",
        choices=[c.name for c in bench_overhead.CASES],
        help="with --overhead: repeatable (default: all)",
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


def _usage_error(args) -> str:
    overhead_only = ("quick", "overhead_rounds", "overhead_case")
    suite_only = ("tiny", "case", "dtype", "layout", "direction", "no_max_autotune")
    if args.overhead:
        given = [n for n in suite_only if getattr(args, n)]
        if given:
            return f"--{given[0].replace('_', '-')} does not apply to --overhead"
        if args.overhead_rounds is not None and args.overhead_rounds < 1:
            return "--overhead-rounds must be at least 1"
        return ""
    given = [n for n in overhead_only if getattr(args, n)]
    return f"--{given[0].replace('_', '-')} needs --overhead" if given else ""


def _out_dir(path: str) -> Path | None:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"tgpool bench: cannot create {out}: {e}", file=sys.stderr)
        return None
    return out


def _overhead(args, out: Path) -> int:
    import torch

    from ..bench import overhead
    from ..bench import report as bench_report

    device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = overhead.Options.quick() if args.quick else overhead.Options()
    opts.device = device
    if args.overhead_rounds:
        opts.rounds = args.overhead_rounds
    if args.overhead_case:
        opts.cases = tuple(args.overhead_case)
    start = time.perf_counter()
    rows = overhead.run(
        opts,
        progress=lambda s: print(f"[{time.perf_counter() - start:6.1f} s] {s}", file=sys.stderr),
    )
    env = overhead.environment(device)
    stem = "tgpool-overhead" if device == "cuda" else "tgpool-overhead-cpu"
    csv_path = bench_report.write_csv(
        out / f"{stem}.csv", overhead.csv_records(rows, env), overhead.CSV_COLUMNS
    )
    table = overhead.table(rows, env, opts)
    if not args.overhead_case:  # tgpool.enable(): routed calls, and what other ops pay
        from .. import runtime
        from ..bench import enable_overhead

        stub = runtime.launches_stubbed if device == "cpu" else contextlib.nullcontext
        table += "\n\n" + enable_overhead.table(enable_overhead.run(opts, stub, device))
    (out / f"{stem}.md").write_text(table + "\n")
    print(table)
    print(f"\nwrote {csv_path}, {out / f'{stem}.md'}")
    print(f"bench --overhead took {time.perf_counter() - start:.1f} s")
    for r in rows:
        if r.error:
            print(f"tgpool bench --overhead: {r.case}: {r.error}", file=sys.stderr)
    return 1 if any(r.error for r in rows) else 0


def _bench(args) -> int:
    import torch

    from .. import runtime
    from ..bench import report as bench_report
    from ..bench import run as bench_run

    usage = _usage_error(args)
    if usage:
        print(f"tgpool bench: {usage}", file=sys.stderr)
        return 2
    interpret = args.tiny or (args.overhead and not torch.cuda.is_available())
    if interpret and not runtime.interpreter_enabled():
        _reexec_interpreted(sys.argv[1:])
    if not interpret and not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    out = _out_dir(args.out)
    if out is None:
        return 2
    if args.overhead:
        return _overhead(args, out)
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
