"""The large-window passes and the fused SPPF kernels compiled ahead of time for sm_80 and sm_90a
(no GPU needed): no register spills, and 128-bit accesses along the contiguous axis where it
allows them (H and D passes and every channels-last pass; SPPF's channels-last tile). The family
registry plans them: large windows through window_plans.plan_pool_op, which hands them to
large_window.plan_large_window_op as window_pool dispatches them."""

from __future__ import annotations

import aot_checks

CALLS = [
    # (name, call, kernel -> (load widths, store widths) that must appear)
    (
        "max_31x31_s1_nchw_fwd",  # W pass: shifted lanes (scalar); H pass: 128-bit rows
        dict(op="max_pool2d", input_shape=(8, 64, 64, 64), kernel_size=31, stride=1,
             padding=15, with_indices=True),
        {"max_pool2d_large_h_rows_idx": ({128}, {128})},
    ),
    (
        "avg_31x31_s16_channels_last_bwd",
        dict(op="avg_pool2d", input_shape=(8, 64, 128, 128), kernel_size=31,
             stride=16, layout="channels_last", direction="bwd"),
        {"avg_pool2d_large_bwd_h_channels": ({128}, {128}),
         "avg_pool2d_large_bwd_w_channels": ({128}, {128})},
    ),
    (
        "max_13x13_s1_channels_last_bwd",
        dict(op="max_pool2d", input_shape=(8, 64, 32, 32), kernel_size=13, stride=1,
             padding=6, layout="channels_last", direction="bwd"),
        {"max_pool2d_large_w_channels_idx": ({128}, {128}),
         "max_pool2d_large_bwd_w_channels": ({128}, {128})},
    ),
    (
        "avg_9x9x9_3d_fwd",
        dict(op="avg_pool3d", input_shape=(2, 16, 32, 32, 32), kernel_size=9,
             stride=1, padding=4),
        {"avg_pool3d_large_d_rows": ({128}, {128})},
    ),
    (
        "sppf_yolo_channels_last",  # YOLOv8's SPPF at 20x20 (P5), channels-last
        dict(op="sppf", input_shape=(16, 256, 20, 20), layout="channels_last",
             direction="bwd"),
        # row loads are 1-D [BLOCK_I] vectors spread over every warp: one channel per thread
        # (16-bit) with the heuristic's 4 warps; only the 2-D stores are asserted wide
        {"sppf_fwd_channels_idx": (set(), {128}), "sppf_bwd_channels": (set(), {128})},
    ),
    (
        "sppf_yolo_nchw",  # rows of 20 are not 16-byte aligned: no width asserted
        dict(op="sppf", input_shape=(16, 256, 20, 20), direction="bwd"),
        {"sppf_fwd_rows_idx": (set(), set()), "sppf_bwd_rows": (set(), set())},
    ),
]  # fmt: skip


reports = aot_checks.reports_fixture(CALLS)


@aot_checks.each_case(CALLS)
def test_no_spills_and_128_bit_accesses(reports, case):
    aot_checks.assert_case(reports, case)
