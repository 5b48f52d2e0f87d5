"""Popcorn: a one-line idea -> a micro-video and how popular it is likely to be (LLMPopcorn, arXiv 2502.12945).

F(x) = h(g(f(x))): f plans (popcorn.llm + popcorn.llm.prompts + popcorn.retrieval.index), g renders (popcorn.video), the title is
composed onto the clip (popcorn.compose), h scores it (popcorn.popularity). popcorn.pipeline runs one query end to end.
"""

__version__ = "0.1.0"
