"""Launch configs: block sizes, num_warps and num_stages for one kernel launch.

This is the one place that decides them. ``config_for`` asks the registered provider first (the
autotuner plugs in here with ``set_provider``) and falls back to the heuristic below.

Heuristic: pooling is memory-bound, so a program should move a tile of about ``TILE_ELEMENTS``
elements with one 16-byte vector per thread (8 x 16-bit), which lets Triton issue 128-bit accesses
along the contiguous dimension. The tile's contiguous side is as wide as the data allows
(channels for channels-last, output columns times stride for channels-first); the other side
fills the rest.
"""

from __future__ import annotations

import dataclasses
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


#: (family, variant, problem) -> LaunchConfig | None; the autotuner registers one.
Provider = Callable[[str, object, dict], "LaunchConfig | None"]
_provider: Provider | None = None


def set_provider(provider: Provider | None) -> None:
    """Install (or with None, remove) the function consulted before the heuristic."""
    global _provider
    _provider = provider


def next_pow2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


ITEM_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8}
#: the widest global access, in bytes
VECTOR_BYTES = 16
#: elements per thread where the accesses cannot be vectorised (strided loads): fewer registers
SCALAR_PER_THREAD = 4


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


def config_for(family: str, variant, problem: dict) -> LaunchConfig:
    if _provider is not None:
        chosen = _provider(family, variant, problem)
        if chosen is not None:
            return chosen
    return heuristic(family, variant, problem)
