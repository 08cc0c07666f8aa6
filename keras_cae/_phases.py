"""`PhaseClock`: wall seconds per phase of a job, each phase announced as it starts.

`keras-cae train` uses it for its progress lines and the summary's per-phase times;
it imports no TensorFlow, so the command line can time loading and the import itself.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

__all__ = ["PhaseClock"]


class PhaseClock:
    """Wall seconds per phase of a job, each phase announced before it starts.

    Example:

    >>> clock = PhaseClock(print)
    >>> with clock("probe", "fitting the probe"):
    ...     pass
    fitting the probe ...
    >>> list(clock.seconds)
    ['probe']
    """

    def __init__(self, say: Callable[[str], None] | None = None) -> None:
        self.say = say
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str, message: str | None = None) -> Iterator[None]:
        if message and self.say is not None:
            self.say(f"{message} ...")
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[phase] = round(self.seconds.get(phase, 0.0) + elapsed, 3)
