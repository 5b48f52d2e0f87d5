"""Progress by stage name, and Cancel: a visitor's Cancel reaches each of its running actions, in this process or in
a GPU worker (the cancel flag is a file in the action's zerogpu.Channel)."""

from __future__ import annotations

import contextvars
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from popcorn.studio.errors import Cancelled
from popcorn.serve.zerogpu import Channel

Sink = Callable[..., object]  # sink(fraction, desc=...), e.g. gr.Progress

_CANCEL: dict[str, set[Channel]] = {}  # the running actions of each visitor session (plan and render may overlap)
_CANCEL_LOCK = threading.Lock()


class StageProgress:
    """pipeline progress(stage, fraction, message) -> sink(overall fraction, desc='stage: message').

    The overall fraction spreads the action's stages evenly. A stage used for the first time in this process says what
    it is loading (its `first_use` note) until its fraction first moves: then the loading is over and the stage is
    doing its own work (the LLM writing, the video model's steps), and the note goes. When the cancel flag is set, the
    next report raises Cancelled (the pipeline stops there). `cancel` is anything with is_set(): a threading.Event or
    a zerogpu.Channel.

    While `ticking()`, a stage that has said nothing for QUIET_S seconds (a model loading, the LLM reading its
    instructions) is shown as what it is: its last message and the seconds it has been quiet, counting up, with no
    bar (sink(None, desc=...): no fraction is known), instead of a bar parked at the last fraction.
    """

    QUIET_S = 2.0
    CREEP_S = 30.0

    def __init__(self, sink: Sink | None, stages: tuple[str, ...], cancel=None, first_use: dict[str, str] | None = None):
        self.sink, self.stages, self.cancel = sink, tuple(stages), cancel
        self.first_use = first_use or {}
        self._start: dict[str, float] = {}  # each stage's first fraction: the note stays until the stage moves past it
        self._last = ("", "", 0.0, 0.0, 0.0)  # (stage, desc, when, overall fraction, the stage's end) of the latest
        self._lock = threading.Lock()

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        self.check(stage)
        self.show(stage, fraction, message)

    def check(self, stage: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(stage, "cancelled by the user", "press the button again to start over")

    def show(self, stage: str, fraction: float, message: str) -> None:
        """Report without checking Cancel (progress relayed from a GPU worker, which checks on its side)."""
        fraction = min(1.0, max(0.0, float(fraction)))
        start = self._start.setdefault(stage, fraction)
        if stage in self.first_use and fraction <= start and fraction < 1.0:
            message = f"{message} ({self.first_use[stage]})"
        i = self.stages.index(stage) if stage in self.stages else len(self.stages) - 1
        desc = f"{stage}: {message}"
        n = max(1, len(self.stages))
        with self._lock:
            self._last = (stage, desc, time.monotonic(), (i + fraction) / n, (i + 1) / n)
        if self.sink is not None:
            self.sink((i + fraction) / n, desc=desc)

    def quiet_report(self, now: float | None = None) -> tuple[float, str] | None:
        """(overall fraction, desc) when the latest stage has been quiet for QUIET_S or more, else None. The desc
        says so, with the seconds; the bar creeps from where the stage left it towards the stage's end (half-way
        after CREEP_S, never reaching it), so it moves without claiming the stage is nearly done."""
        with self._lock:
            stage, desc, when, fraction, end = self._last
        quiet = (time.monotonic() if now is None else now) - when
        if not stage or quiet < self.QUIET_S:
            return None
        creep = (end - fraction) * quiet / (quiet + self.CREEP_S)
        return fraction + creep, f"{desc} · still working, {int(quiet)} s"

    @contextmanager
    def ticking(self, every_s: float = 1.0) -> Iterator["StageProgress"]:
        """Once a second, show a quiet stage's seconds so far (see the class). The sink is called in the caller's
        context (gradio finds its event through context variables)."""
        if self.sink is None:
            yield self
            return
        context, stop = contextvars.copy_context(), threading.Event()

        def tick() -> None:
            while not stop.wait(every_s):
                if self.cancel is not None and self.cancel.is_set():
                    continue  # cancelling: the stage is stopping, not still working
                quiet = self.quiet_report()
                if quiet is not None:
                    try:
                        context.run(self.sink, quiet[0], desc=quiet[1])
                    except Exception:  # a page that went away: the work goes on, unreported
                        return

        thread = threading.Thread(target=tick, name="popcorn-progress", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join(timeout=5)


def cancel(key: str | None) -> str:
    """Ask every action running under `key` (a visitor's session) to stop at its next progress report."""
    with _CANCEL_LOCK:
        channels = list(_CANCEL.get(str(key or ""), ()))
    if not channels:
        return "Nothing to cancel."
    for channel in channels:
        channel.set()
    return "Cancelling: the running stage stops at its next step."


@contextmanager
def cancellable(key: str | None) -> Iterator[Channel]:
    """The channel (cancel flag + progress log) of one action, findable under `key` while the action runs."""
    channel, key = Channel(), str(key or "")
    if key:
        with _CANCEL_LOCK:
            _CANCEL.setdefault(key, set()).add(channel)
    try:
        yield channel
    finally:
        if key:
            with _CANCEL_LOCK:
                running = _CANCEL.get(key, set())
                running.discard(channel)
                if not running:
                    _CANCEL.pop(key, None)
        channel.close()
