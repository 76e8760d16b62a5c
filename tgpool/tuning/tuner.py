"""The autotuner: measure candidate launch configs of a planned launch, pick one, remember it.

Generic over kernel families: it sees a launch as a ``window_pool.KernelLaunch`` (family, variant,
problem, args, grid(config), meta(config), kernel()), so any family planned that way is tunable.
Candidates come from ``launch.candidates`` (per-family data, a generic set for new families).

Measurement: ``bench(plan, config) -> ms``, by default Triton's ``do_bench`` (median of the runs,
L2 flushed before each), repeated ``repeats`` times over all candidates in turn; a config's time
is the median of its repeats. Selection (``select``): the configs within ``noise`` of the fastest
tie; the heuristic's config wins a tie, else the simplest (``LaunchConfig.simplicity``), so one
GPU picks the same config run after run. Every candidate's time is stored, and a key tuned again
measures only the candidates it has no time for (``retune`` measures all again).

At run time ``provide`` (the launch provider, see launch.py) looks keys up in the caches
(tune_cache.Store); it tunes a missing key only with ``TGPOOL_AUTOTUNE=1``, once per key, never
while a CUDA graph is being captured nor under torch.compile tracing. During capture a lookup
reads no file (the files as read before capture): tune and warm up before capturing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
import statistics
import time
import warnings
from collections.abc import Callable

import torch
import triton

from .. import codegen, launch, runtime
from ..launch import LaunchConfig
from . import distributed as tune_dist
from .cache import Store, TuneKey, entry_timings, make_entry

#: configs within this fraction of the fastest time tie (then the heuristic, or the simplest, wins)
NOISE = 0.03
REPEATS = 3

Bench = Callable[[object, LaunchConfig], float]


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    name: str
    capability: str  # "9.0"


NO_GPU = DeviceInfo("no GPU", "-")


@functools.cache
def cuda_device_info(index: int) -> DeviceInfo:
    major, minor = torch.cuda.get_device_capability(index)
    return DeviceInfo(torch.cuda.get_device_name(index), f"{major}.{minor}")


@functools.cache
def template_hash(family: str) -> str:
    """sha256 prefix of the family's template and the templates it includes: a template edit
    invalidates its tuned configs."""
    digest = hashlib.sha256()
    pending, seen = [codegen.template_path(family).name], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        path = codegen.template_path(family).with_name(name)
        if not path.exists():
            digest.update(f"<missing {name}>".encode())
            continue
        text = path.read_text()
        digest.update(text.encode())
        pending += re.findall(r"{%-?\s*include\s+[\"']([^\"']+)[\"']", text)
    return digest.hexdigest()[:16]


def variant_text(variant) -> str:
    describe = getattr(variant, "describe", None)
    return describe() if callable(describe) else str(variant)


def bucket(problem: dict) -> tuple[int, int]:
    """(outer, inner) rounded up to powers of two: sizes that share a bucket share a config."""
    return (launch.next_pow2(problem.get("outer", 1)), launch.next_pow2(problem.get("inner", 1)))


def _tensors(plan) -> list[torch.Tensor]:
    return [a for a in getattr(plan, "args", ()) if isinstance(a, torch.Tensor)]


def _dtype(variant, problem: dict, plan) -> str:
    found = problem.get("dtype") or getattr(variant, "dtype", None)
    if not found and _tensors(plan):
        found = str(_tensors(plan)[0].dtype).removeprefix("torch.")
    return str(found or "")


def make_key(family: str, variant, problem: dict, device: DeviceInfo, plan=None) -> TuneKey:
    return TuneKey(
        gpu=device.name,
        capability=device.capability,
        triton=triton.__version__,
        family=family,
        template=template_hash(family),
        variant=variant_text(variant),
        dtype=_dtype(variant, problem, plan),
        layout=str(problem.get("layout") or getattr(variant, "layout", "") or ""),
        bucket=bucket(problem),
    )


def plan_key(plan, device: DeviceInfo) -> TuneKey:
    return make_key(plan.family, plan.variant, plan.problem, device, plan)


def has_loops(plan) -> bool:
    """Whether the kernel loops over its window at run time (num_stages can matter)."""
    return getattr(plan, "ctx", {}).get("loop") == "range"


def candidates_of(plan) -> list[LaunchConfig]:
    """The family's candidates for the plan's problem, and the heuristic's config."""
    heuristic = launch.heuristic(plan.family, plan.variant, plan.problem)
    found = launch.candidates(plan.family, plan.problem, loops=has_loops(plan))
    return found if heuristic in found else [*found, heuristic]


def covers(entry: dict, plan) -> bool:
    """Whether ``entry`` has a time for every current candidate (a candidate added since it was
    tuned makes ``Tuner.ensure`` measure that candidate alone)."""
    return set(candidates_of(plan)) <= set(entry_timings(entry))


def run_config(plan, config: LaunchConfig, kernel=None) -> None:
    """Launch ``plan`` with ``config`` (not counted in runtime.launch_counts)."""
    kernel = kernel or plan.kernel()[0]
    kernel[plan.grid(config)](
        *plan.args, **plan.meta(config), num_warps=config.num_warps, num_stages=config.num_stages
    )


def cuda_bench(plan, config: LaunchConfig) -> float:
    """Median ms of ``plan`` launched with ``config``, L2 flushed before each run (do_bench)."""
    from triton.testing import do_bench

    kernel = plan.kernel()[0]
    run_config(plan, config, kernel)  # compile outside the timed runs
    torch.cuda.synchronize()
    return float(
        do_bench(lambda: run_config(plan, config, kernel), warmup=5, rep=25, return_mode="median")
    )


def select(timings: dict[LaunchConfig, float], heuristic: LaunchConfig, noise: float = NOISE):
    """The winner: among the configs within ``noise`` of the fastest, the heuristic's config if
    it is one of them, else the simplest. Failed configs (inf) never win; the heuristic when
    every config failed."""
    finite = {c: t for c, t in timings.items() if math.isfinite(t)}
    if not finite:
        return heuristic
    best = min(finite.values())
    tied = [c for c, t in finite.items() if t <= best * (1 + noise)]
    return heuristic if heuristic in tied else min(tied, key=LaunchConfig.simplicity)


@dataclasses.dataclass
class Result:
    """One tuned (or looked-up) key, with what ``tgpool tune``'s table prints."""

    key: TuneKey
    plan: object
    config: LaunchConfig | None  # None: skipped (time budget)
    heuristic: LaunchConfig
    timings: dict
    source: str  # "tuned", "user", "shipped", "skipped"

    @property
    def speedup(self) -> float | None:
        """Heuristic time over chosen time (None when either was not measured)."""
        chosen = self.timings.get(self.config)
        base = self.timings.get(self.heuristic)
        if not chosen or not base or not math.isfinite(chosen) or not math.isfinite(base):
            return None
        return base / chosen


class Tuner:
    """Tunes planned launches and stores the entries. Everything is injectable: ``bench`` (tests
    pass deterministic functions), ``device``, ``store``, ``node`` (the host name that groups
    ranks into nodes) and ``clock`` (the time budget's)."""

    def __init__(
        self,
        bench: Bench | None = None,
        *,
        repeats: int = REPEATS,
        noise: float = NOISE,
        device: DeviceInfo | None = None,
        store: Store | None = None,
        node: Callable[[], str] = tune_dist.node_name,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.bench = bench or cuda_bench
        self.repeats = repeats
        self.noise = noise
        self.device = device
        self.store = store or Store()
        self.node = node
        self.clock = clock

    def device_for(self, plan) -> DeviceInfo:
        if self.device is not None:
            return self.device
        cuda = [t for t in _tensors(plan) if t.device.type == "cuda"]
        return cuda_device_info(cuda[0].device.index or 0) if cuda else NO_GPU

    def measure(self, key: TuneKey, plan, known: dict | None = None) -> dict:
        """Tune one key: time the candidates ``known`` (config -> ms) lacks; returns its entry."""
        heuristic = launch.heuristic(plan.family, plan.variant, plan.problem)
        known = dict(known or {})
        todo = [c for c in candidates_of(plan) if c not in known]
        samples: dict = {c: [] for c in todo}
        for _ in range(self.repeats):
            for c in todo:
                samples[c].append(self._time(plan, c))
        timings = {**known, **{c: statistics.median(t) for c, t in samples.items()}}
        return make_entry(key, select(timings, heuristic, self.noise), heuristic, timings)

    def _time(self, plan, config: LaunchConfig) -> float:
        try:
            return float(self.bench(plan, config))
        except Exception:  # noqa: BLE001  (a config that cannot compile or launch loses)
            return math.inf

    def ensure(self, plans, *, retune=False, budget=None, progress=None) -> list[Result]:
        """A Result per distinct key of ``plans`` (in first-seen order): cached entries where
        they exist (unless ``retune``), measured and stored otherwise. ``budget``: seconds after
        which no further key is started; ``progress(done, total, label)`` after each key.
        Collective under torch.distributed (see tune_dist)."""
        keyed: dict[str, tuple[TuneKey, object]] = {}
        for plan in plans:
            key = plan_key(plan, self.device_for(plan))
            keyed.setdefault(key.text, (key, plan))
        held, sources = {}, {}
        for text, (key, plan) in keyed.items():
            hit = None if retune else self.store.exact(key)
            if hit is not None and covers(hit[1], plan):
                held[text], sources[text] = hit[1], hit[2]
        deadline = None if budget is None else self.clock() + budget

        def tune(texts) -> dict:
            out = {}
            for n, text in enumerate(texts):
                if deadline is not None and self.clock() >= deadline:
                    break
                key, plan = keyed[text]
                old = None if retune else self.store.exact(key)
                known = {} if old is None else entry_timings(old[1])
                out[text] = self.measure(key, plan, known)
                if progress is not None:
                    progress(n + 1, len(texts), f"{key.family} {key.variant}")
            return out

        missing = [t for t in keyed if t not in held]
        if tune_dist.active():
            import torch.distributed as dist

            settled = tune_dist.settle(dist.get_rank(), self.node(), set(keyed), held, tune)
            fresh = {t: e for t, e in settled.items() if t in keyed and t not in held}
            changed = {t: e for t, e in settled.items() if t in held and e != held[t]}
            self.store.store({**fresh, **changed})
            tuned = set(fresh) | set(changed)
            held = {t: e for t, e in settled.items() if t in keyed}
        else:
            fresh = tune(missing)
            self.store.store(fresh)
            tuned = set(fresh)
            held.update(fresh)
        results = []
        for text, (key, plan) in keyed.items():
            heuristic = launch.heuristic(plan.family, plan.variant, plan.problem)
            entry = held.get(text)
            if entry is None:
                results.append(Result(key, plan, None, heuristic, {}, "skipped"))
                continue
            source = "tuned" if text in tuned else sources.get(text, "user")
            config = launch.LaunchConfig(**entry["config"])
            results.append(Result(key, plan, config, heuristic, entry_timings(entry), source))
        forget()
        return results


# --- the launch provider --------------------------------------------------------------------------

_memo: dict = {}
_default: Tuner | None = None


def default_tuner() -> Tuner:
    global _default
    if _default is None:
        _default = Tuner()
    return _default


def forget() -> None:
    """Drop the per-process memo of looked-up configs (after tuning, or a cache change), and
    with it every launch plan made with them (launch.configs_changed)."""
    _memo.clear()
    launch.configs_changed()


def autotune_enabled() -> bool:
    return runtime.flag("TGPOOL_AUTOTUNE")


def on_real_cuda(plan) -> bool:
    """Whether every tensor of the plan is a real CUDA tensor (no fake, meta or CPU ones)."""
    tensors = _tensors(plan)
    if not tensors or any(t.device.type != "cuda" for t in tensors):
        return False
    return not any(type(t).__name__ == "FakeTensor" for t in tensors)


def capturing() -> bool:
    """Whether a CUDA graph is being captured on the current stream."""
    try:
        return torch.cuda.is_current_stream_capturing()
    except RuntimeError:  # a torch built without CUDA
        return False


def may_tune_now(plan) -> bool:
    """Not while a CUDA graph is captured (tuning launches, allocates, synchronises and writes
    files), not while torch.compile traces, and only on real CUDA tensors."""
    if not on_real_cuda(plan):
        return False
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and getattr(compiler, "is_compiling", lambda: False)():
        return False
    return not capturing()


def provide(family: str, variant, problem: dict, plan=None) -> LaunchConfig | None:
    """launch.py's default provider: the cached config of a CUDA launch (user cache, shipped
    file, nearest bucket), tuned first with TGPOOL_AUTOTUNE=1; None (the heuristic) otherwise.
    Never raises: a cache problem must not fail a launch."""
    device = launch_device(plan)
    if device is None:
        return None
    try:
        memo_key = (family, variant, device, bucket(problem), _dtype(variant, problem, plan))
        if memo_key in _memo:
            return _memo[memo_key]
        tuner = default_tuner()
        key = make_key(family, variant, problem, device, plan)
        if autotune_enabled() and may_tune_now(plan):
            result = tuner.ensure([plan])[0]
            config = result.config
        else:
            # while a graph is captured: the files as read before capture, no file system access
            hit = tuner.store.lookup(key, reread=not capturing())
            config = hit[0] if hit else None
            if autotune_enabled():  # tuning was deferred: look again at the next launch
                launch.volatile()  # so no launch plan may keep this config
                return config
    except Exception as e:  # noqa: BLE001
        warnings.warn(
            f"tgpool: autotune cache lookup failed ({e}); using the heuristic",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    _memo[memo_key] = config
    return config


def cached_config(family: str, variant, problem: dict) -> LaunchConfig | None:
    """The provider tgpool.tuning registers with launch.py: ``provide`` for the launch being
    planned (``launch.current_plan()``)."""
    return provide(family, variant, problem, launch.current_plan())


def launch_device(plan) -> DeviceInfo | None:
    """The GPU a planned launch runs on; None for the interpreter, meta tensors, or no plan."""
    tensors = _tensors(plan)
    if not tensors or tensors[0].device.type != "cuda":
        return None
    return cuda_device_info(tensors[0].device.index or 0)
