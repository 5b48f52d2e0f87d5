"""How much text each video model reads: the token budget of its text encoder, and the video prompt's length limits.

A diffusers pipeline encodes the prompt with its own text encoder and silently drops what does not fit:
`max_sequence_length` tokens (T5 for LTX-Video 128 and CogVideoX 226, UMT5 for Wan 512, Llama for HunyuanVideo 256;
the MLLM of HunyuanVideo-1.5 reads 1000). The budget is read from the pipeline class itself (the default of that
argument in `__call__`, else in its prompt encoder, read from the installed diffusers' source without importing
torch), and a spec's overrides of the pipeline call may set it: it follows the installed diffusers, not a copied table.

The encoders' tokenizers cannot be downloaded here, so the plan is fitted with a stated, conservative estimate
(`estimate_tokens`), checked in tests/test_plans.py to count more tokens than the real tokenizers that load offline
(BERT WordPiece of the packaged MiniLM, Qwen2.5's BPE through llama.cpp) on English and CJK text:

- per CJK / kana character: 2 tokens (T5 has no such pieces, UMT5 and Llama-3 take 1-2); per hangul syllable 3
  (tokenizers that normalise to NFD split it into its 2-3 jamo);
- per other word (split on spaces): for each run of letters or of digits in it, 1 token plus 1 per full 4 characters
  ("art" 1, "camera" 2, "60fps" 1 + 1), plus 1 per byte of its punctuation, symbols and emoji in UTF-8 ("," 1,
  "—" 3, "🍵" 4: byte-level BPEs may split them that far);
- plus 1 for the end-of-sequence token every encoder here appends.

`budget(name)` gives the numbers the plan needs: the token budget, the word range for the prompt template, and a
character cap for the constrained decoder (CHARS_PER_TOKEN per token: English prose that reaches it is still within
the budget by the estimate; whatever is not, CJK for one, is checked after decoding and drawn again).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from popcorn.text import CJK as _CJK  # kana, CJK ideographs and Hangul (a Hangul syllable: 2 + 3 tokens below)
from popcorn.text import count_words
from popcorn.video import get_generator, registered

# for generators with no text encoder of their own
PREVIEW = "storyboard"  # the CPU preview stands in for a diffusers model: it gets the tightest of theirs
NO_ENCODER_WORDS = 90  # an API model with no published limit (sora): the template's old range, 40-90 words
MIN_WORDS = 25  # a video prompt shorter than this says too little about motion and camera
MAX_WORDS = 120  # three seconds of footage need no more, whatever the encoder could read
CHARS_PER_TOKEN = 2.6  # the decoder's character cap per token of budget: English prose runs 2.7-3.0 characters per
# estimated token (tests/test_plans.py), so a prompt that reaches the cap is still within the budget
CHARS_PER_WORD = 6.2  # English prose, the space included
WORDS_FILL = 0.85  # the template's word range ends where a prompt fills this share of the cap

_HANGUL = re.compile(r"[\uac00-\ud7af]")
_RUN = re.compile(r"[^\W\d_]+|\d+", re.UNICODE)
_SECONDARY = ("clip", "byt5")  # pooled or glyph encoders beside the main one: not what reads the prompt's meaning


@dataclass(frozen=True)
class Budget:
    video: str  # the registry name asked for
    tokens: int | None  # the text encoder's budget, end-of-sequence token included; None: no known limit
    source: str  # where the number comes from, for people ("LTXPipeline.__call__(max_sequence_length=128)")
    words_min: int
    words_max: int  # the video prompt's range in the template
    max_chars: int  # the constrained decoder's maxLength for the video prompt

    def long_enough(self, text: str) -> bool:
        """Whether `text` says at least words_min words (a CJK prompt counted as words by count_words)."""
        return count_words(text) >= self.words_min

    def fits(self, text: str) -> bool:
        """Whether `text` fits the budget by the conservative estimate (and the word cap where no budget is known)."""
        if self.tokens is None:
            return len(text.split()) <= self.words_max
        return estimate_tokens(text) <= self.tokens

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_tokens(text: str) -> int:
    """A conservative count of a text encoder's tokens for `text` (see the module's docstring), EOS included."""
    count = 2 * len(_CJK.findall(text)) + 3 * len(_HANGUL.findall(text)) + 1
    rest = _HANGUL.sub(" ", _CJK.sub(" ", text))
    for word in rest.split():
        runs = _RUN.findall(word)  # letters and digits apart: "60fps" -> "60", "fps"
        count += sum(1 + len(run) // 4 for run in runs)
        rest_of_word = _RUN.sub("", word)
        count += len(rest_of_word.encode("utf-8"))  # a byte-level BPE may spend a token per byte of "—" or "🍵"
    return count


def _pipeline_class_node(pipeline_class: str) -> ast.ClassDef | None:
    """The class statement of a diffusers pipeline, read from the installed package's source (importing diffusers
    would import torch and take seconds; the plan needs one number)."""
    found = importlib.util.find_spec("diffusers")
    if found is None or not found.origin:
        return None
    needle = f"class {pipeline_class}("
    for path in sorted((Path(found.origin).parent / "pipelines").rglob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        if needle not in text:
            continue
        for node in ast.parse(text).body:
            if isinstance(node, ast.ClassDef) and node.name == pipeline_class:
                return node
    return None


def _int_defaults(fn: ast.FunctionDef) -> dict[str, int]:
    args = fn.args
    positional = args.posonlyargs + args.args
    pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
    pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
    return {a.arg: d.value for a, d in pairs if isinstance(d, ast.Constant) and type(d.value) is int}


def _encoder_default(node: ast.ClassDef) -> tuple[int, str] | None:
    """The main text encoder's token budget as the pipeline class declares it, and where it was read: the default of
    max_sequence_length (or tokenizer_max_length) in __call__, else encode_prompt, else its _get_*_prompt_embeds."""
    methods = {n.name: n for n in node.body if isinstance(n, ast.FunctionDef)}
    order = ["__call__", "encode_prompt"] + sorted(
        name for name in methods
        if name.startswith("_get_") and name.endswith("_prompt_embeds") and not any(s in name for s in _SECONDARY))
    for method in order:
        if method not in methods:
            continue
        defaults = _int_defaults(methods[method])
        for arg in ("max_sequence_length", "tokenizer_max_length"):
            if arg in defaults:
                return defaults[arg], f"{node.name}.{method}({arg}={defaults[arg]})"
    return None


@functools.lru_cache(maxsize=None)
def encoder_tokens(pipeline_class: str, override: int | None = None) -> tuple[int | None, str]:
    """(tokens, source) for a diffusers pipeline class name; (None, why) when diffusers or the class is missing."""
    if override:
        return int(override), f"{pipeline_class} with max_sequence_length={override} (set by the spec)"
    node = _pipeline_class_node(pipeline_class)
    if node is None:
        return None, f"{pipeline_class} is not in the installed diffusers"
    found = _encoder_default(node)
    return found if found else (None, f"{pipeline_class} declares no text-encoder length")


def _override(spec) -> int | None:
    """max_sequence_length as the spec sets it for the pipeline call, if it does (overrides: arg -> (value, why))."""
    for table in (getattr(spec, "overrides", None) or {}, getattr(spec, "call_kwargs", None) or {}):
        value = table.get("max_sequence_length")
        value = value[0] if isinstance(value, tuple) else value
        if isinstance(value, int):
            return value
    return None


def _spec_of(name: str):
    return getattr(get_generator(name), "spec", None)


def _diffusers_names() -> list[str]:
    names = []
    for name in registered():
        try:
            if _spec_of(name) is not None:
                names.append(name)
        except Exception:  # a generator that cannot even be built has no budget to offer
            continue
    return names


def _chars_of(words: int) -> int:
    """The decoder's cap for a prompt of up to `words` words: they fill WORDS_FILL of it."""
    return int(words * CHARS_PER_WORD / WORDS_FILL)


def _from_tokens(video: str, tokens: int, source: str) -> Budget:
    max_chars = min(int((tokens - 1) * CHARS_PER_TOKEN), _chars_of(MAX_WORDS))
    words_max = max(MIN_WORDS + 5, min(MAX_WORDS, int(max_chars * WORDS_FILL / CHARS_PER_WORD)))
    return Budget(video, tokens, source, MIN_WORDS, words_max, max_chars)


@functools.lru_cache(maxsize=64)
def budget(video: str) -> Budget:
    """The video prompt's budget for the registered video model `video`."""
    video = (video or PREVIEW).strip()
    try:
        spec, known = _spec_of(video), True
    except Exception:  # not registered (the render step will say so): plan for any model
        spec, known = None, False
    if spec is not None:
        tokens, source = encoder_tokens(spec.pipeline_class, _override(spec))
        if tokens is not None:
            return _from_tokens(video, tokens, source)
    if video == PREVIEW or spec is not None or not known:
        # the preview, an unknown name, or a model whose encoder could not be read: the tightest budget of the
        # diffusers models, so the plan renders later on any of them without being cut
        found = [encoder_tokens(s.pipeline_class, _override(s))
                 for s in (_spec_of(n) for n in _diffusers_names() if n != video)]
        found = [(t, s) for t, s in found if t is not None]
        if found:
            tokens, source = min(found)
            return _from_tokens(video, tokens, f"the tightest diffusers model: {source}")
    words = NO_ENCODER_WORDS
    return Budget(video, None, "no published text-encoder limit", 40, words, _chars_of(words))


def describe(video: str) -> str:
    """One line for the UI: what the chosen video model reads and what the plan will write for it."""
    b = budget(video)
    if b.tokens is None:
        return f"{video}: {b.source}; video prompts of {b.words_min}-{b.words_max} words"
    return (f"{video}: its text encoder reads {b.tokens} tokens ({b.source}); video prompts of "
            f"{b.words_min}-{b.words_max} words, at most {b.max_chars} characters")
