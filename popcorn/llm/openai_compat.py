"""Chat models behind an OpenAI-compatible HTTP API (the `openai` SDK): GPT-4o, DeepSeek-V3 (deepseek-chat),
DeepSeek-R1 (deepseek-reasoner, whose reasoning_content becomes Completion.reasoning) and any server that speaks the
same API: vLLM, Ollama, llama.cpp's server (`openai-compatible`, POPCORN_OPENAI_BASE_URL).

Keys come from the environment only, are read at call time, and never appear in repr, errors or logs.
Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff, a bounded number of
times (POPCORN_LLM_MAX_TRIES, default 4; POPCORN_LLM_RETRY_DELAY, default 1 s, doubling); then a StageError says which
backend failed, with which status, and what to do. JSON output is asked for in the strongest form the server takes
(a JSON schema, else JSON mode), stepping down when the server rejects it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from typing import Any, Callable

from popcorn.llm.base import Completion, register, require_available
from popcorn.llm.plan_schema import MIN_WORDS, server_schema
from popcorn.types import StageError

log = logging.getLogger("popcorn.llm")

OPENAI_URL = "https://api.openai.com/v1"
DEEPSEEK_URL = "https://api.deepseek.com"
NO_KEY = "not-needed"  # the SDK wants a key; local servers ignore it


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


class OpenAICompatLLM:
    """One model at one OpenAI-compatible endpoint.

    json_formats: the response_format kinds to try, strongest first: "json_schema" (OpenAI structured outputs),
    "json_object+schema" (llama.cpp / vLLM accept a schema inside json_object), "json_object" (plain JSON mode).
    An empty tuple sends no response_format (deepseek-reasoner has no JSON mode).
    """

    def __init__(
        self,
        name: str,
        description: str,
        *,
        model: str | None,
        base_url: str | None = None,
        base_url_env: str | None = None,
        key_env: str | None = None,
        key_required: bool = True,
        json_formats: tuple[str, ...] = ("json_object",),
        min_max_tokens: int = 0,
        max_tries: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
    ):
        self.name = name
        self.description = description
        self.model = model
        self._base_url = base_url
        self.base_url_env = base_url_env
        self.key_env = key_env
        self.key_required = key_required
        self.json_formats = tuple(json_formats)
        self.min_max_tokens = min_max_tokens  # a reasoning model spends max_tokens on its thinking too
        self.max_tries = int(max_tries or _env_number("POPCORN_LLM_MAX_TRIES", 4))
        self.retry_delay = retry_delay if retry_delay is not None else _env_number("POPCORN_LLM_RETRY_DELAY", 1.0)
        self.timeout = timeout or _env_number("POPCORN_LLM_TIMEOUT", 120.0)
        self._rejected: set[str] = set()  # response formats this server refused
        self._confirmed: set[str] = set()  # response formats this server accepted

    def __repr__(self) -> str:  # no key here, ever
        return f"OpenAICompatLLM(name={self.name!r}, model={self.model!r}, base_url={self.base_url!r})"

    @property
    def base_url(self) -> str | None:
        from_env = os.environ.get(self.base_url_env, "").strip() if self.base_url_env else ""
        return from_env or self._base_url

    def _key(self) -> str:
        key = os.environ.get(self.key_env, "").strip() if self.key_env else ""
        return key or NO_KEY

    def _scrub(self, text: str) -> str:
        key = self._key()
        if key != NO_KEY:
            text = text.replace(key, "***")
        return text[:300]

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("openai") is None:
            return False, "the openai package is not installed (pip install openai)"
        if not self.base_url:
            return False, (
                f"set {self.base_url_env} to the server's /v1 URL (vLLM http://localhost:8000/v1, "
                "Ollama http://localhost:11434/v1, llama.cpp http://localhost:8080/v1)"
            )
        if self.key_required and self._key() == NO_KEY:
            return False, f"set {self.key_env} in the environment"
        return True, ""

    # --- calling ---------------------------------------------------------------------------------------------

    def _client(self):
        import openai  # ~1 s to import, and only the API backends need it

        return openai.OpenAI(api_key=self._key(), base_url=self.base_url, timeout=self.timeout, max_retries=0)

    def _model(self, client) -> str:
        """The configured model, else the first one the server serves (llama.cpp / vLLM serve one)."""
        if self.model:
            return self.model
        models = [m.id for m in client.models.list().data]
        if not models:
            raise StageError("plan", f"{self.name}: the server at {self.base_url} lists no models",
                             "set POPCORN_OPENAI_MODEL or use openai-compatible:<model>")
        self.model = models[0]
        return self.model

    @staticmethod
    def _response_format(kind: str, schema: dict) -> dict:
        if kind == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": "plan", "schema": _strict_subset(schema),
                                                           "strict": True}}
        if kind == "json_object+schema":
            return {"type": "json_object", "schema": server_schema(schema)}
        return {"type": "json_object"}

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
        require_available(self)
        client = self._client()
        request: dict[str, Any] = {
            "model": self._model_or_error(client),
            "messages": messages,
            "max_tokens": max(max_tokens, self.min_max_tokens),
            "temperature": temperature,
        }
        if seed is not None:
            request["seed"] = seed
        started = time.perf_counter()
        response, attempt = self._create(client, request, json_schema)
        choice = response.choices[0]
        message = choice.message
        usage = response.usage.model_dump() if getattr(response, "usage", None) else {}
        usage.update({"seconds": round(time.perf_counter() - started, 3), "tries": attempt,
                      "finish_reason": choice.finish_reason,
                      "response_format": request.get("response_format", {}).get("type", "")})
        if on_text is not None:  # not streamed (retries and the format ladder need whole answers): once, at the end
            on_text(message.content or "")
        return Completion(
            text=message.content or "",
            reasoning=_reasoning_of(message),
            model=getattr(response, "model", "") or request["model"],
            usage=usage,
        )

    def _create(self, client, request: dict, json_schema: dict | None):
        """Send the request and return (response, tries).

        Transient failures (429, 5xx, timeouts, connection errors) are retried with exponential backoff, max_tries
        times. The response_format steps down its ladder when the server refuses a format: at once on HTTP 400/422,
        and after max_tries 5xx answers for a format it never accepted (llama.cpp's server answers json_schema with
        a 500); a format refused is not sent again by this backend."""
        import openai  # ~1 s to import, and only the API backends need it

        formats = [f for f in self.json_formats if f not in self._rejected] if json_schema else []
        suspect = None  # a format that met only 5xx answers: rejected for good once the next one works
        attempt = sent = 0
        while True:
            if formats:
                request["response_format"] = self._response_format(formats[0], json_schema or {})
            else:
                request.pop("response_format", None)
            attempt += 1
            sent += 1
            try:
                response = client.chat.completions.create(**request)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if formats:  # most likely the response_format: step down and ask again (not counted as a try)
                    self._rejected.add(self._step_down(formats, exc.status_code))
                    attempt -= 1
                    continue
                raise self._error(exc.status_code, "the server rejected the request", self._detail(exc),
                                  "check the model name and that the prompt fits its context window") from exc
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise self._error(exc.status_code, "the API key was rejected", "",
                                  f"check {self.key_env} (a valid key with access to {request['model']})") from exc
            except openai.NotFoundError as exc:
                raise self._error(404, f"model {request['model']!r} or the endpoint was not found",
                                  self._detail(exc), f"check the model name and the base URL ({self.base_url})") from exc
            except openai.OpenAIError as exc:  # 429, other statuses, timeouts, connection errors
                status = getattr(exc, "status_code", None)
                if status is not None and status != 429 and status < 500:
                    raise self._error(status, "the request failed", self._detail(exc),
                                      "check the request and the server") from exc
                what = f"HTTP {status}" if status else ("timed out" if isinstance(exc, openai.APITimeoutError)
                                                       else "connection failed")
                if attempt >= self.max_tries and status and formats and formats[0] not in self._confirmed:
                    suspect = self._step_down(formats, status)  # maybe the format; a fresh set of tries
                    attempt = 0
                    continue
                if attempt >= self.max_tries:
                    raise self._give_up(status, what, sent) from exc
                delay = self._delay(attempt, exc)
                log.warning("%s: %s (try %d/%d), retrying in %.2f s", self.name, what, attempt, self.max_tries, delay)
                time.sleep(delay)
                continue
            if formats:
                self._confirmed.add(formats[0])
            if suspect:
                self._rejected.add(suspect)
            return response, attempt

    def _step_down(self, formats: list[str], status: int | None) -> str:
        refused = formats.pop(0)
        log.warning("%s: the server refused response_format %s (HTTP %s); trying %s",
                    self.name, refused, status, formats[0] if formats else "none")
        return refused

    def _model_or_error(self, client) -> str:
        import openai  # ~1 s to import, and only the API backends need it

        try:
            return self._model(client)
        except openai.OpenAIError as exc:
            raise self._error(getattr(exc, "status_code", None), "could not list the server's models",
                              self._detail(exc), "set POPCORN_OPENAI_MODEL, or check that the server runs") from exc

    def _delay(self, attempt: int, exc: Exception) -> float:
        delay = self.retry_delay * 2 ** (attempt - 1)
        response = getattr(exc, "response", None)
        retry_after = response.headers.get("retry-after") if response is not None else None
        try:
            return min(max(delay, float(retry_after)), 60.0) if retry_after else delay
        except ValueError:
            return delay

    def _detail(self, exc: Exception) -> str:
        body = getattr(exc, "body", None)
        if isinstance(body, dict):
            body = body.get("message") or body.get("error") or body
        return self._scrub(str(body if body else exc))

    def _error(self, status: int | None, what: str, detail: str, hint: str) -> StageError:
        code = f" (HTTP {status})" if status else ""
        message = f"{self.name} ({self.model}): {what}{code}"
        if detail:
            message += f": {detail}"
        return StageError("plan", self._scrub(message), hint)

    def _give_up(self, status: int | None, what: str, tries: int) -> StageError:
        if status == 429:
            hint = ("rate limited or out of quota: wait a minute and try again, check the account's quota, "
                    "or use another backend (e.g. local)")
        elif status:
            hint = "the server kept failing: try again later or use another backend (e.g. local)"
        elif what == "timed out":
            hint = (f"no answer within {self.timeout:.0f} s: raise POPCORN_LLM_TIMEOUT, lower max_tokens, "
                    "or check the server")
        else:
            hint = f"could not reach {self.base_url}: check the network or that the server is running"
        return StageError("plan", f"{self.name} ({self.model}): {what} after {tries} tries", hint)


def _reasoning_of(message: Any) -> str:
    """DeepSeek-R1's `reasoning_content` (vLLM and others: `reasoning`), when the API returns one."""
    extra = getattr(message, "model_extra", None) or {}
    for key in ("reasoning_content", "reasoning"):
        value = getattr(message, key, None) or extra.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


# --- the registered backends ---------------------------------------------------------------------------------------


def openai_llm(model: str = "") -> OpenAICompatLLM:
    model = model or "gpt-4o"
    return OpenAICompatLLM(
        "openai",
        f"OpenAI {model} (OPENAI_API_KEY)",
        model=model,
        base_url=OPENAI_URL,
        base_url_env="OPENAI_BASE_URL",
        key_env="OPENAI_API_KEY",
        json_formats=("json_schema", "json_object"),
    )


def deepseek_chat(model: str = "") -> OpenAICompatLLM:
    return OpenAICompatLLM(
        "deepseek-chat",
        "DeepSeek-V3 (deepseek-chat, DEEPSEEK_API_KEY)",
        model=model or "deepseek-chat",
        base_url=DEEPSEEK_URL,
        base_url_env="DEEPSEEK_BASE_URL",
        key_env="DEEPSEEK_API_KEY",
        json_formats=("json_object",),
    )


def deepseek_reasoner(model: str = "") -> OpenAICompatLLM:
    return OpenAICompatLLM(
        "deepseek-reasoner",
        "DeepSeek-R1 (deepseek-reasoner, DEEPSEEK_API_KEY); its reasoning is kept",
        model=model or "deepseek-reasoner",
        base_url=DEEPSEEK_URL,
        base_url_env="DEEPSEEK_BASE_URL",
        key_env="DEEPSEEK_API_KEY",
        json_formats=(),  # R1 has no JSON mode: the prompt asks for JSON and parse_plan reads it
        min_max_tokens=8192,  # its max_tokens covers the chain of thought as well
    )


def openai_compatible(model: str = "") -> OpenAICompatLLM:
    model = model or os.environ.get("POPCORN_OPENAI_MODEL", "").strip() or None
    return OpenAICompatLLM(
        "openai-compatible",
        "any OpenAI-compatible server: vLLM, Ollama, llama.cpp (POPCORN_OPENAI_BASE_URL, POPCORN_OPENAI_MODEL)",
        model=model,
        base_url_env="POPCORN_OPENAI_BASE_URL",
        key_env="POPCORN_OPENAI_API_KEY",
        key_required=False,
        json_formats=("json_object+schema", "json_object"),
    )


register("openai", openai_llm, "OpenAI gpt-4o (OPENAI_API_KEY); openai:<model> for another")
register("deepseek-chat", deepseek_chat, "DeepSeek-V3 (DEEPSEEK_API_KEY)")
register("deepseek-reasoner", deepseek_reasoner, "DeepSeek-R1 (DEEPSEEK_API_KEY), reasoning kept apart")
register("openai-compatible", openai_compatible,
         "vLLM / Ollama / llama.cpp server at POPCORN_OPENAI_BASE_URL; openai-compatible:<model>")


def _strict_subset(schema: dict) -> dict:
    """The schema as OpenAI's strict structured outputs accept it: string lengths are not in that subset (a schema
    with them is refused), so they become a description and the plan step checks them on the answer. llama.cpp's
    server (json_object + schema) gets the schema with its lengths. This project's MIN_WORDS goes into the description
    too."""
    if not isinstance(schema, dict):
        return schema
    out = {}
    for key, value in schema.items():
        if key in ("minLength", "maxLength", MIN_WORDS):
            continue
        if key == "properties" and isinstance(value, dict):
            value = {name: _strict_subset(prop) for name, prop in value.items()}
        out[key] = value
    if "minLength" in schema or "maxLength" in schema:
        words = f", at least {schema[MIN_WORDS]} words" if schema.get(MIN_WORDS) else ""
        out.setdefault("description",
                       f"{schema.get('minLength', 0)} to {schema.get('maxLength', 'any')} characters{words}")
    return out
