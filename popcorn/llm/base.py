"""The LLM protocol f and the registry of backends.

A backend is any object with `name`, `description`, `available()` and `complete()`. A backend module registers a
factory at import:

    register("local", LlamaCppLLM.packaged, "Qwen2.5-Coder-1.5B-Instruct Q4_K_M, embedded (llama.cpp, CPU)")

`get_llm("local")` builds it once and keeps it (the MAX_INSTANCES most recently used backends are kept: names with an
argument are unbounded in number). A name with an argument, `"local:/models/x.gguf"`, calls the factory registered
under the part before the first ":" with the rest (`factory("/models/x.gguf")`). Factories must be cheap: no model load
and no network call happens before the first `complete()`. The registry is popcorn/registry.py's, shared with the video
generators.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from popcorn.registry import Registry
from popcorn.types import StageError

DEFAULT_LLM = "local"
MAX_INSTANCES = 16


@dataclass
class Completion:
    text: str  # the model's answer (should hold the JSON plan)
    reasoning: str = ""  # a separate reasoning channel when the API gives one (deepseek-reasoner)
    model: str = ""  # the concrete model id used
    usage: dict = field(default_factory=dict)  # prompt_tokens, completion_tokens, seconds, ...


@runtime_checkable
class LLM(Protocol):
    name: str
    description: str

    def available(self) -> tuple[bool, str]:
        """(ok, why not): cheap, no model load, no network call."""
        ...

    def complete(
        self,
        messages: list[dict],
        *,
        json_schema: dict | None = None,
        max_tokens: int = 1024,
        temperature: float = 0.7,
        seed: int | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> Completion:
        """The model's answer. `on_text(text so far)` is called as the answer grows (per token where the backend
        streams, else once at the end); an exception raised by it stops the generation and propagates: that is how
        Cancel stops a running plan."""
        ...


LLMS: Registry[LLM] = Registry(
    "LLM backend", stage="plan", max_instances=MAX_INSTANCES, with_argument=True,
    hint=lambda names: "use one of: " + ", ".join(sorted(names)) + " (also local:/path/to/model.gguf, "
    "transformers:<hub id or folder>, openai-compatible:<model>); `python -m popcorn llms` lists them")


def require_available(llm: LLM) -> None:
    """Raise the plan stage's error, with the backend's own reason, when `llm` cannot run here."""
    ok, why = llm.available()
    if not ok:
        raise StageError("plan", f"{llm.name} is not available: {why}", why)


def register(name: str, factory: Callable[..., LLM], description: str = "") -> None:
    """Make a backend reachable as get_llm(name) (and get_llm("name:<arg>") -> factory(arg))."""
    LLMS.register(name, factory, description)


def registered() -> list[str]:
    return LLMS.registered()


def default_llm() -> str:
    """POPCORN_LLM, else the embedded local model."""
    return os.environ.get("POPCORN_LLM", "").strip() or DEFAULT_LLM


def get_llm(name: str | None = None) -> LLM:
    """The backend called `name` (built once per process). Unknown names raise StageError('plan', ...)."""
    return LLMS.get((name or "").strip() or default_llm())


def list_backends() -> list[dict]:
    """[{"name", "description", "available", "reason"}] for every registered backend, in registration order."""
    return LLMS.rows()
