"""One registry of named backends, shared by f's LLMs (popcorn/llm/base.py) and g's video generators
(popcorn/video/base.py).

    LLMS = Registry("LLM backend", stage="plan", hint=..., max_instances=16, with_argument=True)
    LLMS.register("local", LlamaCppLLM.packaged, "Qwen2.5-Coder-1.5B-Instruct, embedded")
    LLMS.get("local")               # built once by its factory, then kept (the most recently used `max_instances`)
    LLMS.get("local:/models/x.gguf")  # with_argument: the factory registered as "local", given "/models/x.gguf"
    LLMS.rows()                     # [{"name", "description", "available", "reason"}]: what can run here, and why not

A backend is any object with `name`, `description` and `available() -> (ok, reason)`. Factories must be cheap: no
model load and no network call before the backend's first real use. An unknown name is a StageError of the
registry's stage (plan for an LLM, render for a video model) with the names that exist.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from popcorn.types import StageError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable
    description: str


class Registry(Generic[T]):
    def __init__(self, noun: str, stage: str, hint: Callable[[list[str]], str], *, max_instances: int | None = None,
                 with_argument: bool = False):
        self.noun, self.stage, self.hint = noun, stage, hint
        self.max_instances = max_instances  # None: every registered name is kept once built
        self.with_argument = with_argument  # "name:arg" -> factory(arg)
        self._entries: dict[str, Entry] = {}
        self._instances: "OrderedDict[str, T]" = OrderedDict()  # least recently used first
        self._lock = threading.RLock()

    def copy(self) -> "Registry[T]":
        """A registry with the same entries and built instances (a test registers into it and drops it after)."""
        other = Registry(self.noun, self.stage, self.hint, max_instances=self.max_instances,
                         with_argument=self.with_argument)
        with self._lock:
            other._entries, other._instances = dict(self._entries), OrderedDict(self._instances)
        return other

    def register(self, name: str, factory: Callable[..., T], description: str = "") -> None:
        """Make a backend reachable as get(name). Registering a name again replaces it (and drops what was built)."""
        if not name or not name.strip() or (self.with_argument and ":" in name):
            raise ValueError(f"a {self.noun} needs a name without ':' ({name!r})")
        with self._lock:
            self._entries[name] = Entry(name, factory, description)
            self._forget(name)

    def unregister(self, name: str) -> None:
        with self._lock:
            self._entries.pop(name, None)
            self._forget(name)

    def _forget(self, name: str) -> None:
        for key in [k for k in self._instances if k == name or k.startswith(name + ":")]:
            del self._instances[key]

    def registered(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def built(self) -> list[str]:
        """The names built and kept now, least recently used first."""
        with self._lock:
            return list(self._instances)

    def get(self, name: str) -> T:
        """The backend called `name`, built once and kept. Unknown names raise StageError(self.stage, ...)."""
        name = (name or "").strip()
        with self._lock:
            if name in self._instances:
                self._instances.move_to_end(name)
                return self._instances[name]
            base, _, arg = name.partition(":") if self.with_argument else (name, "", "")
            entry = self._entries.get(base)
            if entry is None:
                raise StageError(self.stage, f"unknown {self.noun} {name!r}", self.hint(self.registered()))
            try:
                backend = entry.factory(arg) if arg else entry.factory()
            except TypeError as exc:
                if not arg:
                    raise
                raise StageError(self.stage, f"{self.noun} {base!r} takes no argument ({name!r})", str(exc)) from exc
            backend.name = name  # the name it was asked for, e.g. "local:/models/x.gguf"
            if not getattr(backend, "description", ""):
                backend.description = entry.description
            self._instances[name] = backend
            while self.max_instances is not None and len(self._instances) > self.max_instances:
                self._instances.popitem(last=False)
            return backend

    def rows(self) -> list[dict]:
        """[{"name", "description", "available", "reason"}] for every registered name, in registration order."""
        rows = []
        for entry in list(self._entries.values()):
            description = entry.description
            try:
                backend = self.get(entry.name)
                description = description or backend.description
                ok, reason = backend.available()
            except Exception as exc:  # a backend that cannot even be built is shown as unavailable, with why
                ok, reason = False, str(exc)
            rows.append({"name": entry.name, "description": description, "available": bool(ok), "reason": reason})
        return rows
