"""Tuning under torch.distributed: two CPU processes on the gloo backend, each with its own cache
folder (so only the collective can make their configs agree), an injected benchmark function that
gives each rank different times (so a config chosen by the wrong rank shows), and a node name
that makes the two processes one node or two."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from processes import GPU, FakePlan, gloo_group, spawn_ranks

from tgpool.tuning import cache as tune_cache
from tgpool.tuning import tuner

VARIANTS = ["max k2", "max k3", "avg k2", "avg k3"]


def _rank_bench(rank: int, log: list):
    """Each rank prefers a different candidate: rank r's fastest is the r-th simplest."""

    def bench(plan, config):
        log.append(plan.variant)
        ordered = tuner.candidates_of(plan)
        return 0.1 if config == ordered[rank] else 1.0

    return bench


def _scenario(rank: int, root: Path, name: str, node: str, prefill: dict | None = None):
    user = root / name / f"rank{rank}" / "autotune.json"
    store = tune_cache.Store(user=user, shipped_dir=root / "no-shipped")
    if prefill:
        store.store(prefill)
    log: list = []
    t = tuner.Tuner(_rank_bench(rank, log), repeats=1, device=GPU, store=store, node=lambda: node)
    results = t.ensure([FakePlan(v) for v in VARIANTS])
    summary = {
        "measured": sorted(set(log)),
        "configs": {r.key.variant: r.config.describe() for r in results},
        "stored": {
            e["variant"]: e["config"] for e in json.loads(user.read_text())["entries"].values()
        },
    }
    (root / name / f"rank{rank}.json").write_text(json.dumps(summary))


def _worker(rank: int, root: str, port: int):
    with gloo_group(rank, port):
        root = Path(root)
        _scenario(rank, root, "one_node", "node-a")
        _scenario(rank, root, "two_nodes", f"node-{rank}")
        # rank 1 already has "max k3": it settles that key for both; the rest is tuned by rank 0
        key = tuner.plan_key(FakePlan("max k3"), GPU)
        choice = tuner.candidates_of(FakePlan("max k3"))[-1]
        timings = {c: 1.0 for c in tuner.candidates_of(FakePlan("max k3"))}
        held = tune_cache.make_entry(key, choice, choice, {**timings, choice: 0.5})
        _scenario(rank, root, "held", "node-a", {key.text: held} if rank == 1 else None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    spawn_ranks(_worker, root)

    def load(name):
        return [json.loads((root / name / f"rank{r}.json").read_text()) for r in (0, 1)]

    return load


def _rank0_choice(variant: str) -> str:
    return tuner.candidates_of(FakePlan(variant))[0].describe()


def test_one_node_tunes_on_one_rank_and_every_rank_stores_its_configs(runs):
    rank0, rank1 = runs("one_node")
    assert rank0["measured"] == sorted(VARIANTS) and rank1["measured"] == []
    assert rank0["configs"] == rank1["configs"] == {v: _rank0_choice(v) for v in VARIANTS}
    assert rank0["stored"] == rank1["stored"] and len(rank1["stored"]) == len(VARIANTS)


def test_two_nodes_split_the_keys_and_agree(runs):
    rank0, rank1 = runs("two_nodes")
    assert rank0["measured"] and rank1["measured"]
    assert set(rank0["measured"]).isdisjoint(rank1["measured"])
    assert set(rank0["measured"]) | set(rank1["measured"]) == set(VARIANTS)
    assert rank0["configs"] == rank1["configs"]
    assert rank0["stored"] == rank1["stored"]


def test_an_entry_one_rank_holds_is_used_by_all(runs):
    rank0, rank1 = runs("held")
    assert "max k3" not in rank0["measured"] and rank1["measured"] == []
    held = tuner.candidates_of(FakePlan("max k3"))[-1].describe()
    assert rank0["configs"]["max k3"] == rank1["configs"]["max k3"] == held
    assert rank0["stored"] == rank1["stored"]
