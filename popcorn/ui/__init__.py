"""The one module under popcorn/ that imports gradio: the glue app.py needs between Gradio and popcorn.studio."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import gradio as gr

from popcorn.studio import StudioError


@contextmanager
def shown_errors() -> Iterator[None]:
    """A StudioError becomes a gr.Error: the message in a toast, no traceback, the spinner stops, inputs stay."""
    try:
        yield
    except StudioError as exc:
        title = f"{exc.stage or 'Studio'} failed"
        raise gr.Error(str(exc), duration=None, title=title, print_exception=False) from None


def session_key(request: gr.Request | None) -> str:
    """Who is asking (a browser tab or an API client): the key under which Cancel finds the running action."""
    return str(getattr(request, "session_hash", "") or "")


def gpu(duration: int) -> Callable:
    """spaces.GPU(duration=...) on a Hugging Face ZeroGPU Space; elsewhere the function is left as it is."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
