"""Packaging: a wheel carries prompts/ and assets/, and `popcorn studio` from an installed wheel serves the page from
any folder; the README's Space front matter pins the versions the tests run on; a Space builds llama.cpp portably.

The wheel goes into a fresh venv without its dependencies (--no-deps; the venv sees .venv's packages through a .pth
file, so nothing is downloaded) and runs with the checkout nowhere on its path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

try:
    from tests.llm_server import free_port, stop_process
except ImportError:
    from llm_server import free_port, stop_process

ROOT = Path(__file__).resolve().parent.parent


def _front_matter() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    block = text.split("---\n", 2)[1]
    return dict(line.split(": ", 1) for line in block.strip().splitlines())


def test_front_matter_pins_the_gradio_and_python_the_tests_run_on():
    import gradio

    meta = _front_matter()
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["sdk_version"] == gradio.__version__
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_space_requirements_build_llama_cpp_portably_and_the_package_reads_the_same_list():
    lines = (ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    llama = [line for line in lines if line.startswith("llama-cpp-python")]
    assert llama == ["llama-cpp-python[server]==0.3.36 --config-settings=cmake.args=-DGGML_NATIVE=OFF"]
    assert not any(line.startswith("-r") for line in lines)  # a Space mounts requirements.txt alone
    import runpy

    import setuptools

    captured = {}
    original = setuptools.setup
    setuptools.setup = lambda **kwargs: captured.update(kwargs)
    try:
        runpy.run_path(str(ROOT / "setup.py"))
    finally:
        setuptools.setup = original
    requires = captured["install_requires"]
    assert "llama-cpp-python[server]==0.3.36" in requires and "gradio>=6.0,<7" in requires
    assert not any(" " in r or r.startswith("-") for r in requires)


SAPPHIRE_RAPIDS = ("flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi "
                   "avx512_vnni avx512_bf16 avx_vnni amx_bf16 amx_tile amx_int8\nflags\t\t: other cpus repeat\n")


def _build_args(cpuinfo: str) -> list[str]:
    import runpy

    module = runpy.run_path(str(ROOT / "scripts" / "llama_build_args.py"))
    return module["build_args"](module["cpu_flags"](cpuinfo))


def test_setup_builds_llama_cpp_for_the_cpus_instruction_sets_and_never_amx():
    assert _build_args(SAPPHIRE_RAPIDS) == [
        "-DGGML_NATIVE=OFF", "-DGGML_AVX512=ON", "-DGGML_AVX512_VNNI=ON", "-DGGML_AVX512_BF16=ON",
        "-DGGML_AVX512_VBMI=ON", "-DGGML_AVX_VNNI=ON"]
    # AVX2 only (no AVX-512 foundation: avx512bw missing): llama.cpp's defaults, nothing added
    assert _build_args("flags : sse2 avx avx2 fma f16c avx512f avx512cd avx512vl avx512dq avx512_vnni") == [
        "-DGGML_NATIVE=OFF"]
    # an old x86 without AVX2/FMA/F16C: those defaults turned off, or the build would not run there
    assert _build_args("flags : sse2 sse4_2 avx") == [
        "-DGGML_NATIVE=OFF", "-DGGML_AVX2=OFF", "-DGGML_FMA=OFF", "-DGGML_F16C=OFF"]
    assert _build_args("Features : fp asimd sve\n") == ["-DGGML_NATIVE=OFF"]  # not x86: portable
    setup = (ROOT / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert "scripts/llama_build_args.py" in setup and "AMX" not in " ".join(_build_args(SAPPHIRE_RAPIDS))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True, timeout=900)
    (found,) = out.glob("popcorn_studio-*.whl")
    return found


def test_the_wheel_carries_prompts_and_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder, package in (("prompts", "popcorn/prompt_templates"), ("assets", "popcorn/assets")):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in (".txt", ".json", ".otf", ".ttf"):
                assert f"{package}/{path.relative_to(ROOT / folder).as_posix()}" in names, path
    assert {"popcorn/ui/app.py", "popcorn/ui/studio_page.py", "popcorn/studio/actions.py"} <= names
    assert "popcorn/study/page.html" in names  # the participant page's template travels with the server


@pytest.mark.slow
def test_popcorn_studio_from_an_installed_wheel_serves_the_page_from_any_folder(wheel, tmp_path):
    import site

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "popcorn-test-deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "POPCORN_HOST", "POPCORN_PORT",
                                                             "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT")}
    env.update({"POPCORN_HOME": str(tmp_path / "home"), "GRADIO_ANALYTICS_ENABLED": "False", "POPCORN_WARM": "0"})
    where = subprocess.run(
        [python, "-c", "import popcorn, popcorn.config as c, popcorn.llm.prompts as p; print(popcorn.__file__); "
                       "print(len(p.basic_messages('a cat'))); print((c.ASSETS_DIR / 'categories.json').is_file()); "
                       "print(len(list((c.ASSETS_DIR / 'routing').glob('*.tsv')))); "
                       "print(len(list((c.ASSETS_DIR / 'vectors').glob('*.npz'))))"],
        cwd=elsewhere, env=env, check=True, capture_output=True, text=True, timeout=300).stdout.split()
    bank = str(len(list((ROOT / "assets" / "routing").glob("*.tsv"))))
    # the wheel's popcorn, its own data (the idea bank's files and the shipped vectors among it)
    assert where[0].startswith(str(venv)) and where[1:] == ["2", "True", bank, "1"]

    port = free_port()
    log = open(tmp_path / "studio.log", "w")
    proc = subprocess.Popen([venv / "bin" / "popcorn", "studio", "--port", str(port)], cwd=elsewhere, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            assert proc.poll() is None, (tmp_path / "studio.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    config = response.read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "studio.log").read_text()[-3000:]
                time.sleep(0.5)
        assert "Popcorn studio" in config and '"api_name":"plan"' in config.replace(" ", "")
    finally:
        stop_process(proc)
        log.close()
