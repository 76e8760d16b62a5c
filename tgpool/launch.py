"""Launch configs: block sizes, num_warps and num_stages for one kernel launch.

This is the one place that decides them. ``config_for`` asks the registered provider first and
falls back to the heuristic below. The default provider is the autotuner's cache lookup
(tgpool/tuning/tuner.py, which registers itself here when tgpool.tuning is imported: this module
never imports tuning): tuned or shipped configs for CUDA launches, nothing (so the heuristic)
for the interpreter and for problems never tuned. ``set_provider`` replaces it (tests force
block sizes).

``SEARCH_SPACES`` is the tuner's candidate data, one entry per kernel family; a family without an
entry is tuned over ``GENERIC_SPACE``, so a new family is tunable before anyone writes its entry.

Heuristic: pooling is memory-bound, so a program should move a tile of about ``TILE_ELEMENTS``
elements with one 16-byte vector per thread (8 x 16-bit), which lets Triton issue 128-bit accesses
along the contiguous dimension. The tile's contiguous side is as wide as the data allows
(channels for channels-last, output columns times stride for channels-first); the other side
fills the rest.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from collections.abc import Callable

TILE_ELEMENTS = 1024
MAX_CONTIGUOUS = 128  # elements along the contiguous side of a tile


@dataclasses.dataclass(frozen=True)
class LaunchConfig:
    block_outer: int  # rows (channels-first) or positions (channels-last)
    block_inner: int  # columns (channels-first) or channels (channels-last)
    num_warps: int = 4
    num_stages: int = 1

    def describe(self) -> str:
        return f"{self.block_outer}x{self.block_inner} w{self.num_warps} s{self.num_stages}"

    @classmethod
    def parse(cls, text: str) -> LaunchConfig:
        """The inverse of ``describe`` (tuning caches key per-config timings by it)."""
        m = re.fullmatch(r"(\d+)x(\d+) w(\d+) s(\d+)", text.strip())
        if m is None:
            raise ValueError(f"not a launch config: {text!r} (expected e.g. '16x64 w4 s1')")
        return cls(*(int(g) for g in m.groups()))

    def simplicity(self) -> tuple:
        """Sort key, simplest first: fewer stages, fewer warps, smaller tiles. Ties between
        equally fast configs go to the simplest, so tuning is repeatable."""
        tile = self.block_outer * self.block_inner
        return (self.num_stages, self.num_warps, tile, self.block_outer, self.block_inner)


#: (family, variant, problem) -> LaunchConfig | None
Provider = Callable[[str, object, dict], "LaunchConfig | None"]


_provider: Provider | None = None  # tgpool.tuning installs the tuner's cache lookup on import
_plan: contextvars.ContextVar = contextvars.ContextVar("tgpool_plan", default=None)


_epoch = 0
_volatile = 0


def set_provider(provider: Provider | None) -> None:
    """Install (or with None, remove) the function consulted before the heuristic."""
    global _provider
    _provider = provider
    configs_changed()


def configs_changed() -> None:
    """Say that a config may have changed (a tuned config stored, a cache cleared, the provider
    replaced): launch plans made before (tgpool/plans.py) are not used again."""
    global _epoch
    _epoch += 1


def config_epoch() -> int:
    """Changes whenever ``configs_changed`` is called: part of every launch plan's key."""
    return _epoch


def volatile() -> None:
    """Say that the config just chosen holds for this launch only (tuning was deferred): the call
    being planned must not be replayed from a plan."""
    global _volatile
    _volatile += 1


def volatile_count() -> int:
    return _volatile


def get_provider() -> Provider | None:
    return _provider


def current_plan():
    """The launch (window_pool.KernelLaunch) whose config the provider is choosing, or None. A
    provider reads it to re-run the launch with other configs (tuning at a first call) or to
    record the launch (``tgpool tune`` recording a model's pooling calls)."""
    return _plan.get()


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


ITEM_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
#: the widest global access, in bytes
VECTOR_BYTES = 16
#: elements per thread where the accesses cannot be vectorised (strided loads): fewer registers
SCALAR_PER_THREAD = 4


def misaligned(t, vector_bytes: int = VECTOR_BYTES) -> bool:
    """Whether ``t``'s first element is off a ``vector_bytes`` boundary. Meta tensors (planning
    ahead of time) count as aligned; a fake or functional tensor (traced by torch.compile, which
    then launches the kernel itself) by its storage offset, its base taken as aligned, as
    Inductor's own buffers are and as it makes the graph's inputs be."""
    if t.device.type == "meta":
        return False
    try:
        return t.data_ptr() % vector_bytes != 0
    except RuntimeError:  # no data: a FakeTensor or FunctionalTensor
        return t.storage_offset() * t.element_size() % vector_bytes != 0


def heuristic(family: str, variant, problem: dict) -> LaunchConfig:
    """problem: ``inner`` (extent of the contiguous side), ``outer`` (extent of the other side),
    ``inner_step`` (input elements per inner element, the stride for segment loads), ``dtype``,
    and ``vector`` (False when the tile's loads are strided, so wide accesses are moot).

    Warps are chosen so each thread holds one 16-byte vector of the tile (8 x 16-bit, 4 x 32-bit)
    where accesses can be vectorised, else SCALAR_PER_THREAD elements."""
    step = problem.get("inner_step", 1)
    inner = min(next_pow2(problem["inner"]), max(MAX_CONTIGUOUS // step, 1))
    outer = min(next_pow2(problem["outer"]), max(TILE_ELEMENTS // (inner * step), 1))
    elements = inner * outer * step
    if problem.get("vector", True):
        per_thread = VECTOR_BYTES // ITEM_BYTES.get(problem.get("dtype"), 2)
    else:
        per_thread = SCALAR_PER_THREAD
    warps = max(1, min(8, elements // (32 * per_thread)))
    return LaunchConfig(block_outer=outer, block_inner=inner, num_warps=next_pow2(warps))


def config_for(family: str, variant, problem: dict, plan=None) -> LaunchConfig:
    """The config of one launch; ``plan`` (the KernelLaunch itself) is what ``current_plan``
    returns while the provider runs."""
    if _provider is not None:
        token = _plan.set(plan)
        try:
            chosen = _provider(family, variant, problem)
        finally:
            _plan.reset(token)
        if chosen is not None:
            return chosen
    return heuristic(family, variant, problem)


# --- tuning candidates ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """Candidate configs of one family: every combination of these values that ``candidates``
    keeps for a problem."""

    outer: tuple[int, ...]  # block_outer values
    inner: tuple[int, ...]  # block_inner values
    warps: tuple[int, ...] = (1, 2, 4, 8)
    stages: tuple[int, ...] = (1,)  # unrolled windows: nothing for the pipeliner to overlap
    loop_stages: tuple[int, ...] = (1, 2, 3)  # kernels with run-time loops over the window
    min_tile: int = 256  # elements per program: fewer leaves bandwidth on the table
    max_tile: int = 4096  # more spills registers (or starves the grid)
    min_per_thread: int = 2
    max_per_thread: int = 32


_WINDOW_SPACE = SearchSpace(outer=(1, 2, 4, 8, 16, 32, 64), inner=(8, 16, 32, 64, 128, 256))

#: family -> its search space; families not listed use GENERIC_SPACE
SEARCH_SPACES: dict[str, SearchSpace] = {
    "window_pool_fwd": _WINDOW_SPACE,
    "window_pool_bwd": _WINDOW_SPACE,
    # one flat block over outputs: block_outer is unused
    "index_gather": SearchSpace(outer=(1,), inner=(256, 512, 1024, 2048, 4096), max_tile=4096),
}
GENERIC_SPACE = SearchSpace(outer=(1, 2, 4, 8, 16, 32, 64), inner=(16, 32, 64, 128, 256, 512))


def candidates(family: str, problem: dict, *, loops: bool = False) -> list[LaunchConfig]:
    """The configs worth measuring for ``problem`` (see ``heuristic`` for its keys), simplest
    first: tiles no wider than the data along either side, tiles of ``min_tile`` to ``max_tile``
    elements (``inner_step`` input elements per inner element), and ``min_per_thread`` to
    ``max_per_thread`` elements per thread. ``loops``: the kernel loops over its window at run
    time, so software pipelining (num_stages > 1) has something to overlap."""
    space = SEARCH_SPACES.get(family, GENERIC_SPACE)
    step = problem.get("inner_step", 1)
    inner_cap, outer_cap = next_pow2(problem["inner"]), next_pow2(problem["outer"])
    inners = [b for b in space.inner if b <= inner_cap] or [min(space.inner)]
    outers = [b for b in space.outer if b <= outer_cap] or [min(space.outer)]
    largest = max(inners) * max(outers) * step
    found = []
    for o in outers:
        for i in inners:
            tile = o * i * step
            if not min(space.min_tile, largest) <= tile <= space.max_tile:
                continue
            for w in space.warps:
                per_thread = tile / (32 * w)
                if w > 1 and per_thread < space.min_per_thread:
                    continue
                if per_thread > space.max_per_thread:
                    continue
                for s in space.loop_stages if loops else space.stages:
                    found.append(LaunchConfig(o, i, w, s))
    return sorted(set(found), key=LaunchConfig.simplicity)
