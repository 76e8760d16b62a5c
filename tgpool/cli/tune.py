"""``tgpool tune`` and ``tgpool cache``: the command line of the autotuner (tgpool/tuning/tuner.py).

Exit codes as in cli/commands.py: 0 on success, 2 on usage errors, a missing GPU included, with a
one-line reason on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..tuning import cache as tune_cache

NO_GPU = (
    "tgpool tune: no CUDA GPU (torch.cuda.is_available() is False); tuning times kernels on the "
    "GPU it tunes for. `tgpool tune --dry-run` lists what would be tuned."
)


def _fail(command: str, message) -> int:
    print(f"tgpool {command}: {message}", file=sys.stderr)
    return 2


def table(rows: list[tuple], head: tuple) -> str:
    rows = [tuple(str(c) for c in head)] + [tuple(str(c) for c in r) for r in rows]
    size = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(r, size)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * n for n in size))
    return "\n".join(lines)


def _bucket(key) -> str:
    return "x".join(map(str, key.bucket))


def _call(key) -> str:
    return f"{key.family} {key.variant} [{_bucket(key)}]"


class Progress:
    """A one-line progress bar on stderr (a line per step when stderr is not a terminal)."""

    def __init__(self, stream=None, width: int = 24):
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, done: int, total: int, label: str) -> None:
        filled = self.width * done // max(total, 1)
        bar = f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{total} {label}"
        if self.tty:
            end = "\n" if done == total else ""
            self.stream.write(f"\r\033[K{bar}{end}")
        else:
            self.stream.write(bar + "\n")
        self.stream.flush()


def _workload(args):
    from ..tuning import workload as tune_workload

    if args.model:
        if not args.input_shape:
            raise tune_workload.WorkloadError("--model needs --input-shape, e.g. 8,3,224,224")
        try:
            shape = tuple(int(s) for s in args.input_shape.split(","))
        except ValueError:
            raise tune_workload.WorkloadError(
                f"--input-shape expects comma-separated ints, got {args.input_shape!r}"
            ) from None
        return tune_workload.model_workload(args.model, shape, args.dtype, args.channels_last)
    return tune_workload.calls_workload(tune_workload.load_calls(args.shapes), args.dtype)


def _dry_run(workload) -> int:
    import torch

    from .. import launch
    from ..tuning import tuner
    from ..tuning import workload as tune_workload

    plans = tune_workload.record_planned(workload)
    device = tuner.cuda_device_info(0) if torch.cuda.is_available() else tuner.NO_GPU
    store, counts, first = tune_cache.Store(), {}, {}
    for plan in plans:
        key = tuner.plan_key(plan, device)
        counts[key.text] = counts.get(key.text, 0) + 1
        first.setdefault(key.text, (key, plan))
    rows = []
    for text, (key, plan) in first.items():
        hit = store.lookup(key)
        if hit:
            now = f"{hit[0].describe()} ({hit[2]})"
        else:
            heuristic = launch.heuristic(plan.family, plan.variant, plan.problem)
            now = f"{heuristic.describe()} (heuristic)"
        rows.append((_call(key), counts[text], now))
    print(f"would tune {len(rows)} launch configs for {device.name} (planned on meta tensors):")
    print(table(rows, ("call", "launches", "config now")))
    return 0


def _tune(args) -> int:
    import torch

    from ..tuning import tuner
    from ..tuning import workload as tune_workload

    try:
        workload = _workload(args)
        if args.dry_run:
            return _dry_run(workload)
    except tune_workload.WorkloadError as e:
        return _fail("tune", e)
    if not torch.cuda.is_available():
        print(NO_GPU, file=sys.stderr)
        return 2
    plans = tune_workload.record(workload, "cuda")
    tune = tuner.Tuner(repeats=args.repeats)
    results = tune.ensure(
        plans, retune=args.force, budget=args.budget, progress=None if args.quiet else Progress()
    )
    rows = []
    for r in results:
        speedup = f"{r.speedup:.2f}x" if r.speedup else "-"
        config = r.config.describe() if r.config else "- (time budget)"
        rows.append((_call(r.key), config, r.heuristic.describe(), speedup, r.source))
    print(table(rows, ("call", "config", "heuristic", "speedup", "from")))
    if args.export:
        hits = {r.key.text: tune.store.exact(r.key) for r in results}
        chosen = {text: hit[1] for text, hit in hits.items() if hit is not None}
        tune_cache.write_file(Path(args.export), chosen)
        print(f"wrote {len(chosen)} entries to {args.export}")
    return 0


def _cache(args) -> int:
    # A cache folder that cannot be read or written (read-only, full disk) is a usage problem of
    # this command: one line on stderr and exit code 2, never a traceback; files are untouched.
    try:
        return _cache_action(args)
    except OSError as e:
        return _fail(f"cache {args.action}", e)


def _cache_action(args) -> int:
    store = tune_cache.Store()
    if args.action == "show":
        sources = [("user", store.user)]
        if args.shipped:
            try:
                folder = tune_cache.autotune_cache_dir()
                sources += [("shipped", p) for p in sorted(folder.glob("*.json"))]
            except FileNotFoundError:
                pass
        for name, path in sources:
            found = tune_cache.valid(tune_cache.read_entries(path), path)
            print(f"{name}: {path} ({len(found)} entries)")
            rows = [
                (k.gpu, k.triton, _call(k), c.describe())
                for k, c, _ in sorted(found.values(), key=lambda v: v[0].text)
            ]
            if rows:
                print(table(rows, ("gpu", "triton", "call", "config")))
        return 0
    if args.action == "export":
        entries = tune_cache.read_entries(store.user)
        if args.gpu:
            entries = {t: e for t, e in entries.items() if e.get("gpu") == args.gpu}
        tune_cache.write_file(Path(args.file), entries)
        print(f"wrote {len(entries)} entries to {args.file}")
        return 0
    if args.action == "import":
        path = Path(args.file)
        try:
            entries = tune_cache.parse(path.read_text(), path)
        except (OSError, ValueError) as e:
            return _fail("cache import", e)
        usable = tune_cache.valid(entries, path)
        tune_cache.merge_into(store.user, {t: entries[t] for t in usable})
        print(f"imported {len(usable)} of {len(entries)} entries into {store.user}")
        return 0
    count = len(tune_cache.read_entries(store.user))  # clear
    if store.user.exists():
        tune_cache.merge_into(store.user, {}, replace=True)
    print(f"cleared {count} entries from {store.user}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "tune",
        help="tune the launch configs of a shapes file or a model on this GPU",
        description="Tune the pooling launches of a shapes file (a JSON list of calls, see "
        "README) or of one forward and backward of a model, on this GPU, and store the "
        "configs in the user cache. Needs a CUDA GPU, except with --dry-run.",
    )
    p.add_argument("shapes", nargs="?", help="JSON list of pooling calls")
    p.add_argument("--model", help="module:factory returning an nn.Module using tgpool's pooling")
    p.add_argument("--input-shape", help="the model's input shape, e.g. 8,3,224,224")
    p.add_argument("--channels-last", action="store_true", help="model and input channels-last")
    p.add_argument("--dtype", default="float16", help="input dtype (default float16)")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="start no new tuning after this many seconds",
    )
    p.add_argument("--repeats", type=int, default=3, help="timing rounds per config (default 3)")
    p.add_argument("--force", action="store_true", help="measure again what is cached")
    p.add_argument("--export", metavar="FILE", help="also write the configs in the shipped format")
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be tuned (no GPU needed)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=_tune, check=_check_tune)

    p = sub.add_parser(
        "cache",
        help="show, export, import or clear tuned configs",
        description="The user's autotune cache (under TGPOOL_CACHE_DIR, default "
        "~/.cache/tgpool): show it (--shipped: also the files shipped with tgpool), export it "
        "in the shipped format, import such a file, or clear it.",
    )
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("show", help="list the cached configs")
    a.add_argument("--shipped", action="store_true", help="also the shipped files")
    a = actions.add_parser("export", help="write the user cache in the shipped format")
    a.add_argument("file")
    a.add_argument("--gpu", help="only this GPU's entries (its torch.cuda.get_device_name)")
    a = actions.add_parser("import", help="merge a file in the shipped format into the cache")
    a.add_argument("file")
    actions.add_parser("clear", help="remove every entry of the user cache")
    p.set_defaults(run=_cache)


def _check_tune(parser: argparse.ArgumentParser, args) -> None:
    if bool(args.shapes) == bool(args.model):
        parser.error("tune: give a shapes file or --model (one of them)")
    if args.repeats < 1:
        parser.error("tune: --repeats must be at least 1")
