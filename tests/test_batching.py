"""The one batcher (animecli.inference.batching) and the one engine choice (animecli.inference.select)
that convert, the Ray actors and bench share."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from animecli.inference.batching import SizeBatcher
from animecli.options import Backend, EngineOptions, ModelChoice


def _feed(batcher: SizeBatcher[int], keys: list[str]) -> list[list[int]]:
    ran: list[list[int]] = []
    for i, key in enumerate(keys):
        ran.extend(batcher.add(key, i, i))
    ran.extend(batcher.drain())
    return ran


def test_a_full_group_runs_at_once() -> None:
    b: SizeBatcher[int] = SizeBatcher(2)
    assert b.add("a", 0, 0) == []
    assert len(b) == 1
    assert b.add("a", 1, 1) == [[0, 1]]
    assert len(b) == 0


def test_batch_size_one_runs_every_item_alone() -> None:
    b: SizeBatcher[int] = SizeBatcher(0)  # below 1 counts as 1
    assert [b.add(k, i, i) for i, k in enumerate("aba")] == [[[0]], [[1]], [[2]]]
    assert b.drain() == []


def test_waiting_items_are_bounded_by_twice_the_batch() -> None:
    b: SizeBatcher[int] = SizeBatcher(3)
    ran = [b.add(k, i, i) for i, k in enumerate("aabbc")]
    assert ran == [[], [], [], [], []]
    # The sixth item makes 2 x 3 waiting: the largest group runs (the first of equals).
    assert b.add("d", 5, 5) == [[0, 1]]
    assert len(b) == 4


def test_an_item_of_a_rare_size_waits_at_most_two_batches_of_arrivals() -> None:
    b: SizeBatcher[int] = SizeBatcher(4)
    assert b.add("rare", 0, 0) == []
    ran: list[list[int]] = []
    arrival = 1
    while not any(0 in batch for batch in ran):
        ran.extend(b.add("common", arrival, arrival))
        arrival += 1
    assert arrival - 1 - 0 == 2 * 4  # released on the 8th arrival after it
    assert [0] in ran


def test_arrivals_that_never_reach_the_batcher_still_age_it() -> None:
    b: SizeBatcher[int] = SizeBatcher(4)
    b.add("rare", 0, 0)
    assert b.add("other", 1, 8) == [[0]]  # files 1..7 were skipped or failed to load


@pytest.mark.parametrize("seed", range(5))
def test_every_item_runs_once_in_groups_of_one_key(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 5)
    keys = [rng.choice("abcd") for _ in range(rng.randint(0, 60))]
    ran = _feed(SizeBatcher(size), keys)
    assert sorted(i for batch in ran for i in batch) == list(range(len(keys)))
    for batch in ran:
        assert 1 <= len(batch) <= size
        assert len({keys[i] for i in batch}) == 1
        assert batch == sorted(batch)  # arrival order inside a batch


def test_drain_keeps_the_order_groups_were_started() -> None:
    b: SizeBatcher[int] = SizeBatcher(10)
    for i, k in enumerate("bab"):
        b.add(k, i, i)
    assert b.drain() == [[0, 2], [1]]


def test_bench_runs_the_engine_convert_picks(tiny_weights_dir: Path) -> None:
    """A named model on the CPU with the onnx backend: once the graph is cached, convert runs the
    torch-free engine, and so does the bench's row (it asks the same function)."""
    pytest.importorskip("onnxruntime")
    from animecli.benchmark import BenchOptions, _Path, _resolve_model
    from animecli.inference.ort_engine import OrtEngine
    from animecli.inference.select import select_engine
    from animecli.inference.torch_engine import Engine
    from animecli.weights.manifest import load_manifest

    opts = EngineOptions(device="cpu", threads=1, backend=Backend.ONNX)
    first = select_engine(ModelChoice(), opts)
    assert not first.lean and isinstance(first.engine, Engine)  # nothing cached: PyTorch exports it
    again = select_engine(ModelChoice(), opts)
    assert again.lean and isinstance(again.engine, OrtEngine)
    assert (again.name, again.sha256, again.spec) == (first.name, first.sha256, first.spec)

    m = _resolve_model(load_manifest().default)
    row = _Path(m, Backend.ONNX, BenchOptions(device="cpu", threads=1))
    assert isinstance(row.engine, OrtEngine)
    eager = _Path(m, Backend.EAGER, BenchOptions(device="cpu", threads=1))
    assert isinstance(eager.engine, Engine) and eager.engine.backend is Backend.EAGER


def test_select_steady_picks_the_lean_engine_on_a_first_run(tiny_weights_dir: Path) -> None:
    pytest.importorskip("onnxruntime")
    from animecli.inference.ort_engine import OrtEngine
    from animecli.inference.select import select_engine

    opts = EngineOptions(device="cpu", threads=1, backend=Backend.ONNX)
    chosen = select_engine(ModelChoice(), opts, steady=True)
    assert chosen.lean and isinstance(chosen.engine, OrtEngine)
    assert chosen.backend is Backend.ONNX and chosen.device == "cpu"
