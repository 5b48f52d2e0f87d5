"""`python -m popcorn batch ...` and `python -m popcorn report DIR ...` (registered by popcorn/cli.py).

  batch --prompts FILE|hub --modes basic,pe[,plus] --llms a,b --videos x,y [--k 10|10,50,100] [--seeds 1] --out DIR [--max-attempts 3]
  report DIR [--json] [--out report.md] [--no-judges]
  rescore DIR [--rule same-inputs|confounded] [--into DIR2]

Under `accelerate launch --multi_gpu --num_processes N -m popcorn batch ...` (torchrun; CPU processes too) every
process takes its share of the runs (popcorn/experiments/shard.py).
"""

from __future__ import annotations

import json
import sys

from popcorn.types import StageError


def _seeds(text: str) -> list[int]:
    """--seeds 3 -> [0, 1, 2]; --seeds 0,5 -> [0, 5]."""
    try:
        if "," in text:
            return list(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
        return list(range(int(text)))
    except ValueError:
        raise StageError("input", f"--seeds {text!r} is not a count or a list of integers",
                         "--seeds 3 (seeds 0, 1, 2) or --seeds 0,7") from None


def _ks(text: str) -> list[int]:
    """--k 10 -> [10]; --k 10,50,100 -> the paper's K sweep."""
    try:
        return [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise StageError("input", f"--k {text!r} is not a K or a list of K", "--k 10 or --k 10,50,100") from None


def cmd_batch(args) -> int:
    from popcorn.experiments.grid import build_grid, split_names
    from popcorn.experiments.prompts_file import load_prompts
    from popcorn.experiments.runner import run_batch

    seeds = _seeds(args.seeds)
    if not seeds:
        raise StageError("input", "--seeds gives no seed", "--seeds 1 (seed 0)")
    specs = build_grid(load_prompts(args.prompts), split_names(args.modes, "modes"), split_names(args.llms, "llms"),
                       split_names(args.videos, "videos"), seeds, k=_ks(args.k), router=args.router)
    result = run_batch(specs, args.out, max_attempts=args.max_attempts, show_bar=not args.no_progress)
    print(json.dumps({"out": args.out, "grid": len(specs), **result.to_dict()}, indent=2, ensure_ascii=False))
    return 0 if result.failed == 0 else 1


def cmd_report(args) -> int:
    from popcorn.experiments.report import write_report

    say = (lambda message: print(f"[report] {message}", file=sys.stderr, flush=True))
    report, md_path = write_report(args.dir, args.out, judges=not args.no_judges, progress=say)
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print(md_path.read_text(encoding="utf-8"))
        print(f"\n(written to {md_path})", file=sys.stderr)
    return 0


def cmd_rescore(args) -> int:
    from popcorn.experiments.rescore import rescore

    say = (lambda message: print(f"[rescore] {message}", file=sys.stderr, flush=True))
    result = rescore(args.dir, rule=args.rule, dest=args.into, progress=say)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0 if not result["failed"] else 1


def add_parsers(sub) -> None:
    """The `batch` and `report` subcommands, on popcorn/cli.py's subparsers."""
    p = sub.add_parser("batch", help="run a grid of prompts x modes x LLMs x video models x seeds (resumable)")
    p.add_argument("--prompts", required=True,
                   help="a file with one query per line (or type<TAB>category<TAB>query), or `hub` for the paper's")
    p.add_argument("--modes", default="basic,pe",
                   help="comma-separated: basic, pe, plus (PE+: PE, then title drafts ranked by h)")
    p.add_argument("--llms", default="local", help="comma-separated LLM backends (python -m popcorn llms)")
    p.add_argument("--videos", default="storyboard", help="comma-separated video models (python -m popcorn videos)")
    p.add_argument("--k", default="10", help="references retrieved in PE mode; a list sweeps K (10,50,100)")
    p.add_argument("--router", choices=("ours", "paper"), default="ours")
    p.add_argument("--seeds", default="1", help="a count (3: seeds 0, 1, 2) or a comma-separated list")
    p.add_argument("--out", required=True, help="the batch folder: its SQLite store and the runs' files")
    p.add_argument("--max-attempts", type=int, default=3, help="failures after which a run is no longer retried")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("report", help="the paper's tables from a batch folder (Markdown, PNG histograms, --json)")
    p.add_argument("dir", help="the --out folder of a batch")
    p.add_argument("--json", action="store_true", help="print one JSON object holding the tables")
    p.add_argument("--out", help="the Markdown file (default DIR/report.md; plots beside it)")
    p.add_argument("--no-judges", action="store_true", help="skip novelty and the judges' validation")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("rescore", help="score a batch's finished runs again under a scoring rule (no new plans)")
    p.add_argument("dir", help="the --out folder of a batch")
    p.add_argument("--rule", choices=("same-inputs", "confounded"), default="same-inputs",
                   help="same-inputs (issue 23) or confounded (the rule before it, for comparison)")
    p.add_argument("--into", help="a new folder for a re-scored copy of the store (default: in place)")
    p.set_defaults(func=cmd_rescore)

