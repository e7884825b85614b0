"""One view of all workers (``--workers N``): each worker's figures in a file, merged at scrape time.

A side module without Twisted: `merge` is pure; the file functions block
(a few small files, see the costs below) and are called by the wiring
(`ingest.workers.StatsPublisher`, `ingest.workers.Supervisor`).

Why files, not prometheus_client's multiprocess mode: that mode needs
every figure kept in prometheus_client objects backed by memory-mapped
files, on the hot path, and covers ``/metrics`` only; ingest keeps plain
integers (`ingest.stats`) and shapes ``/stats`` and ``/metrics`` from one
snapshot.  A snapshot a second per worker, as JSON, keeps both.

- Each worker writes its own snapshot (`ingest.stats.Stats.snapshot`,
  with the gauges) every second to ``<data-dir>/.stats/<supervisor
  pid>/worker-K.json`` (`write_snapshot`: a temporary file renamed over the
  old one, so a reader sees the old or the new file whole, never part of
  one).  The supervisor's process id names the directory, so two services
  on one data directory (an old one draining while a new one starts on the
  same port) never read each other's workers.
- The worker that answers ``/stats`` or ``/metrics`` reads the others'
  files (`read_snapshots`) and `merge` sums what every worker last
  published, its own included (kept in memory): figures at most about a
  second old.  Not its live figures: two scrapes in a row answered by
  different workers would then see each other's older figures, and a sum
  that goes back reads as a counter reset to ``rate()``.  Summing
  published figures only, every file only moves forward, so neither can
  the sums.  (Writing at each scrape would also keep them monotonic, but
  puts a disk write, a few milliseconds on a busy disk, into every scrape.)
- The supervisor creates the directory at start (`prepare_directory`,
  which also removes those of supervisors no longer running), removes a
  worker's file when that worker exits unexpectedly (its gauges would
  linger), and the whole directory at its stop.

How each figure is merged (`merge`): counters, histograms and the gauges
of amounts (connections open, buffer depth, high mark and capacity, parse
queue, sink lag in bytes) are summed; ``uptime_seconds`` is the oldest
worker's; the sink's ``lag_seconds`` is the largest and ``connected`` true
only when every worker's sink is; ``disk`` is the answering worker's own
last measure (all workers measure the one data directory).  ``worker`` stays
the answering worker's id, and ``workers`` holds each worker's own
snapshot (its id as a string key) with ``age_seconds``, how old its
figures are.

Cost, per scrape with N workers: one ``listdir`` and N - 1 reads and
JSON decodes of a file of about 3 KB; per worker, one such write a second.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Mapping
from typing import Any

import ujson

DIRECTORY = ".stats"
"""Under the data directory: one subdirectory per supervisor, named by its process id."""
WRITTEN_AT = "written_at"
"""The key of a worker file's write time (seconds since the epoch), next to the snapshot's figures."""
_FILE = re.compile(r"worker-(\d+)\.json")


def stats_directory(data_dir: str, supervisor_pid: int) -> str:
    """Where the workers of the supervisor `supervisor_pid` write their figures."""
    return os.path.join(data_dir, DIRECTORY, str(supervisor_pid))


def snapshot_path(directory: str, worker: int) -> str:
    return os.path.join(directory, f"worker-{worker}.json")


def write_snapshot(directory: str, worker: int, snapshot: Mapping[str, Any], now: float) -> None:
    """Write `worker`'s `snapshot`, stamped with `now`, atomically (rename); no fsync: figures, not data.

    Raises `OSError` (the directory gone, the disk full).
    """
    path = snapshot_path(directory, worker)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as out:
        out.write(ujson.dumps({**snapshot, WRITTEN_AT: now}))
    os.replace(temporary, path)


def read_snapshots(directory: str, skip: int) -> dict[int, dict[str, Any]]:
    """Every worker's last snapshot in `directory` but `skip`'s (the reader's own), by worker id.

    A file that vanishes or cannot be decoded is passed over (a worker
    restarting, say); a missing directory gives none.
    """
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return {}
    found = {}
    for name in names:
        match = _FILE.fullmatch(name)
        if match is None or int(match.group(1)) == skip:
            continue
        try:
            with open(os.path.join(directory, name), encoding="utf-8") as source:
                snapshot = ujson.loads(source.read())
        except (OSError, ValueError):
            continue
        if isinstance(snapshot, dict) and isinstance(snapshot.get(WRITTEN_AT), (int, float)):
            found[int(match.group(1))] = snapshot
    return found


def prepare_directory(data_dir: str, supervisor_pid: int, alive: Callable[[int], bool]) -> str:
    """Create the directory of `supervisor_pid`'s workers, empty; remove those of supervisors not `alive`.

    Returns the directory.  Raises `OSError` when it cannot be created.
    """
    parent = os.path.join(data_dir, DIRECTORY)
    os.makedirs(parent, exist_ok=True)
    for name in os.listdir(parent):
        if name.isdigit() and (int(name) == supervisor_pid or not alive(int(name))):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    directory = stats_directory(data_dir, supervisor_pid)
    os.makedirs(directory, exist_ok=True)
    return directory


def remove_snapshot(directory: str, worker: int) -> None:
    """Forget `worker`'s figures (it exited); nothing happens when it has none."""
    try:
        os.remove(snapshot_path(directory, worker))
    except FileNotFoundError:
        pass


def process_alive(pid: int) -> bool:
    """Whether a process `pid` exists (one of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- the merge: pure ------------------------------------------------------------------------------

_RULES: dict[tuple[str, ...], Callable[[list[Any]], Any]] = {
    ("uptime_seconds",): max,
    ("sink", "lag_seconds"): max,
    ("sink", "connected"): all,
}
"""Figures not summed, by their path in a snapshot, with how they merge; `merge` documents each."""
_OWN = frozenset({"worker", "disk", "workers", "age_seconds", WRITTEN_AT})
"""Top-level figures not merged: the answering worker's own, or none."""


def merge(worker: int, snapshots: Mapping[int, Mapping[str, Any]], now: float) -> dict[str, Any]:
    """The figures of all workers, as worker `worker` answers for them at `now`.

    `snapshots` are every worker's last published snapshot by worker id,
    each with its write time (`WRITTEN_AT`), as `read_snapshots` gives
    them; `worker`'s own is among them.  A worker's figures are as old as
    its snapshot (``age_seconds``); its uptime is counted on to `now`.  See
    the module docstring for how each figure merges.
    """
    workers: dict[int, dict[str, Any]] = {}
    for key in sorted(snapshots):
        snapshot = snapshots[key]
        age = max(0.0, now - snapshot[WRITTEN_AT])
        figures = {name: value for name, value in snapshot.items() if name != WRITTEN_AT}
        figures["age_seconds"] = round(age, 3)
        if isinstance(figures.get("uptime_seconds"), (int, float)):
            figures["uptime_seconds"] = round(figures["uptime_seconds"] + age, 3)
        workers[key] = figures
    merged = _merge_level([{k: v for k, v in s.items() if k not in _OWN} for s in workers.values()], ())
    merged["worker"] = worker
    if "disk" in workers.get(worker, {}):
        merged["disk"] = workers[worker]["disk"]
    merged["workers"] = {str(key): figures for key, figures in workers.items()}
    return merged


def _merge_level(snapshots: list[Mapping[str, Any]], path: tuple[str, ...]) -> dict[str, Any]:
    keys: dict[str, None] = {}
    for snapshot in snapshots:
        keys.update(dict.fromkeys(snapshot))
    merged: dict[str, Any] = {}
    for key in keys:
        values = [snapshot[key] for snapshot in snapshots if key in snapshot]
        merged[key] = _merge_values(values, (*path, key))
    return merged


def _merge_values(values: list[Any], path: tuple[str, ...]) -> Any:
    rule = _RULES.get(path)
    if rule is not None:
        return rule(values)
    if all(isinstance(value, dict) for value in values):
        return _merge_level(values, path)
    if all(isinstance(value, bool) for value in values):
        return all(values)
    if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        return sum(values)
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return round(sum(values), 6)
    return values[0]  # nothing to add up (None, text): the first worker's
