"""Progress of long work (epochs, caching, checking images): a live bar on a terminal; in a log or a pipe, where a
bar's carriage returns pile up into one unreadable line, a plain line every half minute with the count, the rate
and the time left; nothing in quiet mode."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator

LINE_EVERY_S = 30.0


def progress(iterable: Iterable, desc: str, show: bool = True, unit: str = "batch", total: int | None = None,
             every: float = LINE_EVERY_S):
    """`iterable`, wrapped so that iterating over it shows progress on stderr; the wrapper's set_postfix(**values)
    adds values (a running loss) to what is shown."""
    if not show:
        return Silent(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, unit=unit, dynamic_ncols=True)
    return Lines(iterable, desc, unit, total, every)


class Silent:
    """Quiet mode: the iterable as it is."""

    def __init__(self, iterable: Iterable):
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def set_postfix(self, **values) -> None:
        pass


class Lines:
    """A plain line on stderr at most every `every` seconds: `epoch 2/9: 120/313 batches, 2.1 batch/s,
    ETA 92s, loss=0.8123`."""

    def __init__(self, iterable: Iterable, desc: str, unit: str, total: int | None, every: float):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.postfix = ""

    def set_postfix(self, **values) -> None:
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
