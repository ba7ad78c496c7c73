"""Progress of long work (epochs, caching, checking images): a live bar on a terminal; in a log or a pipe, where a
bar's carriage returns pile up into one unreadable line, a plain line every half minute with the count, the rate
and the time left; nothing in quiet mode."""

from __future__ import annotations

import contextlib
import contextvars
import sys
import time
from collections.abc import Iterable, Iterator

LINE_EVERY_S = 30.0

# Set within `quiet_progress()`: the work of a quiet command or run (--quiet, train.quiet) shows no progress, in
# whichever part of strop it runs (a folder of images checked deep in the data readers).
_QUIET = contextvars.ContextVar("quiet_progress", default=False)


@contextlib.contextmanager
def quiet_progress(quiet: bool = True):
    """Within it (where `quiet`, or where an outer one is), progress shows only a study's named bars."""
    token = _QUIET.set(quiet or _QUIET.get())
    try:
        yield
    finally:
        _QUIET.reset(token)


# Set within `bars_of_quiet_runs()`: a study (cv, curve, search) runs its fits quiet, as their lines would bury
# its own, yet a run can take minutes, and its epochs' bars are all that shows it has not stalled.
# The value is the run's name, which each bar's starts with; None: not within one.
_BARS_OF_QUIET_RUNS: contextvars.ContextVar[str | None] = contextvars.ContextVar("bars_of_quiet_runs", default=None)


@contextlib.contextmanager
def bars_of_quiet_runs(show: bool = True, run: str = "run"):
    """Within it (where `show`), named progress (epochs, caching) shows although the run itself is quiet, each
    bar named after the `run` it is in (`seed 42 fold 2/5, epoch 1/3`)."""
    token = _BARS_OF_QUIET_RUNS.set(run if show else None)
    try:
        yield
    finally:
        _BARS_OF_QUIET_RUNS.reset(token)


def progress(iterable: Iterable, desc: str, show: bool = True, unit: str = "batch", total: int | None = None,
             every: float | None = None):
    """`iterable`, wrapped so that iterating over it shows progress on stderr; the wrapper's set_postfix(**values)
    adds values (a running loss) to what is shown. Nothing shows within `quiet_progress`, but for named progress
    within `bars_of_quiet_runs`, which shows in any case."""
    quiet, run = _QUIET.get(), _BARS_OF_QUIET_RUNS.get()
    if desc and run is not None and (quiet or not show):  # a study's quiet run: its bars, named after it
        show, desc = True, f"{run}, {desc}"
    elif quiet:
        show = False
    if not show:
        return Silent(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, unit=unit, dynamic_ncols=True)
    return Lines(iterable, desc, unit, total, LINE_EVERY_S if every is None else every)


class Silent:
    """Quiet mode: the iterable as it is."""

    def __init__(self, iterable: Iterable):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def set_postfix(self, refresh: bool = True, **values) -> None:
        pass


class Lines:
    """A plain line on stderr at most every `every` seconds: `epoch 2/9: 120/313 batches, 2.1 batch/s,
    ETA 92s, loss=0.8123`."""

    def __init__(self, iterable: Iterable, desc: str, unit: str, total: int | None, every: float):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{name}={value}" for name, value in values.items())

    def __iter__(self) -> Iterator:
        started = last = time.perf_counter()
        for done, item in enumerate(self.iterable, 1):
            yield item
            now = time.perf_counter()
            if now - last >= self.every and done != self.total:
                print(self._line(done, now - started), file=sys.stderr, flush=True)
                last = now

    def _line(self, done: int, seconds: float) -> str:
        rate = done / seconds if seconds > 0 else 0.0
        plural = self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")
        parts = [f"{done}/{self.total} {plural}" if self.total else f"{done} {plural}",
                 f"{rate:.1f} {self.unit}/s"]
        if self.total and rate > 0:
            parts.append(f"ETA {(self.total - done) / rate:.0f}s")
        if self.postfix:
            parts.append(self.postfix)
        return f"{self.desc}: " + ", ".join(parts)


class StudyClock:
    """A study's runs, timed: after each, how long it took and about how long the runs left will take. `sizes`:
    the size of each run left, in the order they run (a curve's examples; for runs alike, any equal values). Runs
    alike take the mean time of those this session finished (a resumed study's recorded runs took no time here);
    runs of several sizes, a + b * size fitted once two sizes are finished (a run's fixed cost, loading the model
    and validating on a set of one size, is much of a small run's time: no forecast from one size alone)."""

    def __init__(self, sizes: list[float]):
        self.left, self.done, self.started = list(sizes), [], time.perf_counter()
        self.alike = len(set(self.left)) <= 1

    def lap(self) -> str:
        """`(41 s; about 3 min left)` for the run just finished (`(41 s)` where no forecast can be made yet)."""
        now = time.perf_counter()
        took, self.started = now - self.started, now
        self.done.append((self.left.pop(0), took))
        forecast = self._forecast()
        left = f"; about {duration(forecast)} left" if self.left and forecast is not None else ""
        return f"({duration(took)}{left})"

    def _forecast(self) -> float | None:
        import numpy as np

        sizes, seconds = (np.array(column, dtype=np.float64) for column in zip(*self.done))
        if self.alike:
            return float(seconds.mean()) * len(self.left)
        if len(set(sizes)) < 2:
            return None
        slope, fixed = np.polyfit(sizes, seconds, 1)
        slope, fixed = (slope, fixed) if slope >= 0 and fixed >= 0 else (0.0, float(seconds.mean()))
        return float(sum(fixed + slope * size for size in self.left))


def duration(seconds: float) -> str:
    """`7 s`, `3 min`, `2.5 h`: as precise as a forecast of the time left deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
