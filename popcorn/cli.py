"""`python -m popcorn ...`: the same operations the studio offers, from a terminal.

  plan "QUERY" --mode basic|pe --llm NAME [--k 10] [--candidates N] [--json]
  render --plan PLAN.json --video NAME --out DIR [--seed N]
  run "QUERY" --mode basic|pe --llm NAME --video NAME --out DIR
  score --title T --description D [--category C] [--video FILE] [--json]
  predictor train [--data DIR] | predictor eval --data DIR [--json]
  index                 build (or load) the embeddings and FAISS indexes
  llms | videos         list backends and whether each can run here (and why not)
  studio                start the Gradio studio
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from popcorn import pipeline
from popcorn.types import Plan, StageError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _stderr_progress(stage: str, fraction: float, message: str) -> None:
    if fraction in (0.0, 1.0) or stage == "render":
        print(f"[{stage}] {message}", file=sys.stderr, flush=True)


def _settings(args) -> pipeline.Settings:
    return pipeline.Settings(query=args.query, mode=args.mode, llm=args.llm, k=args.k, router=args.router,
                             seed=args.seed, candidates=getattr(args, "candidates", 1),
                             video=getattr(args, "video", "storyboard"),
                             memory_mode=getattr(args, "memory_mode", "auto"), speed=getattr(args, "speed", "auto"),
                             cover_model=getattr(args, "cover_model", ""))


def _split_render(args, argv: list[str]) -> int | None:
    """--gpus N (N > 1): refuse what cannot be split, else re-launch under accelerate (one process per GPU) and return
    its exit code; None when this process renders (one device, or already one of the launched processes)."""
    gpus = getattr(args, "gpus", 1) or 1
    if gpus <= 1:
        return None
    from popcorn.video import parallel

    parallel.check(args.video, gpus)
    return None if parallel.launched() else parallel.relaunch(argv, gpus)


# ------------------------------------------------------------------------------------------------------------ commands


def cmd_plan(args) -> int:
    run = pipeline.make_plans(_settings(args), progress=_stderr_progress, quick=True)
    out = {**run.plan.to_dict(), **run.plan_info}  # plan_info: the video budget, the attempts, tokens and seconds
    if run.retrieval is not None:
        out["retrieval_index"] = run.retrieval.index
    if run.notes:
        out["notes"] = list(run.notes)
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    if run.candidates:
        out["candidates"] = run.candidates
    if args.json:
        _print_json(out)
    else:
        print(f"Title:        {out['title']}\nCover prompt: {out['cover_prompt']}\nVideo prompt: {out['video_prompt']}")
        if out["matched_categories"]:
            print(f"Categories:   {', '.join(out['matched_categories'])}")
        for i, c in enumerate(run.candidates, 1):
            print(f"  #{i} {c['score'].get('predicted_comments', '?'):>8} comments  {c['plan']['title']}")
    return 0


def cmd_render(args) -> int:
    try:
        plan_dict = json.loads(Path(args.plan).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageError("input", f"cannot read the plan file {args.plan}: {exc}",
                         "give a JSON file as written by `plan --json`") from exc
    the_plan = Plan.from_dict(plan_dict)
    split = _split_render(args, args.argv)
    if split is not None:
        return split
    settings = pipeline.Settings(query=the_plan.query or the_plan.title, mode=the_plan.mode, llm=the_plan.llm,
                                 video=args.video, seed=args.seed, memory_mode=args.memory_mode, speed=args.speed,
                                 cover_model=args.cover_model)
    run = pipeline.Run(settings, plan=the_plan)
    from popcorn.video import parallel

    if not parallel.is_main_process():  # a split render: the other processes only help render; the main one writes
        pipeline.render(the_plan, args.video, seed=args.seed, memory_mode=args.memory_mode, speed=args.speed)
        return 0
    pipeline.render_run(run, Path(args.out), progress=_stderr_progress, with_score=not args.no_score)
    _print_json({"out": str(args.out), **run.video})
    return 0


def cmd_run(args) -> int:
    if (args.gpus or 1) > 1:  # plan here, once; then the plan is rendered split across the GPUs
        from popcorn.video import parallel

        parallel.check(args.video, args.gpus)
        planned = pipeline.make_plans(_settings(args), progress=_stderr_progress, quick=True)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        pipeline.write_run_json(planned, out)
        plan_file = out / "plan.json"
        plan_file.write_text(json.dumps(planned.plan.to_dict(), ensure_ascii=False), encoding="utf-8")
        return parallel.relaunch(["render", "--plan", str(plan_file), "--video", args.video, "--out", str(out),
                                  "--seed", str(args.seed), "--memory-mode", args.memory_mode, "--speed", args.speed,
                                  "--gpus", str(args.gpus)], args.gpus)
    run = pipeline.run(_settings(args), Path(args.out), progress=_stderr_progress, quick=True)
    _print_json({"out": str(args.out), "title": run.plan.title, "video": run.video.get("video"),
                 "score": run.score, "baseline": run.baseline, "timings": run.to_dict()["timings"]})
    return 0


def cmd_score(args) -> int:
    from popcorn.popularity.cli import score

    out = score(args.title, args.description or "", category=args.category, video=args.video, query=args.query)
    if args.json:
        _print_json({**out["score"], "human_baseline": out["human_baseline"]})
    else:
        d, base = out["score"], out["human_baseline"]
        print(f"Predicted comments: {d['predicted_comments']}  (log2 label {d['label']}, "
              f"percentile {d['percentile_category']} in {d['category']}, {d['percentile_overall']} overall)")
        for v in base.get("videos", []):
            print(f"Human-made match:   {v['title'][:70]!r}: {v['comments']} comments "
                  f"(predicted {v['predicted_comments']})")
    return 0


def cmd_predictor(args) -> int:
    from popcorn import popularity

    if args.action == "train":
        _print_json(popularity.train(data_dir=args.data, seed=args.seed))
    else:
        if not args.data:
            raise StageError("input", "predictor eval needs --data DIR", "a MicroLens raw-layout folder not trained on")
        result = popularity.evaluate(args.data)
        _print_json(result) if args.json else print(
            f"n={result['n']} nMSE={result['nMSE']:.4f} SRC={result['SRC']:.4f} MAE={result['MAE']:.4f}")
    return 0


def cmd_index(args) -> int:
    from popcorn.retrieval.index import get_retriever

    r = get_retriever()
    _print_json({"videos": len(r.corpus), "model": r.embedder.name, "corpus": r.corpus.source,
                 "skipped_rows": dict(r.corpus.skipped), "categories": len(r.index.cuts),
                 "cache": str(r.index.folder_for(r.corpus, r.embedder, r.index.ratio))})
    return 0


def _print_backends(rows: list[dict]) -> None:
    for row in rows:
        mark = "yes" if row["available"] else "no "
        print(f"{row['name']:<22} {mark}  {row.get('description', '')}"
              + ("" if row["available"] else f"\n{'':<27}why not: {row['reason']}"))


def cmd_llms(args) -> int:
    from popcorn.llm import list_backends

    rows = list_backends()
    _print_json(rows) if args.json else _print_backends(rows)
    return 0


def cmd_videos(args) -> int:
    from popcorn.video import list_generators

    rows = list_generators()
    _print_json(rows) if args.json else _print_backends(rows)
    return 0


def cmd_studio(args) -> int:
    from popcorn.ui.app import main as serve  # the same app as app.py, from a checkout or an installed wheel

    serve((["--port", str(args.port)] if args.port else []) + (["--host", args.host] if args.host else []))
    return 0


# ------------------------------------------------------------------------------------------------------------ parser


def _add_plan_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("query", help="the one-line idea")
    p.add_argument("--mode", choices=pipeline.MODES, default="pe")
    p.add_argument("--llm", default="local", help="an LLM backend (see `python -m popcorn llms`)")
    p.add_argument("--k", type=int, default=10, help="references retrieved in PE mode (10, 50 or 100)")
    p.add_argument("--router", choices=("ours", "paper"), default="ours", help="category routing method")
    p.add_argument("--seed", type=int, default=0)


def _add_video_options(p: argparse.ArgumentParser) -> None:
    from popcorn.video.base import MEMORY_MODES, SPEEDS

    p.add_argument("--video", default="storyboard", help="a video generator (see `python -m popcorn videos`)")
    p.add_argument("--memory-mode", choices=MEMORY_MODES, default="auto",
                   help="where the model's weights live while it runs (auto: the fastest that fits in free GPU memory)")
    p.add_argument("--speed", choices=SPEEDS, default="auto",
                   help="fast: fused QKV, GEMM+GELU epilogue, FlashAttention-4 if installed, compiled blocks (exact; "
                        "compiles on the first render); auto: fast when the whole model is on the GPU")
    p.add_argument("--gpus", type=int, default=1,
                   help="split one video across N GPUs (diffusers' context parallelism, one process per GPU through "
                        "accelerate; Wan2.1 models): popcorn/video/parallel.py")
    p.add_argument("--cover-model", default=os.environ.get("POPCORN_COVER_MODEL", ""),
                   help="a diffusers text-to-image model (hub id or local folder) that paints cover.png from the plan's "
                        "cover prompt (env POPCORN_COVER_MODEL); default: the clip's sharpest, most colourful frame")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="popcorn", description="Popcorn: a one-line idea -> a popular micro-video.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("plan", help="write a plan (title, cover prompt, video prompt)")
    _add_plan_options(p)
    p.add_argument("--candidates", type=int, default=1, help="write N plans and rank them by predicted popularity")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("render", help="render a plan into video.mp4 + cover.png + run.json")
    p.add_argument("--plan", required=True)
    _add_video_options(p)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-score", action="store_true", help="skip the popularity score")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("run", help="plan, render, compose and score one query")
    _add_plan_options(p)
    _add_video_options(p)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("score", help="predicted popularity of a title + description")
    p.add_argument("--title", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--category")
    p.add_argument("--video")
    p.add_argument("--query", help="match the human-made baseline to this idea (default: the title)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("predictor", help="train or evaluate the popularity predictor")
    p.add_argument("action", choices=("train", "eval"))
    p.add_argument("--data", help="a MicroLens raw-layout folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_predictor)

    sub.add_parser("index", help="build or load the retrieval index").set_defaults(func=cmd_index)
    for name, func in (("llms", cmd_llms), ("videos", cmd_videos)):
        p = sub.add_parser(name, help=f"list {name} backends and whether each can run here")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("studio", help="start the Gradio studio")
    p.add_argument("--port", type=int)
    p.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 makes it public: see docs/DEPLOY.md)")
    p.set_defaults(func=cmd_studio)
    __import__("popcorn.experiments.cli").experiments.cli.add_parsers(sub)  # batch, report
    __import__("popcorn.study.cli").study.cli.add_parser(sub)  # study create|pairs|list|results|export|serve
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # a split render (--gpus N) runs the same command again under accelerate
    try:
        return args.func(args)
    except StageError as exc:
        print(f"popcorn: {exc}", file=sys.stderr)
        if exc.raw:
            print(f"(raw output kept: {exc.raw[:500]!r})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("popcorn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
