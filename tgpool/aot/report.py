"""What ahead-of-time inspection reports: one ``KernelReport`` per compiled kernel, the widths of
its global accesses read from the PTX, and the text table ``tgpool inspect`` prints."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter


@dataclasses.dataclass(frozen=True)
class KernelReport:
    """One kernel compiled for one arch: resources from its cubin, access widths from its PTX."""

    arch: str
    op: str  # e.g. "max_pool2d k3 s2 p1 fwd"
    kernel: str
    layout: str
    dtype: str
    shape: tuple  # the op's input shape (N, C, *spatial)
    config: str  # LaunchConfig.describe()
    registers: int
    stack: int  # bytes of stack frame per thread (where ptxas spills registers)
    local: int  # bytes of local memory per thread
    shared: int  # bytes (Triton's dynamic shared memory plus any static)
    loads: dict  # bits -> number of ld.global instructions of that width
    stores: dict  # bits -> number of st.global instructions
    blocked_layouts: tuple  # the TTGIR #ttg.blocked encodings (sizePerThread ...)
    signature: dict
    constexprs: dict
    source: str  # the generated kernel file
    asm: dict = dataclasses.field(repr=False, compare=False)  # "ttgir", "ptx" text, "cubin" bytes

    @property
    def spill_bytes(self) -> int:
        """Per-thread bytes of stack frame and local memory: 0 when nothing spills."""
        return self.stack + self.local

    def load_bits(self, min_width=0) -> int:
        """Bits loaded per thread by the load instructions at least ``min_width`` wide (static:
        each instruction once, loops not unrolled count once)."""
        return sum(w * n for w, n in self.loads.items() if w >= min_width)


_ACCESS = re.compile(r"(?<![\w.])(ld|st)\.global((?:\.[A-Za-z0-9_:]+)*)")


def global_access_widths(ptx: str) -> tuple[Counter, Counter]:
    """(loads, stores): instruction counts by width in bits of the global loads and stores in
    ``ptx``, whatever their predicates, cache qualifiers (``.nc``, ``.L1::evict_last``,
    ``.L2::cache_hint``, ``.L2::128B``) or vector size."""
    found = {"ld": Counter(), "st": Counter()}
    for line in ptx.splitlines():
        code = line.split("//", 1)[0]
        for kind, qualifiers in _ACCESS.findall(code):
            vector, bits = 1, None
            for q in qualifiers.split(".")[1:]:
                if re.fullmatch(r"v\d+", q):
                    vector = int(q[1:])
                elif re.fullmatch(r"[bsuf]\d+", q):
                    bits = int(q[1:])
            if bits is not None:
                found[kind][vector * bits] += 1
    return found["ld"], found["st"]


def _widths(counts: dict) -> str:
    return " ".join(f"{w}x{n}" for w, n in sorted(counts.items(), reverse=True)) or "-"


def format_table(reports) -> str:
    """A fixed-width text table, one row per compiled kernel; widths read "bits x instructions"."""
    head = (
        "arch",
        "op",
        "kernel",
        "layout",
        "dtype",
        "input",
        "config",
        "regs",
        "spill",
        "smem",
        "loads (bits x n)",
        "stores (bits x n)",
    )
    rows = [head] + [
        (
            r.arch,
            r.op,
            r.kernel,
            r.layout,
            r.dtype,
            "x".join(map(str, r.shape)),
            r.config,
            str(r.registers),
            str(r.spill_bytes),
            str(r.shared),
            _widths(r.loads),
            _widths(r.stores),
        )
        for r in reports
    ]
    size = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(n) for c, n in zip(row, size, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * n for n in size))
    return "\n".join(lines)
