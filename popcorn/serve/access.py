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
    A right try never counts. Wrong tries are limited per client address (SECRET_TRIES["client"]; `client_address`
    believes X-Forwarded-For only from the proxies in POPCORN_TRUSTED_PROXIES); past SECRET_TRIES["server"] wrong
    tries on the whole server, every try waits a little longer before it is compared (a backoff up to
    SECRET_BACKOFF_MAX seconds): guessing slows down, the right secret is still accepted.
Backends
    POPCORN_BACKENDS: the LLM and video names remote callers may choose (comma-separated; "*" = all registered).
    Default: all registered on a studio bound to this machine only (127.0.0.1), "local,storyboard" on a public one
    (a Space, or any other address). Typed names with an argument (local:/x.gguf, transformers:<id>,
    openai-compatible:<model>) only when POPCORN_ALLOW_CUSTOM_BACKENDS=1.
Paid backends (API keys of the owner)
    POPCORN_PAID_LIMIT calls per POPCORN_PAID_WINDOW seconds per visitor (default 5 per 3600), and POPCORN_PAID_TOTAL
    for all visitors together (default 10 x the per-visitor limit: visitor ids are free to renew); the owner is
    exempt. A plan of N candidates is N calls (2N in PE+: pipeline.llm_calls).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import math
import os
import secrets
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable

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


def _secret_matches(secret, expected: str) -> bool:
    # digests, so the length is not timed either; bytes, so non-ASCII text is no exception
    given = hashlib.sha256(str(secret or "").encode(errors="replace")).digest()
    return hmac.compare_digest(given, hashlib.sha256(expected.encode()).digest())


def _reserve_secret_try(client: str) -> float:
    """Count one try against `client` and the server before comparing (so tries sent at once all count), and return
    the server's backoff in seconds; StageError('input') with the wait when `client` is over its wrong tries."""
    wait = _SECRET_TRIES.take(client or "anonymous")
    if wait:
        raise StageError("input", "too many wrong admin secret tries from your address",
                         f"try again in {max(1, math.ceil(wait / 60))} minutes")
    _SECRET_TRIES_SERVER.add("server")
    free, _ = SECRET_TRIES["server"]
    over = _SECRET_TRIES_SERVER.count("server") - free
    return min(SECRET_BACKOFF_MAX, SECRET_BACKOFF_STEP * over) if over > 0 else 0.0


def _settle_secret_try(secret, client: str) -> bool:
    """Compare; a right try is taken back from both counts (it never counts)."""
    ok = _secret_matches(secret, os.environ.get("POPCORN_ADMIN_SECRET", ""))
    if ok:
        _SECRET_TRIES.give_back(client or "anonymous")
        _SECRET_TRIES_SERVER.give_back("server")
    return ok


def admin_secret_ok(secret, client: str) -> bool:
    """Is `secret` POPCORN_ADMIN_SECRET? Compared in constant time, never logged. `client` is who is counted (an
    address from `client_address`): over its wrong tries, StageError('input') with the wait and nothing is compared.
    Past the server's free wrong tries, the answer comes after the backoff (this thread sleeps; async callers use
    admin_secret_ok_async)."""
    if not owner_mode_enabled():
        return False
    delay = _reserve_secret_try(client)
    if delay:
        time.sleep(delay)
    return _settle_secret_try(secret, client)


async def admin_secret_ok_async(secret, client: str) -> bool:
    """admin_secret_ok for an event loop: the backoff is awaited, holding no worker thread."""
    if not owner_mode_enabled():
        return False
    delay = _reserve_secret_try(client)
    if delay:
        await asyncio.sleep(delay)
    return _settle_secret_try(secret, client)


PRIVATE_NETS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")  # where a Space's own proxy sits


def trusted_proxies(configured: Iterable[str] | None = None) -> list:
    """The proxies whose X-Forwarded-For is believed, as networks (an address is a /32 or /128; a range such as
    10.0.0.0/8 is allowed; "*" is any peer): `configured`, else POPCORN_TRUSTED_PROXIES (comma-separated). On a
    Hugging Face Space (SPACE_ID set) with none configured: the private ranges, where the Space's proxy sits (no client
    from the internet reaches the app from a private address). Malformed entries trust nothing."""
    if configured is None:
        raw = os.environ.get("POPCORN_TRUSTED_PROXIES", "")
        configured = raw.split(",") if raw.strip() else (PRIVATE_NETS if os.environ.get("SPACE_ID") else ())
    nets = []
    for entry in (str(e).strip() for e in configured):
        if entry == "*":
            nets += [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
            continue
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            continue
    return nets


def _is_proxy(address: str, proxies: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in proxies)


def client_address(peer: str | None, forwarded_for: str | None = None, proxies: list | None = None) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the right-most X-Forwarded-For address
    that is not itself a trusted proxy (proxies append: anything left of that is what the client claimed). A
    forwarded address from anyone else is ignored: a client cannot pick its own address by sending the header.
    (Uvicorn must run with proxy_headers=False, else it rewrites the peer from the header first.)"""
    peer = str(peer or "")
    proxies = trusted_proxies() if proxies is None else proxies
    if not forwarded_for or not _is_proxy(peer, proxies):
        return peer
    for hop in reversed([h.strip() for h in str(forwarded_for).split(",") if h.strip()]):
        if not _is_proxy(hop, proxies):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a malformed entry: the proxy's own address is all we can vouch for
    return peer


def sign_in_owner(visitor: str, secret: str, client: str | None = None) -> bool:
    """True (and `visitor` becomes the owner for this server's life) when `secret` is POPCORN_ADMIN_SECRET; tries
    count against `client` (default: the visitor id). StageError when `client` had too many wrong tries."""
    if not visitor or not admin_secret_ok(secret, client or visitor):
        return False
    make_owner(visitor)
    return True


def make_owner(visitor: str) -> None:
    """`visitor` sees every run for this server's life (after a right secret: admin_secret_ok*)."""
    with _OWNERS_LOCK:
        _OWNERS.add(visitor)


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

    def count(self, key: str, now: float | None = None) -> int:
        """Calls under `key` in the current window."""
        self.wait(key, 0, now)  # drops the expired ones
        with self._lock:
            return len(self._calls[key])

    def add(self, key: str, now: float | None = None) -> None:
        """Count one call whatever the limit (a counter for backoff, not a gate)."""
        with self._lock:
            self._calls[key].append(time.monotonic() if now is None else now)

    def give_back(self, key: str) -> None:
        """Uncount the latest call under `key` (a try that turned out not to count)."""
        with self._lock:
            if self._calls[key]:
                self._calls[key].pop()

    def take(self, key: str, n: int = 1, now: float | None = None) -> float:
        """Count `n` calls; returns 0 when allowed, else the seconds until they are allowed (nothing counted)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            wait = self.wait(key, n, now)
            if not wait:
                self._calls[key].extend([now] * n)
            return wait


# admin secret tries (admin_secret_ok): wrong tries per client address (10 per 15 minutes), and, for the whole
# server, 60 wrong tries per 15 minutes before every try waits SECRET_BACKOFF_STEP seconds more per further wrong try
# (at most SECRET_BACKOFF_MAX) before it is compared. The right secret is never refused for others' wrong tries.
SECRET_TRIES = {"client": (10, 900.0), "server": (60, 900.0)}
SECRET_BACKOFF_STEP, SECRET_BACKOFF_MAX = 0.25, 10.0
_SECRET_TRIES = RateLimiter(*SECRET_TRIES["client"])
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


# ------------------------------------------------------------------------------------------------------------ queue

# per visitor on a public studio: jobs queued or running at once, by concurrency group of the studio's events ("llm":
# Plan, "gpu": Render; "other": each other event, counted per event), "total" over all groups, and "address" for all
# visitors of one client address (a visitor id is free to renew; an address is not)
QUEUE_LIMITS = {"llm": 2, "gpu": 1, "other": 4, "total": 12, "address": 32}
GROUP_NAMES = {"llm": "Plans", "gpu": "Renders"}


def queue_limits() -> dict[str, int]:
    """QUEUE_LIMITS, with POPCORN_QUEUE_LIMITS (e.g. "llm=3,gpu=1,address=64") over them."""
    limits = dict(QUEUE_LIMITS)
    for part in os.environ.get("POPCORN_QUEUE_LIMITS", "").split(","):
        name, _, value = part.partition("=")
        if name.strip() in limits and value.strip().isdigit():
            limits[name.strip()] = int(value)
    return limits


def queue_verdict(group: str, in_group: int, total: int, from_address: int, limits: dict[str, int]) -> str:
    """'' when one more job in `group` may join (the visitor has `in_group` there and `total` in all; their address
    `from_address`), else why not."""
    cap = limits.get(group, limits["other"])
    what = GROUP_NAMES.get(group, "Jobs of this kind")
    if in_group >= cap:
        return f"{what} you have queued or running: {in_group}; the limit per visitor is {cap}"
    if total >= limits["total"]:
        return f"jobs you have queued or running: {total}; the limit per visitor is {limits['total']}"
    if from_address >= limits["address"]:
        return (f"jobs your address has queued or running: {from_address}; the limit per address is "
                f"{limits['address']}")
    return ""


def url_files_allowed() -> bool:
    """POPCORN_ALLOW_URL_FILES=1: file inputs may be URLs the server downloads (off: only uploaded files)."""
    return _flag("POPCORN_ALLOW_URL_FILES")


# ------------------------------------------------------------------------------------------------------------ requests

# limits on every request (popcorn.ui.guard, popcorn.serve.connections); POPCORN_<NAME> (e.g. POPCORN_BODY_SECONDS)
# sets one: "body" bytes of any request body (uploads: "upload_files" files of "file_bytes" each, + "body"),
# "body_seconds" to send a body (+1 s per 100 kB), "header_seconds" to send a request's headers, "pending" connections
# that have not sent their headers yet (all together, and "pending_per_address" from one address)
REQUEST_LIMITS = {"body": 1_000_000, "upload_files": 4, "file_bytes": 10_000_000, "body_seconds": 20,
                  "header_seconds": 10, "pending": 512, "pending_per_address": 32}


def request_limits() -> dict[str, int]:
    limits = dict(REQUEST_LIMITS)
    for name in limits:
        value = os.environ.get(f"POPCORN_{name.upper()}", "").strip()
        if value.isdigit():
            limits[name] = int(value)
    return limits


SPACE_FRAME_ANCESTORS = ("https://huggingface.co", "https://*.hf.space")


def frame_ancestors() -> list[str]:
    """Who may frame the studio's pages: itself; on a Space also huggingface.co and *.hf.space (its page frames the
    app); POPCORN_FRAME_ANCESTORS adds origins (space-separated)."""
    out = ["'self'"] + (list(SPACE_FRAME_ANCESTORS) if os.environ.get("SPACE_ID") else [])
    return out + os.environ.get("POPCORN_FRAME_ANCESTORS", "").split()


def cors_origins() -> set[str]:
    """POPCORN_CORS_ORIGINS: origins (comma-separated, e.g. https://example.org) whose pages may call this studio
    with the visitor's cookies; none by default."""
    return {o.strip().rstrip("/") for o in os.environ.get("POPCORN_CORS_ORIGINS", "").split(",") if o.strip()}


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

