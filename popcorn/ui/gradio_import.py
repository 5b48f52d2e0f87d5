"""Import gradio without its type-stub writer (issue 27 pt 6: the studio's page in <= 3 s).

Every time gradio is imported, each component class it defines (~80) reads its own source file, parses it with `ast`,
renders a stub from a template and compares it with (and may rewrite) the `.pyi` file beside it in site-packages:
`gradio.component_meta.create_or_modify_pyi`, a helper for gradio's own development (type stubs for editors). At
runtime it does nothing a page needs, and it was ~1.1 of the ~2.7 CPU-seconds of `import gradio` on this project's
2-core EPYC (bench/RESULTS.md, "The studio's page"). `skip_stub_writer()` makes that one function a no-op as
gradio.component_meta is loaded, before any component class is defined; nothing else of gradio changes. It must run
before the first `import gradio` (popcorn/ui/__init__.py calls it first); once gradio is imported it does nothing.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

TARGET = "gradio.component_meta"
WRITER = "create_or_modify_pyi"


def _no_stubs(*args, **kwargs) -> None:
    """Stands for gradio's stub writer: writes nothing."""
    return None


class _PatchingLoader(importlib.abc.Loader):
    """The module's own loader, then the writer replaced (if this gradio still has one)."""

    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module) -> None:
        self.inner.exec_module(module)
        if callable(getattr(module, WRITER, None)):
            setattr(module, WRITER, _no_stubs)


class _Finder(importlib.abc.MetaPathFinder):
    """Finds gradio.component_meta as usual (once) and hands it the patching loader."""

    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        _remove()
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def _remove() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _Finder)]


def skip_stub_writer() -> bool:
    """Arrange for gradio's stub writer to be a no-op; False where gradio is imported already (too late)."""
    if TARGET in sys.modules or "gradio" in sys.modules:
        return False
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    return True
