"""Splitting a batch across processes with accelerate's own process state.

`accelerate launch [--cpu] --num_processes N -m popcorn batch ...` starts N copies of the batch; each asks
accelerate's PartialState which process it is and takes its part of the plan groups through
`split_between_processes` (contiguous, disjoint, together complete). Without a launcher there is one process and
it takes everything. Nothing here schedules work: the split is accelerate's.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator


@dataclass
class Shard:
    index: int  # this process
    count: int  # all processes
    state: Any = None  # accelerate.PartialState (None: a single process, accelerate not asked)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"

    def take(self, items: list) -> list:
        """This process's part of `items` (every process must pass the same list in the same order)."""
        if self.state is None or self.count == 1:
            return list(items)
        with self.state.split_between_processes(list(items)) as mine:
            return list(mine)

    def wait(self) -> None:
        """Every process reaches this point before any goes on."""
        if self.state is not None and self.count > 1:
            self.state.wait_for_everyone()

    @contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (e.g. creating the store), then the others."""
        if self.state is None or self.count == 1:
            yield
        else:
            with self.state.main_process_first():
                yield


def launched() -> bool:
    """True inside `accelerate launch` / torchrun (the launcher sets these)."""
    import os

    return any(os.environ.get(name) for name in ("ACCELERATE_PROCESS_INDEX", "LOCAL_RANK", "RANK", "WORLD_SIZE"))


def current_shard() -> Shard:
    """This process's place: from accelerate when launched by it, else a single process (accelerate not imported)."""
    if not launched():
        return Shard(0, 1)
    from accelerate import PartialState

    state = PartialState()
    return Shard(int(state.process_index), int(state.num_processes), state)
