"""The prompts of a batch: a text file, or the paper's prompt set on the hub.

A prompt file holds one query per line. A line may also be `type<TAB>category<TAB>query`, where type is `abstract` or
`concrete` (the paper's two kinds of prompt) and category is free text (a MicroLens category, or empty). Blank lines
and lines starting with `#` are skipped. `hub` loads `junchenfu/llmpopcorn_prompts` (fields type, prompt) when
the hub can be reached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from popcorn import config
from popcorn.llm import prompts
from popcorn.types import StageError

HUB_PROMPTS = "junchenfu/llmpopcorn_prompts"
TYPES = ("abstract", "concrete")


@dataclass(frozen=True)
class Prompt:
    query: str
    type: str = ""  # "abstract" | "concrete" | "" (not given)
    category: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def parse_line(line: str, where: str = "") -> Prompt | None:
    """One line of a prompt file -> Prompt (None for a blank or comment line). Bad lines raise StageError('input')."""
    text = line.rstrip("\r\n")
    if not text.strip() or text.lstrip().startswith("#"):
        return None
    if "\t" not in text:
        return Prompt(query=prompts.clean_query(text))
    fields = text.split("\t")
    if len(fields) != 3:
        raise StageError("input", f"{where}: a line with tabs needs 3 fields (type, category, query), got {len(fields)}",
                         "write `type<TAB>category<TAB>query`, or only the query")
    kind, category, query = (f.strip() for f in fields)
    kind = kind.lower()
    if kind not in TYPES:
        raise StageError("input", f"{where}: prompt type {kind!r} is neither abstract nor concrete",
                         "the first field is `abstract` or `concrete`")
    if not prompts.clean_query(query):
        raise StageError("input", f"{where}: the query is empty", "the third field is the one-line idea")
    return Prompt(query=prompts.clean_query(query), type=kind, category=category)


def read_prompts_file(path: str | Path) -> list[Prompt]:
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise StageError("input", f"cannot read the prompt file {path}: {exc}",
                         "give a UTF-8 text file with one query per line") from exc
    found = [p for i, line in enumerate(lines, 1) if (p := parse_line(line, f"{path}:{i}")) is not None]
    return dedupe(found, str(path))


def dedupe(found: list[Prompt], where: str) -> list[Prompt]:
    """The prompts in file order, each query once (a repeated query would be the same runs twice)."""
    seen: set[str] = set()
    unique = [p for p in found if not (p.query in seen or seen.add(p.query))]
    if not unique:
        raise StageError("input", f"{where} holds no prompt", "one query per line, or type<TAB>category<TAB>query")
    return unique


def from_table(rows: list[dict], where: str) -> list[Prompt]:
    """Rows with `prompt` (or `query`), optional `type` and `category` -> prompts."""
    out = []
    for row in rows:
        query = prompts.clean_query(str(row.get("prompt") or row.get("query") or ""))
        kind = str(row.get("type") or "").strip().lower()
        if query:
            out.append(Prompt(query=query, type=kind if kind in TYPES else "", category=str(row.get("category") or "")))
    return dedupe(out, where)


def load_hub_prompts(repo_id: str = HUB_PROMPTS) -> list[Prompt]:
    """The paper's prompts from the hub (through `datasets` when installed, else huggingface_hub + pandas)."""
    if config.offline():
        raise StageError("input", f"the prompts `hub` ({repo_id}) need the Hugging Face hub, and this session is "
                         "offline (POPCORN_OFFLINE / HF_HUB_OFFLINE)",
                         "unset the offline switch on a machine with a network, or pass --prompts FILE")
    try:
        try:
            from datasets import load_dataset
        except ImportError:
            return from_table(_hub_rows(repo_id), f"hub:{repo_id}")
        table = load_dataset(repo_id)
        rows = [row for split in table.values() for row in split]
        return from_table(rows, f"hub:{repo_id}")
    except StageError:
        raise
    except Exception as exc:  # no network, no such dataset, hub down
        raise StageError("input", f"could not load the prompts {repo_id} from the hub: {type(exc).__name__}: {exc}",
                         "check the network, or pass --prompts FILE") from exc


def _hub_rows(repo_id: str) -> list[dict]:
    import pandas as pd
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(repo_id=repo_id, repo_type="dataset"))
    readers = {".parquet": pd.read_parquet, ".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True),
               ".json": pd.read_json}
    frames = [readers[p.suffix](p) for p in sorted(folder.rglob("*")) if p.suffix in readers]
    return [row for frame in frames for row in frame.to_dict("records")]


def load_prompts(source: str) -> list[Prompt]:
    """`hub`, or the path of a prompt file."""
    if str(source).strip() == "hub":
        return load_hub_prompts()
    return read_prompts_file(source)
