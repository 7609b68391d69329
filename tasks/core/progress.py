"""What a person sees of a stage: its logger, and the progress of its long steps.

`task_logger()` is Prefect's run logger inside a run, the `embedpipe` logger under
`python -m tasks.<stage>` (DVC). Progress: on a terminal, a tqdm bar (items, rate, ETA);
elsewhere (CI, a Prefect worker, `dvc repro` into a file) one log line per tenth of the
work; inside a Prefect task run, a progress artifact updated every `ARTIFACT_EVERY_S`
seconds as well.

A terminal that reports no size (a pseudo-terminal nobody sized: `script -c`, `docker run
-t`, CI runners) reads as 0 x 0; tqdm then takes -1 rows and hides every bar, so such a
terminal gets `COLUMNS` x `LINES`, else 80 x 24. While a bar shows, console log lines are
written above it (`logging_redirect_tqdm`) instead of through it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from types import TracebackType
from typing import Any, TypeVar

ARTIFACT_EVERY_S = 2.0
LOG_STEPS = 10  # log lines per step when no terminal shows a bar
T = TypeVar("T")


def prefect_loaded() -> bool:
    """Whether Prefect is imported: a process that has not imported it is in no Prefect run
    (`python -m tasks.<stage>`, `embedpipe stage`), and need not pay the import to know."""
    return "prefect.context" in sys.modules


def task_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a run, the module logger under `python -m` (DVC)."""
    if not prefect_loaded():
        return logging.getLogger("embedpipe")
    from prefect.exceptions import MissingContextError  # noqa: PLC0415
    from prefect.logging import get_run_logger  # noqa: PLC0415

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("embedpipe")


def _artifact(what: str) -> str | None:
    """A progress artifact of the current task run, None outside one."""
    if not prefect_loaded():
        return None
    from prefect.artifacts import create_progress_artifact  # noqa: PLC0415
    from prefect.context import TaskRunContext  # noqa: PLC0415

    if TaskRunContext.get() is None:
        return None
    key = "embedpipe-" + "".join(c if c.isalnum() else "-" for c in what.lower()) + "-progress"
    return str(create_progress_artifact(0.0, key=key, description=f"{what} progress"))


def terminal_shape() -> dict[str, Any]:
    """tqdm's size arguments for stderr's terminal: follow its size when it has one, else a
    fixed `COLUMNS` x `LINES` (80 x 24 when unset)."""
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    fallback = shutil.get_terminal_size((80, 24))  # COLUMNS / LINES, else 80 x 24
    return {"ncols": fallback.columns, "nrows": fallback.lines}


class Progress:
    """`done` of `total` items of one step (`with Progress("encode", n, "chunks") as p:
    p.advance(k)`); `total` may grow (`p.total += m`) when it is known late, and is 0 while
    unknown (an S3 listing read as it goes): the bar then counts with no ETA."""

    def __init__(self, what: str, total: int, unit: str = "items",
                 terminal: bool | None = None) -> None:
        self.what, self.total, self.unit, self.done = what, total, unit, 0
        self.started = self._artifact_at = time.perf_counter()
        self._logged_step = 0
        self._log = task_logger()
        tty = sys.stderr.isatty() if terminal is None else terminal
        self._redirect = ExitStack()  # console log handlers swapped while the bar shows
        self._bar = self._tqdm(tty)
        self._artifact_id = _artifact(what)

    def _tqdm(self, tty: bool) -> Any:
        if not tty:
            return None
        from tqdm.auto import tqdm  # noqa: PLC0415
        from tqdm.contrib.logging import logging_redirect_tqdm  # noqa: PLC0415

        self._redirect.enter_context(logging_redirect_tqdm())
        return tqdm(total=self.total or None, desc=self.what, unit=f" {self.unit}", leave=False,
                    file=sys.stderr, **terminal_shape())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def advance(self, n: int) -> None:
        """`n` more items done."""
        self.done += n
        if self._bar is not None:
            self._bar.total = self.total or None
            self._bar.update(n)
        else:
            self._log_step()
        now = time.perf_counter()
        if self._artifact_id is not None and self.total and (
                now - self._artifact_at >= ARTIFACT_EVERY_S or self.done >= self.total):
            from prefect.artifacts import update_progress_artifact  # noqa: PLC0415

            update_progress_artifact(self._artifact_id, 100.0 * self.done / max(self.total, 1))
            self._artifact_at = now

    def reach(self, done: int, total: int | None = None) -> None:
        """`done` items done in all (of a new `total`, when given)."""
        if total is not None:
            self.total = total
        if done > self.done:
            self.advance(done - self.done)

    def line(self) -> str:
        """`what: done / total unit (pct), rate/s, ETA`."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        pct = 100 * self.done // max(self.total, 1)
        eta = f", ETA {left:.0f} s" if self.done < self.total and rate > 0 else ""
        shown = f"{rate:,.0f}" if rate >= 10 else f"{rate:.2g}"
        return (f"{self.what}: {self.done:,} / {self.total:,} {self.unit} ({pct}%), "
                f"{shown}/s{eta}")

    def _log_step(self) -> None:  # a total of 0 (unknown) logs no steps
        step = LOG_STEPS * self.done // max(self.total, 1)
        if step > self._logged_step and self.done < self.total:
            self._logged_step = step
            self._log.info("%s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._redirect.close()


def counted(items: Iterable[T], bar: Progress) -> Iterator[T]:
    """`items`, advancing `bar` by one as the consumer asks for the next (each item counts
    once the consumer is done with it)."""
    for item in items:
        yield item
        bar.advance(1)
