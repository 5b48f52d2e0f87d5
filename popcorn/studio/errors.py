"""The studio's errors: every failure reaches the page as "Stage <stage> failed: <message>. <Hint>." """

from __future__ import annotations

from popcorn.types import StageError


class StudioError(Exception):
    """A failure the user can act on; str() is the message to show."""

    def __init__(self, message: str, stage: str = ""):
        super().__init__(message)
        self.stage = stage


class Cancelled(StageError):
    pass


def _sentence(text: str) -> str:
    text = " ".join(str(text or "").split()).rstrip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?…)" else text + "."


def user_message(exc: StageError) -> str:
    """'Stage <stage> failed: <message>. <Hint>.'"""
    message = f"Stage {exc.stage} failed: {' '.join(str(exc.message).split()).rstrip('.')}."
    hint = _sentence(exc.hint)
    return f"{message} {hint}" if hint else message


def studio_error(exc: StageError) -> StudioError:
    return StudioError(user_message(exc), exc.stage)


def error_dict(exc: StageError) -> dict:
    """A StageError as plain values (it crosses a GPU worker's process boundary this way)."""
    return {"stage": exc.stage, "message": exc.message, "hint": exc.hint, "cancelled": isinstance(exc, Cancelled)}


def from_error_dict(d: dict) -> StageError:
    kind = Cancelled if d.get("cancelled") else StageError
    return kind(d["stage"], d["message"], d.get("hint", ""))
