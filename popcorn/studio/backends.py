"""The LLM and video pickers: the backends the owner enabled (popcorn.serve.access), each usable or labelled with why not.

On ZeroGPU a GPU backend is not asked `available()` in the main process (that would touch CUDA there): it runs in a
GPU slot, where the pipeline asks it.
"""

from __future__ import annotations

from popcorn import llm, video
from popcorn.serve import access, zerogpu
from popcorn.studio.views import details_fold, plain_markdown
from popcorn.types import StageError


def _registry(kind: str):
    return (llm.registered(), llm.get_llm) if kind == "llm" else (video.registered(), video.get_generator)


def _check(backend) -> tuple[bool, str]:
    """available() of a backend, except a GPU one on ZeroGPU (its GPU is in the slot; no CUDA call here)."""
    if zerogpu.active() and zerogpu.needs_gpu(backend):
        return True, ""
    try:
        return backend.available()
    except Exception as exc:  # an availability check that broke: shown as unavailable, with why
        return False, f"{type(exc).__name__}: {exc}"


def rows(kind: str) -> list[dict]:
    """[{"name", "description", "available", "reason"}] for the enabled backends of `kind` ("llm" | "video")."""
    names, get = _registry(kind)
    out = []
    for name in names:
        if not access.is_enabled(name):
            continue
        try:
            backend = get(name)
            ok, reason = _check(backend)
            description = getattr(backend, "description", "")
        except Exception as exc:  # a backend that cannot even be built is shown as unavailable, with why
            ok, reason, description = False, str(exc), ""
        out.append({"name": name, "description": description, "available": bool(ok), "reason": reason})
    return out


def _choices(rows: list[dict]) -> list[tuple[str, str]]:
    out = []
    for row in rows:
        if row["available"]:
            out.append((row["name"], row["name"]))
        else:
            reason = " ".join(str(row.get("reason", "")).split())
            out.append((f"{row['name']} (unavailable: {reason[:90]})", row["name"]))
    return out


def _default(rows: list[dict], preferred: str) -> str | None:
    names = [r["name"] for r in rows if r["available"]]
    return preferred if preferred in names else (names[0] if names else (rows[0]["name"] if rows else None))


def backend_choices() -> dict:
    """Dropdown choices for every enabled LLM and video generator; an unusable one is labelled with why.

    {"llm": [(label, name)], "llm_default": name, "video": [...], "video_default": name, "custom": bool}
    """
    llms, videos = rows("llm"), rows("video")
    return {
        "llm": _choices(llms), "llm_default": _default(llms, llm.default_llm()),
        "video": _choices(videos), "video_default": _default(videos, video.DEFAULT_VIDEO),
        "custom": access.custom_allowed(),
    }


def backend_info(kind: str, name: str) -> str:
    """One markdown line about the chosen backend (a typed one, e.g. local:/path.gguf, too, when the owner allows
    those): what it is, and why it cannot run here when it cannot."""
    try:
        access.check_backend(kind, name)
    except StageError as exc:
        return f"⚠️ {plain_markdown(exc.message)}: {plain_markdown(exc.hint)}"  # quotes the typed name: text
    _, get = _registry(kind)
    try:
        backend = get(name)
    except StageError as exc:
        return f"⚠️ unknown backend {plain_markdown(name)}: {plain_markdown(exc.message)}"
    ok, reason = _check(backend)
    # the name and whether it runs here in view; what it is and why not (class names, settings) behind the fold
    about = [plain_markdown(getattr(backend, "description", "") or str(name))]
    if not ok:
        about.append(f"Why it cannot run here: {plain_markdown(reason)}")
    line = (f"✅ {plain_markdown(name)} is ready" if ok else
            f"⚠️ {plain_markdown(name)} cannot run on this studio: pick another (Details says why)")
    if kind == "video":  # what the plan writes for it: the video prompt fitted to its text encoder, in words
        fit = video.prompt_budget(name)
        line += (f"\n\n📏 The plan writes a video prompt of {fit.words_min} to ~{fit.words_max} words for "
                 f"{plain_markdown(name)}: what it reads in full.")
        about.append(plain_markdown(video.describe_budget(name)))  # the encoder's tokens and where they were read
    line += "\n\n" + details_fold("Details", "\n\n".join(about))
    return line
