"""The ``tgpool::`` custom ops, one module per kernel family: registration, fake implementations
and autograd. Importing this package registers them all.

    window.py       max_pool, max_pool_backward, index_gather, avg_pool, avg_pool_backward
    lp.py           lp_pool, lp_pool_backward
    adaptive.py     adaptive_avg_pool, adaptive_max_pool and their backwards
    global_pool.py  global_pool, global_pool_backward
    unpool.py       max_unpool, max_unpool_backward
    fractional.py   fractional_max_pool, fractional_max_pool_backward
    sppf.py         sppf, sppf_backward
"""

from . import adaptive, fractional, global_pool, lp, sppf, unpool, window  # noqa: F401
