"""Who may do what on a shared studio: visitors, the owner, the backends a visitor may choose, and input limits.

No gradio here: the UI layer hands in what it knows about a request (a cookie, a session hash, a signed-in user) and
gets plain values back.

Visitors
    A browser carries a signed visitor cookie (`COOKIE`, HttpOnly, set by the server on the first page load): its runs
    stay its own across reloads. A Hugging Face sign-in (OAuth on a Space) names the visitor instead. An API client
    without the cookie is its gradio session. `visitor_id(...)` turns these into one id: "hf:<user>", "c:<token>" or
    "s:<session hash>".
Owner
    POPCORN_ADMIN_SECRET set: a visitor who gives it (compared with hmac.compare_digest, never logged) sees every run.
    Tries are limited per visitor and per server (SECRET_TRIES).
Backends
    POPCORN_BACKENDS: the LLM and video names remote callers may choose (comma-separated; "*" = all registered).
    Default: all registered on a studio bound to this machine only (127.0.0.1), "local,storyboard" on a public one
    (a Space, or any other address). Typed names with an argument (local:/x.gguf, transformers:<id>,
    openai-compatible:<model>) only when POPCORN_ALLOW_CUSTOM_BACKENDS=1.
Paid backends (API keys of the owner)
    POPCORN_PAID_LIMIT calls per POPCORN_PAID_WINDOW seconds per visitor (default 5 per 3600), and POPCORN_PAID_TOTAL
    for all visitors together (default 10 x the per-visitor limit: visitor ids are free to renew); the owner is
    exempt. A plan of N candidates is N calls.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import os
import secrets
import threading
import time
from collections import defaultdict, deque

from popcorn import config
from popcorn.types import StageError

COOKIE = "popcorn_visitor"
COOKIE_MAX_AGE = 400 * 24 * 3600  # the longest browsers keep a cookie
PUBLIC_DEFAULT_BACKENDS = ("local", "storyboard")

# input limits in characters; above them a request is refused with a message naming the field and the limit. (Below
# them the stages still cut: the query to 2000 characters, the title to 50, the prompts to 2000, each with a note.)
LIMITS = {"query": 10_000, "title": 500, "cover_prompt": 4000, "video_prompt": 4000, "description": 4000,
          "category": 80, "backend": 300, "run_id": 80, "secret": 500}
MAX_SEED = 2**31 - 1

# backends that spend the owner's money (an API key): rate-limited per visitor
PAID_PREFIXES = ("openai", "deepseek", "sora", "kling")

_TRUE = ("1", "true", "yes", "on")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


# ------------------------------------------------------------------------------------------------------------ visitors


def _secret_key() -> bytes:
    """The key that signs visitor cookies: POPCORN_SECRET, else a random key kept in <home>/secret.key (0600)."""
    given = os.environ.get("POPCORN_SECRET", "")
    if given:
        return given.encode()
    path = config.home_dir() / "secret.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
    return path.read_bytes()


def _sign(token: str) -> str:
    mac = hmac.new(_secret_key(), token.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def new_cookie() -> str:
    """A fresh visitor cookie value: a 128-bit random token and its signature."""
    token = secrets.token_urlsafe(16)
    return f"{token}.{_sign(token)}"


def cookie_token(value: str | None) -> str | None:
    """The token of a validly signed cookie value, else None (a forged or foreign cookie is ignored)."""
    token, _, mac = str(value or "").partition(".")
    if not token or not mac or len(token) > 64:
        return None
    # compared as bytes: hmac.compare_digest raises on str with non-ASCII characters (a crafted cookie -> HTTP 500)
    return token if hmac.compare_digest(mac.encode(errors="replace"), _sign(token).encode()) else None


def visitor_id(cookie: str | None = None, session: str | None = None, user: str | None = None) -> str:
    """One id per visitor: the signed-in HF user, else the signed cookie, else the gradio session ('' if none)."""
    if user:
        return f"hf:{user}"
    token = cookie_token(cookie)
    if token:
        return f"c:{token}"
    return f"s:{session}" if session else ""


# ------------------------------------------------------------------------------------------------------------ owner

_OWNERS: set[str] = set()
_OWNERS_LOCK = threading.Lock()


def owner_mode_enabled() -> bool:
    return bool(os.environ.get("POPCORN_ADMIN_SECRET", ""))


def admin_secret_ok(secret, who: str) -> bool:
    """Is `secret` POPCORN_ADMIN_SECRET? Compared in constant time (digests, so the length is not timed either), never
    logged. Each try counts against `who` and against the server as a whole (a visitor id is free to renew): over
    SECRET_TRIES, StageError('input') with the wait, and the secret is not compared."""
    expected = os.environ.get("POPCORN_ADMIN_SECRET", "")
    if not expected:
        return False
    for key, limiter in (("server", _SECRET_TRIES_SERVER), (who or "anonymous", _SECRET_TRIES)):
        wait = limiter.take(key)
        if wait:
            raise StageError("input", "too many admin secret tries on this studio",
                             f"try again in {max(1, round(wait / 60))} minutes")
    given = hashlib.sha256(str(secret or "").encode(errors="replace")).digest()
    return hmac.compare_digest(given, hashlib.sha256(expected.encode()).digest())


def sign_in_owner(visitor: str, secret: str) -> bool:
    """True (and `visitor` becomes the owner for this server's life) when `secret` is POPCORN_ADMIN_SECRET
    (admin_secret_ok: StageError when there were too many tries)."""
    if not visitor or not admin_secret_ok(secret, visitor):
        return False
    with _OWNERS_LOCK:
        _OWNERS.add(visitor)
    return True


def sign_out_owner(visitor: str) -> None:
    with _OWNERS_LOCK:
        _OWNERS.discard(visitor)


def is_owner(visitor: str) -> bool:
    with _OWNERS_LOCK:
        return bool(visitor) and visitor in _OWNERS and owner_mode_enabled()


def may_see(visitor: str, run_owner: str | None) -> bool:
    """A run is shown to the visitor who made it, and to the owner."""
    return is_owner(visitor) or (bool(visitor) and visitor == (run_owner or ""))


# ------------------------------------------------------------------------------------------------------------ backends


def public() -> bool:
    """Is this studio reachable by others? POPCORN_PUBLIC, else True on a Space or when bound beyond loopback."""
    value = os.environ.get("POPCORN_PUBLIC", "").strip().lower()
    if value:
        return value in _TRUE
    host = os.environ.get("POPCORN_BIND_HOST", "127.0.0.1")
    return bool(os.environ.get("SPACE_ID")) or host not in ("127.0.0.1", "localhost", "::1")


def enabled_names() -> set[str] | None:
    """The backend names remote callers may choose; None = every registered name."""
    raw = os.environ.get("POPCORN_BACKENDS", "").strip()
    if not raw:
        return set(PUBLIC_DEFAULT_BACKENDS) if public() else None
    names = {n.strip() for n in raw.split(",") if n.strip()}
    return None if "*" in names else names


def custom_allowed() -> bool:
    return _flag("POPCORN_ALLOW_CUSTOM_BACKENDS")


def is_enabled(name: str) -> bool:
    """Whether a remote caller may use the backend `name` (registered name or, when allowed, a typed one)."""
    name = str(name or "").strip()
    base, sep, _ = name.partition(":")
    if sep and not custom_allowed():
        return False
    names = enabled_names()
    return names is None or base in names or name in names


def check_backend(kind: str, name: str) -> str:
    """`name` if the owner enabled it, else StageError('input', ...) saying what is enabled."""
    name = check_text("backend", name)
    stage = "plan" if kind == "llm" else "render"
    if ":" in name and not custom_allowed():
        raise StageError("input", f"custom {kind.upper() if kind == 'llm' else 'video'} backends like {name!r} are "
                         "switched off on this studio", "pick one from the list (the owner can allow typed names "
                         "with POPCORN_ALLOW_CUSTOM_BACKENDS=1)")
    if not is_enabled(name):
        names = sorted(enabled_names() or [])
        raise StageError("input", f"the {stage} backend {name!r} is not enabled on this studio",
                         f"use one of: {', '.join(names)} (the owner sets POPCORN_BACKENDS)")
    return name


def is_paid(name: str) -> bool:
    base = str(name or "").partition(":")[0]
    return base.startswith(PAID_PREFIXES)


class RateLimiter:
    """At most `limit` calls per `window` seconds per key (a sliding window, in memory)."""

    def __init__(self, limit: int, window: float):
        self.limit, self.window = int(limit), float(window)
        self._calls: dict[str, deque] = defaultdict(deque)
        self._lock = threading.RLock()

    def wait(self, key: str, n: int = 1, now: float | None = None) -> float:
        """Seconds until `n` more calls under `key` are allowed (0: now); counts nothing."""
        now = time.monotonic() if now is None else now
        with self._lock:
            calls = self._calls[key]
            while calls and calls[0] <= now - self.window:
                calls.popleft()
            over = len(calls) + n - self.limit
            if over <= 0:
                return 0.0
            return calls[over - 1] + self.window - now if n <= self.limit else float("inf")

    def take(self, key: str, n: int = 1, now: float | None = None) -> float:
        """Count `n` calls; returns 0 when allowed, else the seconds until they are allowed (nothing counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = self.wait(key, n, now)
            if not wait:
                self._calls[key].extend([now] * n)
            return wait


# admin secret tries (admin_secret_ok): per visitor, and for the whole server against visitors who renew their id;
# 60 tries per 15 minutes is ~5,800 a day: nothing against a long random secret (docs/DEPLOY.md), and a lock-out of
# the owner's web sign-in for at most 15 minutes while someone guesses
SECRET_TRIES = {"visitor": (10, 900.0), "server": (60, 900.0)}
_SECRET_TRIES = RateLimiter(*SECRET_TRIES["visitor"])
_SECRET_TRIES_SERVER = RateLimiter(*SECRET_TRIES["server"])

_PAID: dict[str, RateLimiter] = {}
_PAID_LOCK = threading.Lock()


def _paid_limiters() -> dict[str, RateLimiter]:
    """{"visitor": POPCORN_PAID_LIMIT per visitor, "server": POPCORN_PAID_TOTAL for all visitors together}, each per
    POPCORN_PAID_WINDOW seconds. The server's cap is what bounds the bill: a visitor id is free to renew (a new cookie,
    a new session)."""
    limit = int(os.environ.get("POPCORN_PAID_LIMIT", "5"))
    total = int(os.environ.get("POPCORN_PAID_TOTAL", "") or 10 * limit)
    window = float(os.environ.get("POPCORN_PAID_WINDOW", "3600"))
    wanted = {"visitor": (limit, window), "server": (total, window)}
    for key, (n, w) in wanted.items():
        if key not in _PAID or (_PAID[key].limit, _PAID[key].window) != (n, w):
            _PAID[key] = RateLimiter(n, w)
    return dict(_PAID)


def charge_paid(visitor: str, name: str, calls: int = 1) -> None:
    """Count `calls` calls of a paid backend (a plan of N candidates is N) for `visitor` and for the server;
    StageError when either is over its limit, and then nothing is counted (the owner is exempt)."""
    if not is_paid(name) or is_owner(visitor):
        return
    calls = max(1, int(calls))
    keys = {"visitor": visitor or "anonymous", "server": "all"}
    with _PAID_LOCK:
        limiters = _paid_limiters()
        waits = {kind: limiters[kind].wait(keys[kind], calls) for kind in keys}
        if not any(waits.values()):
            for kind in keys:
                limiters[kind].take(keys[kind], calls)
            return
    kind = "visitor" if waits["visitor"] else "server"
    limiter, wait = limiters[kind], waits[kind]
    used = len(limiter._calls[keys[kind]])
    who = "this visitor has used it" if kind == "visitor" else "this studio's visitors have used paid backends"
    asked = f" (this asks for {calls})" if calls > 1 else ""
    when = (f"try again in {max(1, math.ceil(wait / 60))} minutes" if math.isfinite(wait)
            else f"ask for at most {limiter.limit} candidate plans")
    raise StageError("input", f"{name!r} uses the owner's API key and {who} {used} times in the last "
                     f"{limiter.window / 60:.0f} minutes; the limit is {limiter.limit}{asked}",
                     f"{when}, or pick the local LLM / storyboard")


# ------------------------------------------------------------------------------------------------------------ inputs


def check_text(field: str, value, limit: int | None = None) -> str:
    """`value` as text; StageError('input') naming the field when it is longer than its limit."""
    text = "" if value is None else str(value)
    limit = LIMITS.get(field, 2000) if limit is None else limit
    if len(text) > limit:
        raise StageError("input", f"the {field.replace('_', ' ')} is {len(text):,} characters long; the limit is "
                         f"{limit:,}", f"shorten the {field.replace('_', ' ')}")
    return text


def check_seed(seed) -> int:
    value = int(seed or 0)
    if not 0 <= value <= MAX_SEED:
        raise StageError("input", f"seed {value} is out of range", f"use 0 to {MAX_SEED}")
    return value

