"""Tuning in a distributed job: one rank per node measures; every rank gets the same configs.

Ranks of one job must launch with the same configs (a config changes nothing numerically here, but
per-rank timings would differ, and configs that differ by rank make performance bugs that no single
rank reproduces). So when ``torch.distributed`` is initialised, ``Tuner.ensure``
(tgpool/tuning/tuner.py)
runs this protocol, a collective that every rank enters with the same launches (as any collective
in SPMD code):

1. every rank shares the keys it needs and the entries its own caches already hold;
2. a key some rank already has is settled by the lowest such rank's entry;
3. the others are split among the node leaders (the lowest rank on each host), which measure them;
4. the leaders' entries are gathered, so every rank stores the same entries in its user cache
   (with a shared cache folder, the merging writes make that one file).

Objects travel with ``all_gather_object``, so any backend works (the tests use gloo on CPU).
"""

from __future__ import annotations

import socket


def active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def node_name() -> str:
    return socket.gethostname()


def all_gather(obj) -> list:
    import torch.distributed as dist

    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def leaders(nodes: list[str]) -> list[int]:
    """The lowest rank of each node, in rank order, for ``nodes[rank]``."""
    first: dict[str, int] = {}
    for rank, node in enumerate(nodes):
        first.setdefault(node, rank)
    return sorted(first.values())


def assign(needed: list[set], leader_ranks: list[int]) -> dict[str, int]:
    """key -> the leader rank that measures it: keys in sorted order dealt round-robin over the
    leaders, each to the next leader that has a launch for it (``needed[rank]``)."""
    owners, turn = {}, 0
    for text in sorted(set().union(*needed)):
        for i in range(len(leader_ranks)):
            rank = leader_ranks[(turn + i) % len(leader_ranks)]
            if text in needed[rank]:
                owners[text] = rank
                turn = (turn + i + 1) % len(leader_ranks)
                break
        else:  # no leader runs this launch: the lowest rank that does measures it
            owners[text] = min(r for r, keys in enumerate(needed) if text in keys)
    return owners


def settle(rank: int, node: str, needed: set, held: dict, tune) -> dict:
    """The collective: ``needed`` key texts, ``held`` {key text: entry} from this rank's caches,
    ``tune(key texts) -> {key text: entry}`` measures. Returns {key text: entry} for every key
    in ``needed``, identical on every rank."""
    shared = all_gather((node, sorted(needed), held))
    nodes = [s[0] for s in shared]
    keys = [set(s[1]) for s in shared]
    settled: dict = {}
    for _, _, rank_held in shared:  # lowest rank first
        for text, entry in rank_held.items():
            settled.setdefault(text, entry)
    missing = [{k for k in ks if k not in settled} for ks in keys]
    owners = assign(missing, leaders(nodes))
    mine = sorted(text for text, owner in owners.items() if owner == rank)
    for measured in all_gather(tune(mine) if mine else {}):
        settled.update(measured)
    return settled
