"""Token-mask decoding: a JSON object of bounded strings (a plan) written by llama.cpp one value at a time.

llama.cpp's JSON-schema grammar does take minLength/maxLength, but writes maxLength=N as N nested optional groups; at
the lengths of a plan (60-900 characters) its sampler slowed generation from about 0.45 s to over 4 s a token on a
2-core machine (bench/RESULTS.md). So an object of bounded strings is written field by field instead: the JSON around
the values (keys, quotes, commas) is appended to the prompt, where llama.cpp evaluates it in one batch with the KV
cache of everything before it kept, and only the values are generated, each under a token mask (at least minLength
characters, no quote, backslash or control character, then the closing quote) and a token cap of
maxLength / CHARS_PER_TOKEN. A value that reaches its cap is cut back to its last sentence or word within maxLength
(popcorn/llm/trim.py); a title-sized one is drawn again first.

llama_cpp is imported inside the functions that need it: it is optional (a compiled extension), and it must not be
imported before popcorn/llm/llama_models.py has set OMP_WAIT_POLICY.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from popcorn.llm import llama_state
from popcorn.llm.plan_schema import MIN_WORDS
from popcorn.llm.trim import bound_text
from popcorn.text import count_words
from popcorn.types import StageError

CHARS_PER_TOKEN = 3.5  # Qwen2.5's BPE: ~4-5 characters a token of English prose, ~1-1.5 of Chinese


def bounded_fields(schema: dict | None) -> list[tuple[str, int, int, int]] | None:
    """[(key, minLength, maxLength, MIN_WORDS or 0)] when `schema` is an object of required strings that all have a
    maxLength."""
    props = (schema or {}).get("properties") or {}
    if (schema or {}).get("type") != "object" or not props or set((schema or {}).get("required", [])) != set(props):
        return None
    out = []
    for key, prop in props.items():
        if prop.get("type") != "string" or not prop.get("maxLength"):
            return None
        out.append((key, int(prop.get("minLength") or 0), int(prop["maxLength"]), int(prop.get(MIN_WORDS) or 0)))
    return out


_VALUE_TOKEN = re.compile(rb'[^"\\\x00-\x1f\x7f]*("[,}]?[ \n]?)?')


def value_tokens(model) -> tuple:
    """What each token of `model`'s vocabulary may do inside a JSON string value, computed once per loaded model:
    (banned, closing, chars). A value is made of characters other than a quote, a backslash or a control character
    and ends at its closing quote, optionally with what a model writes right after a JSON string's quote in the same
    token: a BPE such as Qwen's closes a value with one merged token (`",` before the next key, `"}` at the end,
    `.",` after a sentence). Allowed only a bare `"`, a model kept writing to the field's token cap instead (every
    title of a Qwen plan ran to its 19-token cap and was cut; with these, 7-11 tokens and whole). Special and empty
    tokens (end of turn, ...) are banned: a value ends only at its quote. `chars` counts each token's characters
    (UTF-8 lead bytes), for the minimum length."""
    cached = getattr(model, "_popcorn_value_tokens", None)
    if cached is not None:
        return cached
    n = int(model.n_vocab())
    banned = np.zeros(n, dtype=bool)
    closing = np.zeros(n, dtype=bool)
    chars = np.zeros(n, dtype=np.int32)
    for token in range(n):
        piece = model.detokenize([token])
        if not piece or not _VALUE_TOKEN.fullmatch(piece):
            banned[token] = True
            continue
        closing[token] = b'"' in piece
        chars[token] = sum(1 for byte in piece.split(b'"')[0] if byte < 0x80 or byte >= 0xC0)
    cached = (banned, closing, chars)
    model._popcorn_value_tokens = cached
    return cached


def value_mask(model, min_chars: int, max_chars: int | None = None, min_words: int = 0):
    """A llama.cpp logits processor that keeps generation inside one JSON string value of at least min_chars
    characters (see value_tokens): the same language as a grammar `c{min_chars} c* "` but applied as one vector
    mask per token. llama-cpp-python runs a grammar sampler over the whole vocabulary before top-k (152k entries
    for Qwen): ~47 ms a token on this 2-core machine, a third of the generation time of a plan; the mask costs
    well under 1 ms and gives the same text for the same seed (bench/RESULTS.md).

    min_words: no closing token either until what it has written holds that many words (popcorn.text.count_words,
    the video budget's count). A video prompt under its budget's minimum was otherwise drawn again whole (~8 s on
    2 cores).

    Once a value has run past max_chars it will be cut (or drawn again) whatever follows, so only a closing token
    may come next: the tokens it would have written up to its token cap (up to ~20 of a video prompt) are not
    generated. `process.state["closed_at_bound"]` says whether that happened."""
    banned, closing, chars = value_tokens(model)
    # tokens counted so far; characters they wrote; their text while words are counted (until min_words is reached:
    # a text's count_words never falls as it grows)
    state = {"seen": -1, "written": 0, "closed_at_bound": False, "text": b"", "words_short": min_words > 0}

    def process(input_ids, scores):
        if state["seen"] < 0:  # the first call: everything so far is the prompt
            state["seen"] = len(input_ids)
        if len(input_ids) > state["seen"]:  # count only the tokens generated since the last call
            new = np.asarray(input_ids[state["seen"]:], dtype=np.int64)
            state["written"] += int(chars[new].sum())
            if state["words_short"]:
                state["text"] += model.detokenize(new.tolist())
                state["words_short"] = count_words(state["text"].decode("utf-8", "ignore")) < min_words
            state["seen"] = len(input_ids)
        written = state["written"]
        out = np.array(scores, dtype=np.float32, copy=True)
        if out.shape[0] != banned.shape[0]:  # not the id-ordered full vocabulary: leave it to the stop string
            return out
        out[banned] = -np.inf
        if max_chars is not None and written > max_chars:  # the bound comes first: the value is cut whatever follows
            out[~closing] = -np.inf
            state["closed_at_bound"] = True
        elif state["words_short"]:
            out[closing] = -np.inf
        elif written < min_chars:
            out[closing & (chars + written < min_chars)] = -np.inf
        return out

    process.state = state
    return process


def chat_prompt(model, messages: list[dict]) -> str:
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # optional; see the module's docstring

    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        raise StageError("llm", "the GGUF model has no chat template", "use a chat (instruct) model")
    eos, bos = model.token_eos(), model.token_bos()
    formatter = Jinja2ChatFormatter(template=template,
                                    eos_token=model._model.token_get_text(eos) if eos != -1 else "",
                                    bos_token=model._model.token_get_text(bos) if bos != -1 else "")
    return formatter(messages=messages).prompt


# A value no longer than a title (a name, a headline) that runs past its maxLength is drawn again with another seed,
# up to REDRAWS times, before it is cut: a cut phrase reads badly, and another draw of ~15 tokens costs about a
# second. Longer values (notes, prompts) are cut at a sentence instead: a draw costs more and a sentence cut reads well.
PHRASE_CHARS = 50
REDRAWS = 2


def complete_fields(model, messages, fields, max_tokens, temperature, seed, on_text):
    """Write the JSON object of bounded string `fields` one value at a time (see above): (text, finish, usage).
    on_text hears the object grow token by token; an exception it raises stops the generation."""
    prompt = chat_prompt(model, messages)
    primed = llama_state.prime(model, prompt, messages)  # the fixed instructions: from memory, disk, or evaluated
    values: dict[str, str] = {}
    generated = 0
    finish = "stop"
    capped = []
    redrawn: dict[str, int] = {}
    head = "{"
    for i, (key, low, high, words) in enumerate(fields):
        head = (json.dumps(values, ensure_ascii=False)[:-1] + ", " if values else "{") + json.dumps(key) + ': "'
        left = max_tokens - generated
        if left <= 0:
            finish = "length"
            break
        cap = min(left, max(8, math.ceil(high / CHARS_PER_TOKEN)))
        draws = 1 + (REDRAWS if high <= PHRASE_CHARS else 0)
        for draw in range(draws):
            draw_seed = None if seed is None else seed + i + 7919 * draw
            raw, field_finish = one_value(model, prompt + head, cap, temperature, draw_seed, min(low, 200), high,
                                           None if on_text is None else (lambda part, h=head: on_text(h + part)),
                                           min_words=words)
            generated += count_tokens(model, raw) + 1  # + the closing quote
            over = field_finish == "length" or len(" ".join(raw.split())) > high
            if not over or generated >= max_tokens or draw == draws - 1:
                break
            redrawn[key] = draw + 1
        if over:  # cut to its bound (at its token cap, or closed past maxLength)
            capped.append(key)
        if generated >= max_tokens and field_finish == "length":
            finish = "length"
        values[key] = bound_text(raw, high)  # the mask allows no quote or backslash in it
        if finish == "length":
            break
    text = json.dumps(values, ensure_ascii=False)
    if finish == "length":  # the overall budget ran out mid-object: say so, as a cut-off JSON answer would
        text = text[:-1]
    if on_text is not None:
        on_text(text)
    # read, not written: the chat prompt and the JSON around the values. (The values, appended to the next field's
    # prompt and found in the KV cache there, are the completion's tokens, so each token is counted once.)
    prompt_tokens = count_tokens(model, prompt) + count_tokens(model, json.dumps(dict.fromkeys(values, "")))
    return text, finish, {"completion_tokens": generated, "prompt_tokens": prompt_tokens, "capped_fields": capped,
                          **({"redrawn_fields": redrawn} if redrawn else {}), **primed}


def count_tokens(model, text: str) -> int:
    """How many tokens `text` is to the model (special tokens such as <|im_start|> counted as one)."""
    return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def one_value(model, prompt: str, cap: int, temperature: float, seed, min_chars: int, max_chars: int, on_part,
              min_words: int = 0) -> tuple[str, str | None]:
    """One string value after `prompt`, of at least min_chars characters and min_words words, up to its closing quote
    (not included), `cap` tokens, or soon after max_chars characters (closed there: finish "length", as at the cap):
    (text, finish)."""
    from llama_cpp import LogitsProcessorList  # optional; see the module's docstring

    mask = value_mask(model, min_chars, max_chars, min_words)
    kwargs = {"max_tokens": cap, "temperature": temperature, "seed": seed, "stop": ['"'],
              "logits_processor": LogitsProcessorList([mask])}
    if on_part is None:
        choice = model.create_completion(prompt, **kwargs)["choices"][0]
        return choice["text"], "length" if mask.state["closed_at_bound"] else choice.get("finish_reason")
    parts: list[str] = []
    finish = None
    chunks = model.create_completion(prompt, stream=True, **kwargs)
    try:
        for chunk in chunks:
            choice = chunk["choices"][0]
            finish = choice.get("finish_reason") or finish
            if choice.get("text"):
                parts.append(choice["text"])
                on_part("".join(parts))
    finally:
        chunks.close()
    return "".join(parts), "length" if mask.state["closed_at_bound"] else finish
