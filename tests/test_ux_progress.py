"""Issue 26 pt 2: progress says what is happening. A loading note stays only until the stage moves; a quiet stage is
shown as seconds counting up (no percentage), in the context of the event that asked (gradio finds it there)."""

from __future__ import annotations

import contextvars
import re
import time

from popcorn.studio.progress import StageProgress

EVENT = contextvars.ContextVar("event", default=None)


class Sink:
    def __init__(self):
        self.calls = []

    def __call__(self, fraction, desc="", unit=None):
        self.calls.append((fraction, desc, unit, EVENT.get()))


def test_the_loading_note_goes_once_the_stage_moves():
    sink = Sink()
    p = StageProgress(sink, ("retrieve", "plan"), first_use={"plan": "first use: loading the LLM local"})
    p("plan", 0.0, "plan 1 of 1")
    p("plan", 0.0, "plan...")
    p("plan", 0.3, "writing the plan (120 characters)")
    descs = [d for _, d, _, _ in sink.calls]
    assert descs == ["plan: plan 1 of 1 (first use: loading the LLM local)",
                     "plan: plan... (first use: loading the LLM local)",
                     "plan: writing the plan (120 characters)"]
    assert [f for f, *_ in sink.calls] == [0.5, 0.5, 0.65]


def test_a_quiet_stage_counts_seconds_up_in_the_callers_context():
    sink = Sink()
    p = StageProgress(sink, ("plan",))
    p.QUIET_S = 0.3
    EVENT.set("event-1")
    with p.ticking(every_s=0.1):
        p("plan", 0.0, "plan 1 of 1")
        time.sleep(1.6)
        p("plan", 0.5, "writing the plan (200 characters)")
        time.sleep(0.15)  # just reported: not quiet
        ticks_before_writing = [c for c in sink.calls if "still working" in c[1]]
    assert ticks_before_writing, "no tick while the stage was quiet"
    seconds = [int(re.fullmatch(r"plan: plan 1 of 1 · still working, (\d+) s", c[1]).group(1))
               for c in ticks_before_writing]
    assert seconds == sorted(seconds) and seconds[-1] >= 1, seconds  # counting up
    fractions = [c[0] for c in ticks_before_writing]
    assert fractions == sorted(fractions) and fractions[-1] > 0 and fractions[-1] < 0.5  # creeping, within the stage
    assert p.quiet_report(now=time.monotonic() + 10_000)[0] < 1.0  # never reaches the stage's end
    assert all(c[3] == "event-1" for c in sink.calls)  # the ticker thread ran in the event's context
    assert sink.calls[-1][:2] == (0.5, "plan: writing the plan (200 characters)")
    count = len(sink.calls)
    time.sleep(0.5)
    assert len(sink.calls) == count  # the ticker stopped with the action
