"""The package's dependencies are requirements.txt, the one list pip, scripts/setup.sh and a Space install from.

setuptools cannot read pip's per-requirement options (llama.cpp's portable build flags), so they are dropped here;
everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup


def requirements(path: Path) -> list[str]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].split(" --", 1)[0].strip()
        if line and not line.startswith("-"):
            out.append(line)
    return out


setup(install_requires=requirements(Path(__file__).resolve().parent / "requirements.txt"))
