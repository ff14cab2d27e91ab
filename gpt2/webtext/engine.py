"""Where the stages run: a process pool on this machine, or a Dask cluster. The same stage functions either way.

A stage is written as plain functions over shards, and needs two things from
an engine:

- `map(fn, items)`: run `fn(item)` for every item (a shard) as its own task and
  return the results in the order of the items;
- `shuffle(items, records, n, reduce)`: the global steps (karma per URL, the
  grouping of MinHash band keys). `records(item)` yields `(partition, record)`
  pairs with `0 <= partition < n`; every record of one partition is brought
  together and `reduce(partition, records)` runs once for each non-empty
  partition. The order of records inside a partition is not defined: `reduce`
  sorts what it needs to.

`LocalEngine` uses `concurrent.futures.ProcessPoolExecutor` and does the
shuffle in this process. `DaskEngine` submits the same functions to a Dask
cluster (a `LocalCluster` it starts, or `--scheduler tcp://HOST:8786`) and does
the shuffle with `dask.bag`'s own task-based groupby, so the records never pass
through the client. The functions must be importable (module level), as both
pools send them to other processes by reference.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm import tqdm

from gpt2.errors import GPT2Error

log = logging.getLogger(__name__)


def _workers(n: int) -> int:
    return n if n > 0 else (os.cpu_count() or 1)


class LocalEngine:
    """A pool of worker processes on this machine (`workers` = 0: one per core; 1: in this process, no pool)."""

    name = "local"

    def __init__(self, workers: int = 0):
        self.workers = _workers(workers)

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def map(self, fn: Callable, items: Sequence, desc: str = "shards") -> list:
        results: list[Any] = [None] * len(items)
        with tqdm(total=len(items), unit="shard", desc=desc, file=sys.stderr, disable=None) as bar:
            if self.workers == 1 or len(items) <= 1:
                for i, item in enumerate(items):
                    results[i] = fn(item)
                    bar.update(1)
                return results
            with ProcessPoolExecutor(min(self.workers, len(items))) as pool:
                futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
                for future in as_completed(futures):
                    results[futures[future]] = future.result()
                    bar.update(1)
        return results

    def shuffle(self, items: Sequence, records: Callable[[Any], Iterable], n: int, reduce: Callable, desc: str = "shuffle") -> list:
        partitions: dict[int, list] = {}
        for part in self.map(_listed(records), items, desc=f"{desc} (map)"):
            for pair in part:
                partitions.setdefault(pair[0], []).append(pair)
        groups = [(p, partitions.pop(p)) for p in sorted(partitions)]
        return [result for _, result in self.map(_Reduce(reduce), groups, desc=f"{desc} (reduce)")]


class _listed:
    """`records` with its output as a list (what a worker process sends back)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, item: Any) -> list:
        return list(self.fn(item))


class _Reduce:
    """`reduce` over one group of (partition, record) pairs; returns (partition, its result)."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, group: tuple[int, list]) -> tuple[int, Any]:
        partition, pairs = group
        return partition, self.fn(partition, [record for _, record in pairs])


class DaskEngine:
    """The same tasks on a Dask cluster: `scheduler` is its address (tcp://HOST:8786), or None for a new
    `LocalCluster` of `workers` processes (one thread each) on this machine."""

    name = "dask"

    def __init__(self, workers: int = 0, scheduler: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise GPT2Error("--engine dask needs Dask: pip install 'gpt2[webtext]' (or dask[distributed])") from None
        self.cluster = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as e:
                raise GPT2Error(f"cannot reach the Dask scheduler at {scheduler} ({e}); check --scheduler and that the cluster runs") from None
        else:
            self.cluster = LocalCluster(
                n_workers=_workers(workers), threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=logging.ERROR
            )
            self.client = Client(self.cluster)
        log.info("Dask engine: %s", self.client.dashboard_link if self.cluster is None else f"local cluster of {_workers(workers)} workers")

    def __enter__(self) -> DaskEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def map(self, fn: Callable, items: Sequence, desc: str = "shards") -> list:
        from distributed import as_completed as dask_completed

        if not items:
            return []
        futures = self.client.map(fn, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(items)
        with tqdm(total=len(items), unit="shard", desc=desc, file=sys.stderr, disable=None) as bar:
            for future in dask_completed(futures):
                results[index[future.key]] = future.result()
                bar.update(1)
        return results

    def shuffle(self, items: Sequence, records: Callable[[Any], Iterable], n: int, reduce: Callable, desc: str = "shuffle") -> list:
        import dask.bag as db

        if not items:
            return []
        bag = db.from_sequence(list(items), npartitions=len(items)).map(_listed(records)).flatten()
        grouped = bag.groupby(_partition_of, npartitions=max(1, min(n, len(items) * 4)), shuffle="tasks")
        log.info("%s: shuffling on the Dask cluster", desc)
        results = grouped.map(_Reduce(reduce)).compute()
        return [r for _, r in sorted(results, key=lambda pr: pr[0])]


def _partition_of(pair: tuple[int, Any]) -> int:
    return pair[0]


def make_engine(cfg) -> LocalEngine | DaskEngine:
    """The engine a config names (its `engine`, `workers` and `scheduler`): 'local' or 'dask'."""
    if cfg.engine == "dask" or cfg.scheduler:
        return DaskEngine(cfg.workers, cfg.scheduler)
    return LocalEngine(cfg.workers)


@contextmanager
def open_engine(cfg, engine: LocalEngine | DaskEngine | None = None) -> Iterator[LocalEngine | DaskEngine]:
    """`engine` if one is given (`gpt2 webtext build` shares one among its stages), else a new one for `cfg`,
    closed afterwards."""
    if engine is not None:
        yield engine
        return
    with make_engine(cfg) as new:
        yield new
