"""Global-pooling kernels compiled ahead of time for sm_80 and sm_90a (no GPU needed): no register
spills, and 128-bit global accesses along the contiguous axis (positions in NCHW, channels in
channels_last and packed sequences), for the shapes the benchmarks measure."""

from __future__ import annotations

import aot_checks

CALLS = [
    # (name, plan_global_op arguments, kernel -> (load widths, store widths) that must appear)
    (
        "cnn_head_nchw_7x7",  # rows of 49 fp16 are not 16-byte aligned: the flat tile
        {"op": "global_pool", "input_shape": (256, 2048, 7, 7), "reduction": "avg"},
        {"global_avg_fwd_flat": ({128}, set()), "global_avg_bwd_flat": (set(), {128})},
    ),
    (
        "cnn_head_channels_last",
        {
            "op": "global_pool",
            "input_shape": (256, 7, 7, 2048),
            "reduction": "catavgmax",
            "layout": "channels_last",
        },
        {
            "global_avgmax_fwd_channels": ({128}, set()),
            "global_avgmax_bwd_channels": (set(), {128}),
        },
    ),
    (
        "long_sequence_ncl",  # N=1, C=64, L=10**6: rows split over programs
        {"op": "global_pool", "input_shape": (1, 64, 1000000), "reduction": "max"},
        {"global_max_fwd_rows_partial": ({128}, set()), "global_max_bwd_rows": (set(), {128})},
    ),
    (
        "gem_nchw_16x16",
        {"op": "global_pool", "input_shape": (64, 2048, 16, 16), "reduction": "gem"},
        {"global_gem_fwd_rows": ({128}, set()), "global_gem_bwd_rows": ({128}, {128})},
    ),
    (
        "text_masked_max_channels_last",
        {
            "op": "global_pool",
            "input_shape": (32, 128, 256),
            "reduction": "max",
            "layout": "channels_last",
            "masked": True,
        },
        {
            "global_max_fwd_channels_masked": ({128}, set()),
            "global_max_bwd_channels_masked": (set(), {128}),
        },
    ),
    (
        "packed_sentences",
        {"op": "ragged_pool", "input_shape": (4096, 256), "reduction": "avg"},
        {
            "global_avg_fwd_channels_ragged": ({128}, set()),
            "global_avg_bwd_channels_ragged": (set(), {128}),
        },
    ),
]


reports = aot_checks.reports_fixture(CALLS, ("fwd", "bwd"))


@aot_checks.each_case(CALLS)
def test_no_spills_and_128_bit_accesses(reports, case):
    aot_checks.assert_case(reports, case)
