"""f(x): the LLM that writes a plan. One protocol (base.LLM), a registry of backends, and plan parsing.

    from popcorn.llm import get_llm, parse_plan, PLAN_SCHEMA
    llm = get_llm("local")                      # or "deepseek-chat", "local:/models/x.gguf", ...
    answer = llm.complete(messages, json_schema=PLAN_SCHEMA, max_tokens=512)
    plan = parse_plan(answer.text)              # {"title", "cover_prompt", "video_prompt", "reasoning"}

Each backend module registers itself on import; adding a model is one small module (or one factory) plus a
`register(...)` line, imported below.
"""

from popcorn.llm.base import LLM, Completion, default_llm, get_llm, list_backends, register, registered
from popcorn.llm.parse import parse_plan
from popcorn.llm.plan_schema import PLAN_SCHEMA
from popcorn.llm.trim import shorten_title

# backends (each registers its names at import)
from popcorn.llm import local as _local  # noqa: E402,F401  local, qwen2.5-1.5b-instruct, smollm2
from popcorn.llm import openai_compat as _openai_compat  # noqa: E402,F401  openai, deepseek-*, openai-compatible
from popcorn.llm import hf_transformers as _hf_transformers  # noqa: E402,F401  transformers, llama-3.3-70b, ...

__all__ = [
    "LLM",
    "Completion",
    "PLAN_SCHEMA",
    "default_llm",
    "get_llm",
    "list_backends",
    "parse_plan",
    "register",
    "registered",
    "shorten_title",
]
