"""Adaptive-pooling kernels compiled ahead of time for sm_80 and sm_90a (no GPU needed): no register
spills, and 128-bit global loads and stores along the channels of channels-last tiles. Not asserted:
the rows tiles of NCHW data gather their window taps (scalar loads: each output's window starts
where its own rule says) and run one element per thread to stay clear of spills (see
adaptive_pool.ROWS_STEP); 3-D outputs are contiguous, as torch returns them, so the stores of a
channels-last 3-D forward are scalar.

Compiled by aot.inspect_many in spawned processes (this one runs the interpreter), through the
family registry's planner (adaptive_pool.plan_adaptive_op), which plans on meta tensors exactly as
a launch does."""

from __future__ import annotations

import aot_checks
import torch

from tgpool.kernels import adaptive as adaptive_pool

CALLS = [
    # (name, plan_adaptive_op arguments, kernel -> (load widths, store widths) that must appear)
    (
        "cnn_head_14_to_7_channels_last",
        {"op": "adaptive_avg_pool2d", "input_shape": (32, 512, 14, 14), "output_size": (7, 7),
         "layout": "channels_last"},
        {"adaptive_avg_pool2d_fwd_channels": ({128}, {128}),
         "adaptive_avg_pool2d_bwd_channels": ({128}, {128})},
    ),
    (
        "roi_like_max_10_to_4_channels_last",  # overlapping windows, indices saved
        {"op": "adaptive_max_pool2d", "input_shape": (16, 64, 10, 10), "output_size": (4, 4),
         "layout": "channels_last", "with_indices": True},
        {"adaptive_max_pool2d_fwd_channels_idx": ({128}, {128}),
         "adaptive_max_pool2d_bwd_channels": ({128}, {128})},
    ),
    (
        "nchw_16_to_8",
        {"op": "adaptive_avg_pool2d", "input_shape": (32, 512, 16, 16), "output_size": (8, 8)},
        {"adaptive_avg_pool2d_fwd_rows": (set(), set()),
         "adaptive_avg_pool2d_bwd_rows": (set(), set())},
    ),
    (
        "video_max_upsample_3d",  # 3-D upsampling: where the heuristic's rows tiles spilled
        {"op": "adaptive_max_pool3d", "input_shape": (8, 64, 4, 5, 6), "output_size": (8, 9, 10),
         "with_indices": True},
        {"adaptive_max_pool3d_fwd_rows_idx": (set(), set()),
         "adaptive_max_pool3d_bwd_rows": (set(), set())},
    ),
    (
        "nchw_max_upsample_3x5_to_7x8",
        {"op": "adaptive_max_pool2d", "input_shape": (8, 64, 3, 5), "output_size": (7, 8),
         "with_indices": True},
        {"adaptive_max_pool2d_fwd_rows_idx": (set(), set()),
         "adaptive_max_pool2d_bwd_rows": (set(), set())},
    ),
    (
        "text_1000_to_10",
        {"op": "adaptive_max_pool1d", "input_shape": (32, 256, 1000), "output_size": (10,),
         "with_indices": True, "dtype": torch.float32},
        {"adaptive_max_pool1d_fwd_rows_idx": (set(), set()),
         "adaptive_max_pool1d_bwd_rows": (set(), set())},
    ),
    (
        "video_channels_last_3d",
        {"op": "adaptive_avg_pool3d", "input_shape": (8, 64, 16, 28, 28),
         "output_size": (4, 7, 7), "layout": "channels_last"},
        {"adaptive_avg_pool3d_fwd_channels": ({128}, set()),  # torch's 3-D output: contiguous
         "adaptive_avg_pool3d_bwd_rows": (set(), set())},
    ),
]  # fmt: skip


reports = aot_checks.reports_fixture(CALLS, ("fwd", "bwd"))


@aot_checks.each_case(CALLS)
def test_no_spills_and_128_bit_accesses(reports, case):
    aot_checks.assert_case(reports, case)


def test_global_output_plans_the_global_kernels():
    """Output size 1 in every dim plans global-pool launches, not adaptive ones."""
    plans = adaptive_pool.plan_adaptive_op(
        "adaptive_max_pool2d", (8, 64, 7, 7), output_size=1, direction="bwd"
    )
    assert [p.family for p in plans] == ["global_pool_fwd", "global_pool_bwd"]
