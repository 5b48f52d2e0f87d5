"""Progress by stage name, and Cancel: a visitor's Cancel reaches each of its running actions, in this process or in
a GPU worker (the cancel flag is a file in the action's zerogpu.Channel)."""

from __future__ import annotations

import threading
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
    it is loading. When the cancel flag is set, the next report raises Cancelled (the pipeline stops there).
    `cancel` is anything with is_set(): a threading.Event or a zerogpu.Channel.
    """

    def __init__(self, sink: Sink | None, stages: tuple[str, ...], cancel=None, first_use: dict[str, str] | None = None):
        self.sink, self.stages, self.cancel = sink, tuple(stages), cancel
        self.first_use = first_use or {}

    def __call__(self, stage: str, fraction: float, message: str) -> None:
        self.check(stage)
        self.show(stage, fraction, message)

    def check(self, stage: str) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(stage, "cancelled by the user", "press the button again to start over")

    def show(self, stage: str, fraction: float, message: str) -> None:
        """Report without checking Cancel (progress relayed from a GPU worker, which checks on its side)."""
        fraction = min(1.0, max(0.0, float(fraction)))
        if stage in self.first_use and fraction < 1.0:
            message = f"{message} ({self.first_use[stage]})"
        i = self.stages.index(stage) if stage in self.stages else len(self.stages) - 1
        if self.sink is not None:
            self.sink((i + fraction) / max(1, len(self.stages)), desc=f"{stage}: {message}")


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
