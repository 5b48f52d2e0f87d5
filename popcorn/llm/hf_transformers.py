"""Hugging Face chat models through transformers, as the paper ran its open models: Llama-3.3-70B-Instruct and
Qwen2.5-72B-Instruct in 4-bit (bitsandbytes NF4, bf16 compute, device_map="auto") on CUDA GPUs.

- `llama-3.3-70b`, `qwen2.5-72b`: the paper's models; they need CUDA (about 40 GB of GPU memory each in 4-bit).
- `transformers:<hub id or folder>` (or `transformers` with POPCORN_HF_MODEL): any chat model with a chat template.
  On CUDA it is loaded in 4-bit; on the CPU without quantization (float32), which suits small models only.

Decoding is not constrained here: the prompt asks for JSON and parse_plan() reads and repairs the answer.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
import time
from pathlib import Path
from typing import Callable

from popcorn import config
from popcorn.llm import gguf
from popcorn.llm.base import Completion, register, require_available
from popcorn.serve import resident
from popcorn.types import StageError

# torch and transformers are imported inside the functions that use them: heavy (seconds), and only this backend
# needs them


@functools.lru_cache(maxsize=1)
def _cuda() -> bool:
    try:
        import torch  # heavy; see above

        return bool(torch.cuda.is_available())
    except Exception:
        return False


class TransformersLLM:
    def __init__(self, name: str, description: str, model_id: str | None, *, needs_cuda: bool = False,
                 gpu_note: str = ""):
        self.name = name
        self.description = description
        self.model_id = model_id
        self.needs_cuda = needs_cuda
        self.gpu_note = gpu_note
        self._model = None
        self._tokenizer = None
        self._lock = threading.RLock()
        self._holder = f"llm:{name}#{id(self)}"  # this backend's name in popcorn/serve/resident.py

    def __repr__(self) -> str:
        return f"TransformersLLM(name={self.name!r}, model_id={self.model_id!r})"

    @property
    def is_folder(self) -> bool:
        return bool(self.model_id) and Path(self.model_id).expanduser().is_dir()

    def available(self) -> tuple[bool, str]:
        for module in ("torch", "transformers"):
            if importlib.util.find_spec(module) is None:
                return False, f"{module} is not installed"
        if not self.model_id:
            return False, "set POPCORN_HF_MODEL, or use transformers:<hub id or folder>"
        cuda = _cuda()
        if self.needs_cuda and not cuda:
            return False, f"needs a CUDA GPU{self.gpu_note}; none here"
        if cuda and importlib.util.find_spec("bitsandbytes") is None:
            return False, "4-bit loading on the GPU needs bitsandbytes (pip install bitsandbytes)"
        if self.is_folder:
            if not (Path(self.model_id).expanduser() / "config.json").is_file():
                return False, f"{self.model_id} has no config.json"
            return True, ""
        if gguf.hub_cached(self.model_id, "config.json"):
            return True, ""
        if config.offline():
            return False, f"offline and {self.model_id} is not in the Hugging Face cache"
        return True, f"downloads {self.model_id} from the hub on first use"

    # --- loading -------------------------------------------------------------------------------------------------

    def load(self):
        """(model, tokenizer), loaded once: 4-bit NF4 with bf16 compute on CUDA, float32 on the CPU. A load is one of
        the process's resident models (popcorn/serve/resident.py): it releases the others first (a video pipeline, the cover
        model), and a later video load releases it, so an LLM and a video model never hold the GPU together."""
        with resident.exclusive(), self._lock:
            if self._model is None:
                resident.make_room(self._holder)
                require_available(self)
                import torch  # heavy; see above
                from transformers import AutoModelForCausalLM, AutoTokenizer

                source = str(Path(self.model_id).expanduser()) if self.is_folder else self.model_id
                local_only = config.offline()
                try:
                    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
                    if _cuda():
                        from transformers import BitsAndBytesConfig  # heavy; see above

                        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                   bnb_4bit_compute_dtype=torch.bfloat16)
                        model = AutoModelForCausalLM.from_pretrained(
                            source, quantization_config=quant, device_map="auto", local_files_only=local_only)
                    else:
                        model = AutoModelForCausalLM.from_pretrained(
                            source, dtype=torch.float32, local_files_only=local_only)
                except (OSError, ValueError) as exc:
                    raise StageError("plan", f"could not load {self.model_id} with transformers ({exc})",
                                     "check the hub id or folder, the network (gated models need HF_TOKEN), "
                                     "and the GPU memory") from exc
                model.eval()
                self._model, self._tokenizer = model, tokenizer
                resident.hold(self._holder, self.release)
            return self._model, self._tokenizer

    def release(self) -> None:
        """Let go of the loaded model (called by popcorn/serve/resident.py when another model loads)."""
        with self._lock:
            self._model = self._tokenizer = None
            resident.drop(self._holder)
        resident.free_cache()

    def build_prompt(self, messages: list[dict]) -> str:
        """The text the model sees: the messages through the tokenizer's chat template."""
        _, tokenizer = self.load()
        if not getattr(tokenizer, "chat_template", None):
            raise StageError("plan", f"{self.model_id} has no chat template",
                             "use an Instruct/chat model, or set tokenizer.chat_template in its tokenizer_config.json")
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

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
        # loaded and run as one of the resident GPU models: a video model cannot load (and release this one) while it
        # generates, so the two never hold the GPU together (the lock is re-entrant: load() takes it too)
        with resident.exclusive():
            return self._complete(messages, max_tokens=max_tokens, temperature=temperature, seed=seed,
                                  on_text=on_text)

    def _complete(self, messages, *, max_tokens, temperature, seed, on_text) -> Completion:
        import torch  # heavy; see above

        model, tokenizer = self.load()
        prompt = self.build_prompt(messages)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        generation = {"max_new_tokens": max_tokens, "do_sample": temperature > 0}
        if temperature > 0:
            generation.update(temperature=temperature, top_p=0.95)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad is not None:
            generation["pad_token_id"] = pad
        if on_text is not None:
            generation["stopping_criteria"] = _reporter(tokenizer, inputs["input_ids"].shape[1], on_text)
        started = time.perf_counter()
        with self._lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(seed)
            output = model.generate(**inputs, **generation)
        new_tokens = output[0, inputs["input_ids"].shape[1]:]
        seconds = time.perf_counter() - started
        # "length" as the OpenAI API says it: the answer ran to max_tokens without the model ending it
        ended = tokenizer.eos_token_id is not None and int(tokenizer.eos_token_id) in new_tokens.tolist()
        finish = "length" if len(new_tokens) >= max_tokens and not ended else "stop"
        return Completion(
            text=tokenizer.decode(new_tokens, skip_special_tokens=True).strip(),
            model=self.model_id or "",
            usage={"prompt_tokens": int(inputs["input_ids"].shape[1]), "completion_tokens": int(len(new_tokens)),
                   "seconds": round(seconds, 3), "finish_reason": finish},
        )


def _reporter(tokenizer, prompt_tokens: int, on_text: Callable[[str], None], every: int = 8):
    """A generate() stopping criterion that never stops on its own: it passes the text so far to on_text every
    `every` tokens; an exception from on_text ends generate()."""
    import torch  # heavy; see above
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Reporter(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            new = input_ids[0, prompt_tokens:]
            if len(new) % every == 0:
                on_text(tokenizer.decode(new, skip_special_tokens=True))
            return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Reporter()])


def transformers_llm(model_id: str = "") -> TransformersLLM:
    model_id = model_id or os.environ.get("POPCORN_HF_MODEL", "").strip() or None
    return TransformersLLM("transformers", "a Hugging Face chat model (4-bit on CUDA, float32 on CPU)", model_id)


def llama_33_70b() -> TransformersLLM:
    return TransformersLLM("llama-3.3-70b", "meta-llama/Llama-3.3-70B-Instruct, 4-bit NF4 on CUDA (as in the paper)",
                           "meta-llama/Llama-3.3-70B-Instruct", needs_cuda=True,
                           gpu_note=" (about 40 GB of GPU memory in 4-bit)")


def qwen25_72b() -> TransformersLLM:
    return TransformersLLM("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct, 4-bit NF4 on CUDA (as in the paper)",
                           "Qwen/Qwen2.5-72B-Instruct", needs_cuda=True,
                           gpu_note=" (about 42 GB of GPU memory in 4-bit)")


register("transformers", transformers_llm, "a HF chat model: transformers:<hub id or folder> or POPCORN_HF_MODEL")
register("llama-3.3-70b", llama_33_70b, "Llama-3.3-70B-Instruct in 4-bit on CUDA (transformers)")
register("qwen2.5-72b", qwen25_72b, "Qwen2.5-72B-Instruct in 4-bit on CUDA (transformers)")
