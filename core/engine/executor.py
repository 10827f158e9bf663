"""Grids of independent cells, run in this process or on a Ray cluster, with the same results.

A grid (the defence grid's seeds x threat cases, the detector comparison's seeds x threats) is a list of cells.
A cell is a module-level function and its keyword arguments: a pure function of its config that returns a
JSON-able dict and writes its models through core.engine.storage (atomic writes under content-addressed names, so two
workers never clash and a model another cell or an earlier run finished is loaded, not retrained).

EXECUTORS maps a name to how the cells run:
- `local` (the default): one after another in this process; what the engine always did.
- `ray`: each cell a Ray task asking for `cpus_per_cell` CPUs and `gpus_per_cell` of a GPU (0.25 packs four
  cells on one GPU), on the cluster at `address` ("auto", "ray://host:port") or on a Ray instance started on
  this machine when there is no address. The `core` package travels to the workers with the tasks; the data root
  and the cache directory must be paths every worker sees (a shared filesystem on a cluster).

Same results whatever runs them: CPU kernels give different floats with a different number of threads (a width-8
classifier trained for 2 epochs with 1 and with 2 threads differed by up to 0.09 in a weight; measured while writing
this), so every cell runs on exactly `cpus_per_cell` threads under every executor, by default this machine's
thread count. A cell that raises is reported with its arguments and retried once; the other cells finish, then
GridError lists what failed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.engine.data import default_root
from core.engine.train import Progress, TrainingCancelled


@dataclass(frozen=True)
class Cell:
    key: str  # where the result goes, e.g. "seed 1 / tap"; unique within a grid
    function: Callable[..., dict]  # module-level; takes **arguments and progress=, returns a JSON-able dict
    arguments: dict = field(default_factory=dict)

    def describe(self) -> str:
        shown = {  # plain values as they are; configs, images and tensors by their type
            name: value if isinstance(value, (int, float, str, bool, type(None))) else type(value).__name__
            for name, value in self.arguments.items()
        }
        return f"{self.key} ({self.function.__module__}.{self.function.__name__}, {shown})"


@dataclass(frozen=True)
class ExecutorConfig:
    name: str = "local"  # a key of EXECUTORS
    # ray: "auto" (the cluster this machine joined), "ray://host:port" (Ray Client) or "host:port" (the head's GCS);
    # None starts a Ray instance on this machine
    address: str | None = None
    cpus_per_cell: int | None = None  # threads (and Ray CPUs) per cell; None: this machine's torch thread count
    gpus_per_cell: float = 0.0  # Ray only: a fraction packs several cells on one GPU
    retries: int = 1  # a failing cell runs at most 1 + retries times

    def __post_init__(self):
        if self.name not in EXECUTORS:
            raise ValueError(f"unknown executor {self.name!r}: choose from {', '.join(EXECUTORS)}")
        if self.cpus_per_cell is None:
            object.__setattr__(self, "cpus_per_cell", torch.get_num_threads())
        if self.cpus_per_cell < 1:
            raise ValueError(f"cpus per cell must be >= 1, got {self.cpus_per_cell}")
        if not 0 <= self.gpus_per_cell <= 8:
            raise ValueError(f"gpus per cell must be in [0, 8], got {self.gpus_per_cell}")
        if self.name != "ray" and (self.address is not None or self.gpus_per_cell):
            raise ValueError("--ray-address and --gpus-per-cell need --executor ray")
        if self.address is not None and not re.fullmatch(r"auto|(ray://)?[\w.-]+:\d+", self.address):
            raise ValueError(f"Ray address must be 'auto', 'ray://host:port' or 'host:port', got {self.address!r}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")


def worker_paths(cache_dir, data_root=None) -> dict[str, str]:
    """The model cache and the data root as absolute paths: a Ray worker does not run in this directory."""
    return {"cache_dir": str(Path(cache_dir).resolve()), "data_root": str(Path(data_root or default_root()).resolve())}


class GridError(RuntimeError):
    """Some cells failed twice; the others finished and were handed to on_result."""


def finished_cells(config: dict, previous: dict | None, items: str, item_settings: str) -> dict[str, dict]:
    """The {seed: {item: result}} of an earlier grid file (`previous`) that a grid with `config` (its to_dict()) can
    keep: the seeds and items (config[items]: threat cases, threats) it asks for, made with the same settings in
    every other respect, each item with the same own settings (config[item_settings][item]). A grid with other
    settings keeps nothing, so a resumed file never mixes two recipes."""
    if not previous:
        return {}
    config = json.loads(json.dumps(config))  # as the file holds it: lists, not tuples
    earlier = previous.get("config", {})
    per_run = ("seeds", items, item_settings)
    if {key: value for key, value in config.items() if key not in per_run} != {
        key: value for key, value in earlier.items() if key not in per_run
    }:
        return {}
    same = {item for item in config[items] if earlier.get(item_settings, {}).get(item) == config[item_settings][item]}
    seeds = {str(seed) for seed in config["seeds"]}
    return {
        seed: {item: result for item, result in results.items() if item in same}
        for seed, results in previous.get("runs", {}).items()
        if seed in seeds
    }


def run_missing_cells(
    function: Callable[..., dict],
    config,
    item_name: str,
    items,
    runs: dict[str, dict],
    paths: dict[str, str],
    executor: ExecutorConfig | None,
    progress: Progress | None,
    on_result: Callable[[], None],
) -> None:
    """A seeds x items grid (the defence grid's cases, the comparison's threats): run every (seed, item) cell that
    `runs` ({seed: {item: result}}, e.g. kept by finished_cells) lacks, as function(config=, seed=, <item_name>=,
    **paths), storing each result in `runs` as it finishes and then calling on_result() (to save the file)."""
    cells = [
        Cell(f"seed {seed} {item}", function, {"config": config, item_name: item, "seed": seed, **paths})
        for seed in config.seeds
        for item in items
        if item not in runs.get(str(seed), {})
    ]
    where = {cell.key: (str(cell.arguments["seed"]), cell.arguments[item_name]) for cell in cells}

    def finished(key: str, result: dict) -> None:
        seed, item = where[key]
        runs.setdefault(seed, {})[item] = result
        on_result()

    run_cells(cells, executor, finished, progress)


def run_cells(
    cells: list[Cell],
    executor: ExecutorConfig | None = None,
    on_result: Callable[[str, dict], None] | None = None,
    progress: Progress | None = None,
) -> dict[str, dict]:
    """{cell key: result} for every cell, computed by the configured executor. on_result(key, result) is called as
    each cell finishes (in finishing order), so a caller can save partial grids."""
    executor = executor or ExecutorConfig()
    keys = [cell.key for cell in cells]
    if len(set(keys)) != len(keys):
        raise ValueError(f"cell keys must be unique, got {keys}")
    if not cells:
        return {}
    return EXECUTORS[executor.name](cells, executor, on_result or (lambda key, result: None), progress)


def call_cell(cell: Cell, threads: int, progress: Progress | None = None) -> dict:
    """Run one cell on exactly `threads` CPU threads (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return cell.function(**cell.arguments, progress=progress)
    finally:
        torch.set_num_threads(previous)


def _failure(cell: Cell, error: BaseException) -> str:
    last = "".join(traceback.format_exception_only(type(error), error)).strip().splitlines()[-1]
    return f"{cell.describe()}: {last}"


def run_local(cells: list[Cell], executor: ExecutorConfig, on_result, progress: Progress | None) -> dict[str, dict]:
    """One cell after another in this process; each cell's own stages go to progress, prefixed with its key."""
    results, failures = {}, []
    for number, cell in enumerate(cells, 1):
        started = time.time()
        stage = (lambda s, d, t, key=cell.key: progress(f"[{key}] {s}", d, t)) if progress else None
        for attempt in range(1 + executor.retries):
            try:
                results[cell.key] = call_cell(cell, executor.cpus_per_cell, stage)
                break
            except (TrainingCancelled, KeyboardInterrupt):
                raise
            except Exception as error:  # noqa: BLE001 -- a failed cell is reported, retried, and the others go on
                print(f"cell failed (attempt {attempt + 1}): {_failure(cell, error)}", file=sys.stderr)
                if attempt == executor.retries:
                    failures.append(_failure(cell, error))
        if cell.key in results:
            on_result(cell.key, results[cell.key])
        if progress and len(cells) > 1:  # each cell's own stages have bars; this line counts the cells
            print(f"cell {number}/{len(cells)} finished: {cell.key} ({time.time() - started:.0f} s)", file=sys.stderr)
    _raise_failures(failures, len(cells))
    return results


def _raise_failures(failures: list[str], total: int) -> None:
    if failures:
        raise GridError(f"{len(failures)} of {total} cells failed twice: " + "; ".join(failures))


def _remote_cell(function: Callable[..., dict], key: str, threads: int, **arguments) -> dict:
    # Ray resolves the shared arguments' object refs before this runs (they are top-level keyword arguments); it
    # sets OMP_NUM_THREADS to the task's CPUs, and torch's intra-op pool is set explicitly all the same.
    return call_cell(Cell(key, function, arguments), threads)


def connect_ray(executor: ExecutorConfig):
    """ray.init for this grid: the given cluster, or a Ray instance on this machine. Raises ValueError with what to
    do when Ray is missing or the address does not answer."""
    try:
        # deferred: ray adds about 0.5 s to every import of the engine and only the cluster executor needs it
        import ray
    except ImportError:
        raise ValueError("--executor ray needs the ray package: pip install ray==2.58.0") from None
    if ray.is_initialized():
        return ray
    package = str(Path(__file__).resolve().parents[1])  # `core` goes to the workers with the tasks
    runtime_env = {"py_modules": [package], "env_vars": {"PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}}
    kwargs = {"runtime_env": runtime_env, "log_to_driver": False, "configure_logging": False}
    if executor.address is None:
        # Ray runs its workers at nice 15; on a machine shared with other work they would then barely run.
        os.environ.setdefault("RAY_worker_niceness", "0")
        kwargs.update(num_cpus=os.cpu_count(), include_dashboard=False)
    else:
        kwargs.update(address=executor.address)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Ray Client warns before it raises; the error below says it once
            ray.init(**kwargs)
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"cannot reach a Ray cluster at {executor.address or 'this machine'} ({first}); start one with "
            "`ray start --head` or leave out --ray-address to start one here"
        ) from None
    return ray


def run_ray(cells: list[Cell], executor: ExecutorConfig, on_result, progress: Progress | None) -> dict[str, dict]:
    """Every cell as a Ray task; results gathered in finishing order; progress counts finished cells."""
    ray = connect_ray(executor)
    remote = ray.remote(num_cpus=executor.cpus_per_cell, num_gpus=executor.gpus_per_cell, max_retries=0)(_remote_cell)
    report = progress or (lambda stage, done, total: None)
    started = time.time()
    # An argument object that several cells share (a run's images, a config) travels to the cluster once.
    uses = Counter(id(value) for cell in cells for value in cell.arguments.values())
    stored: dict[int, Any] = {}

    def submit(cell: Cell):
        arguments = {}
        for name, value in cell.arguments.items():
            if uses[id(value)] > 1:
                stored.setdefault(id(value), ray.put(value))
                value = stored[id(value)]
            arguments[name] = value
        return remote.remote(cell.function, cell.key, executor.cpus_per_cell, **arguments)

    pending = {submit(cell): (cell, 0) for cell in cells}
    results, failures = {}, []
    report("grid cells (ray)", 0, len(cells))
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        cell, attempt = pending.pop(ready[0])
        try:
            results[cell.key] = ray.get(ready[0])
        except ray.exceptions.RayError as error:
            cause = getattr(error, "cause", None) or error
            print(f"cell failed (attempt {attempt + 1}): {_failure(cell, cause)}", file=sys.stderr)
            if attempt < executor.retries:
                pending[submit(cell)] = (cell, attempt + 1)
            else:
                failures.append(_failure(cell, cause))
            continue
        on_result(cell.key, results[cell.key])
        report(f"grid cells (ray, {time.time() - started:.0f} s)", len(results) + len(failures), len(cells))
    _raise_failures(failures, len(cells))
    return results


EXECUTORS: dict[str, Callable[..., dict[str, dict]]] = {"local": run_local, "ray": run_ray}
