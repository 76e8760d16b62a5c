"""``tgpool bench``: the suite as data (``cases``), timing against the peers (``run``), and the
CSV / markdown / PNG (``report``)."""
