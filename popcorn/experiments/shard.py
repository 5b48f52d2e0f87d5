"""Splitting a batch across processes with accelerate's own process state.

`accelerate launch --multi_gpu --num_processes N -m popcorn batch ...` starts N copies of the batch (through torchrun;
on a machine without CUDA they run on the CPU and join over gloo); each asks accelerate's PartialState which process
it is and takes its part of the runs through `split_between_processes` (contiguous, disjoint, together complete).
`accelerate launch --cpu --num_processes N` starts N processes only through MPI (`--mpirun_hostfile`); without it
accelerate starts one, which takes everything, and the batch says so. Without a launcher there is one process.
Nothing here schedules work: the split is accelerate's.
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


LAUNCHER_VARIABLES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "ACCELERATE_USE_CPU")


def launched() -> bool:
    """True inside `accelerate launch`, torchrun or mpirun (the launchers set these)."""
    import os

    return any(os.environ.get(name) for name in LAUNCHER_VARIABLES)


def current_shard() -> Shard:
    """This process's place: from accelerate when launched by it, else a single process (accelerate not imported)."""
    if not launched():
        return Shard(0, 1)
    import os
    import sys

    import torch
    from accelerate import PartialState

    # processes without CUDA (a CPU machine, or --cpu) join as accelerate's MULTI_CPU (gloo) rather than each alone
    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() == "true" or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    if state.num_processes == 1 and os.environ.get("MASTER_ADDR") and os.environ.get("ACCELERATE_USE_CPU") == "True":
        print("popcorn batch: accelerate started one process: with --cpu it starts several only through MPI "
              "(--mpirun_hostfile); `accelerate launch --multi_gpu --num_processes N` starts N on the CPU too",
              file=sys.stderr, flush=True)
    return Shard(int(state.process_index), int(state.num_processes), state)
