"""``tgpool bench``'s output: a CSV appended to, a markdown table, and a PNG plot.

Every CSV row carries the run's environment (GPU name, torch, triton and tgpool versions, and the
``timing`` column: "do_bench median, L2 flushed" or "interpreter: not a timing"). Speedups are a
peer's median time over tgpool's (above 1: tgpool is faster); ``best`` is the fastest torch peer.
"GEOMEAN" rows hold, per tgpool variant, the geometric mean of each speedup column.
"""

from __future__ import annotations

import csv
import datetime
import platform
from pathlib import Path

import torch

from . import cases as bench_cases
from .run import NOT_A_TIMING, TGPOOL_PEERS, TORCH_PEERS, Row

SPEEDUP_PEERS = (*TORCH_PEERS, "best")
COLUMNS = (
    "timestamp",
    "gpu",
    "torch",
    "triton",
    "tgpool",
    "timing",
    "case",
    "shape",
    "dtype",
    "layout",
    "direction",
    "peer",
    "backend",
    "median_ms",
    "p20_ms",
    "p80_ms",
    "min_bytes",
    "gbps",
    "copy_gbps",
    "pct_of_copy",
    *(f"speedup_vs_{p}" for p in SPEEDUP_PEERS),
    "matches_peer",
    "deterministic",
    "us_per_call",
    "note",
)


def environment(tiny: bool) -> dict:
    import triton

    import tgpool

    if tiny or not torch.cuda.is_available():
        gpu = f"none ({platform.machine()} CPU, Triton interpreter)"
    else:
        gpu = torch.cuda.get_device_name()
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "tgpool": tgpool.__version__,
        "timing": NOT_A_TIMING if tiny else "triton.testing.do_bench median, L2 flushed",
    }


def geomean_rows(rows: list[Row]) -> list[Row]:
    out = []
    for peer in TGPOOL_PEERS:
        mine = [r for r in rows if r.peer == peer and r.speedups]
        if not mine:
            continue
        g = Row("GEOMEAN", f"{len(mine)} cases", "", "", "", peer)
        g.speedups = {
            p: bench_cases.geomean(r.speedups.get(p) for r in mine) for p in SPEEDUP_PEERS
        }
        g.pct_of_copy = bench_cases.geomean(r.pct_of_copy for r in mine)
        out.append(g)
    return out


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def csv_records(rows: list[Row], env: dict, copy: float) -> list[dict]:
    records = []
    for r in rows:
        rec = {**env, **{k: _fmt(v) for k, v in vars(r).items() if k != "speedups"}}
        rec["copy_gbps"] = _fmt(copy)
        for p in SPEEDUP_PEERS:
            rec[f"speedup_vs_{p}"] = _fmt(r.speedups.get(p))
        records.append(rec)
    return records


def write_csv(path: Path, records: list[dict], columns: tuple[str, ...] = COLUMNS) -> Path:
    """Append to ``path``; a file with other columns is left alone and a new one started."""
    header = ",".join(columns)
    if path.exists() and path.read_text().split("\n", 1)[0] != header:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        path = path.with_name(f"{path.stem}-{stamp}{path.suffix}")
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        if new:
            writer.writeheader()
        writer.writerows(records)
    return path


def markdown(rows: list[Row], env: dict, copy: float) -> str:
    head = (
        "case",
        "dtype",
        "layout",
        "dir",
        "tgpool ms",
        "heuristic ms",
        "GB/s",
        "% copy",
        *(f"x {p}" for p in SPEEDUP_PEERS),
        "ok",
        "det",
    )
    lines = [
        f"tgpool bench: {env['gpu']}; torch {env['torch']}, triton {env['triton']}, "
        f"tgpool {env['tgpool']}; timing: {env['timing']}; copy {copy:.1f} GB/s",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    heur = {(r.case, r.dtype, r.layout, r.direction): r for r in rows if r.peer == TGPOOL_PEERS[1]}
    for r in rows:
        if r.peer != TGPOOL_PEERS[0] or r.case.startswith("overhead") or r.case == "GEOMEAN":
            continue
        h = heur.get((r.case, r.dtype, r.layout, r.direction))
        cells = (
            r.case,
            r.dtype,
            r.layout,
            r.direction,
            f"{r.median_ms:.4g} [{r.p20_ms:.3g}, {r.p80_ms:.3g}]",
            f"{h.median_ms:.4g}" if h else "",
            f"{r.gbps:.4g}",
            f"{r.pct_of_copy:.1f}",
            *(_x(r.speedups.get(p)) for p in SPEEDUP_PEERS),
            r.matches_peer,
            r.deterministic,
        )
        lines.append("| " + " | ".join(cells) + " |")
    for g in geomean_rows(rows):
        cells = [f"geomean ({g.peer})", "", "", "", "", "", "", f"{g.pct_of_copy:.3g}"]
        cells += [_x(g.speedups.get(p)) for p in SPEEDUP_PEERS] + ["", ""]
        lines.append("| " + " | ".join(cells) + " |")
    over = {r.peer: r.us_per_call for r in rows if r.case.startswith("overhead")}
    if over:
        lines += [
            "",
            "per-call overhead, max_pool2d on 1x1x4x4: "
            + ", ".join(f"{p} {us:.1f} us" for p, us in over.items()),
        ]
    if env["timing"] == NOT_A_TIMING:
        lines += ["", "NOT A TIMING: kernels ran in the Triton interpreter on the CPU."]
    return "\n".join(lines)


def _x(v) -> str:
    return "" if v is None or v != v else f"{v:.2f}"  # v != v: NaN (no such peer)


def plot(path: Path, rows: list[Row], env: dict) -> Path | None:
    """Speedup of tgpool (tuned) over each peer per case, and its % of copy bandwidth; None
    when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    mine = [r for r in rows if r.peer == TGPOOL_PEERS[0] and r.speedups]
    labels = [f"{r.case} {r.dtype} {r.layout[:2]} {r.direction}" for r in mine]
    height = max(3.0, 0.22 * len(mine) + 1.5)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, height), sharey=True)
    ys = range(len(mine))
    peers = [p for p in TORCH_PEERS if any(r.speedups.get(p, 0) > 0 for r in mine)]  # not NaN
    bar = 0.8 / max(len(peers), 1)
    for i, p in enumerate(peers):
        ax1.barh(
            [y + i * bar for y in ys], [r.speedups.get(p, 0) for r in mine], bar, label=f"vs {p}"
        )
    ax1.axvline(1.0, color="black", linewidth=0.8)
    ax1.set_xscale("log")
    ax1.set_xlabel("speedup of tgpool (tuned) over peer")
    ax1.set_yticks(list(ys), labels, fontsize=6)
    ax1.legend(fontsize=7)
    ax2.barh(list(ys), [r.pct_of_copy for r in mine], 0.6, color="tab:green")
    ax2.axvline(80.0, color="black", linewidth=0.8, linestyle="--")
    ax2.set_xlabel("% of device copy bandwidth")
    title = f"tgpool bench on {env['gpu']} (torch {env['torch']}, triton {env['triton']})"
    if env["timing"] == NOT_A_TIMING:
        title += "\nINTERPRETER RUN: NOT A TIMING"
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
