"""`python -m popcorn ...`: the same operations the studio offers, from a terminal.

  plan "QUERY" --mode basic|pe --llm NAME [--video NAME] [--k 10] [--candidates N] [--json] [--out DIR]
  render --plan PLAN.json|RUN_ID --video NAME [--out DIR] [--seed N]
  run "QUERY" --mode basic|pe --llm NAME --video NAME [--out DIR]
  score --title T --description D [--category C] [--video FILE] [--json]
  predictor train [--data DIR] | predictor eval --data DIR [--json]
  index                 build (or load) the embeddings and FAISS indexes
  llms | videos         list backends and whether each can run here (and why not)
  studio                start the Gradio studio

`plan`, `render` and `run` are the studio's run path (pipeline.make_plans, pipeline.render_run) and keep their runs in
the studio's store (POPCORN_HOME: popcorn.db and runs/<id>/), so the studio's History on this machine shows them and
`study create --from runs` pairs them; `--out DIR` also copies the run's files there. `render --plan` takes the JSON
that `plan --json` prints (it names its stored run, which the render then continues), any plan JSON, or a run id.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from popcorn import pipeline
from popcorn.studio.runs import TERMINAL, get_store, keep_run, new_run_id, run_to_render
from popcorn.types import INPUT, RENDER, Plan, StageError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False))


def _stderr_progress(stage: str, fraction: float, message: str) -> None:
    if fraction in (0.0, 1.0) or stage == RENDER:
        print(f"[{stage}] {message}", file=sys.stderr, flush=True)


def _settings(args) -> pipeline.Settings:
    return pipeline.Settings(query=args.query, mode=args.mode, llm=args.llm, k=args.k, router=args.router,
                             seed=args.seed, candidates=getattr(args, "candidates", 1), video=args.video,
                             memory_mode=getattr(args, "memory_mode", "auto"), speed=getattr(args, "speed", "auto"),
                             cover_model=getattr(args, "cover_model", ""))


def _keep(run: pipeline.Run, status: str, out: str | None, error: str = "") -> Path:
    """Store the run as the studio does (visitor TERMINAL); with --out, copy its files there too. Returns its folder."""
    store = get_store()
    keep_run(store, run, status, error=error, visitor=TERMINAL)
    folder = store.run_dir(run.id)
    if out:
        shutil.copytree(folder, Path(out), dirs_exist_ok=True)
    return folder


def _plan_run(args) -> pipeline.Run:
    """make_plans for the command's settings (a run that fails past the input check is stored as failed, with why)."""
    settings = _settings(args)
    run = pipeline.Run(settings, id=new_run_id())
    try:
        return pipeline.make_plans(settings, progress=_stderr_progress, run=run, quick=True)
    except StageError as exc:
        if exc.stage != INPUT:
            _keep(run, "failed", None, error=str(exc))
        raise


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
    run = _plan_run(args)
    folder = _keep(run, "planned", args.out)
    out = {**run.plan.to_dict(), **run.plan_info}  # plan_info: the video budget, the attempts, tokens and seconds
    out["run_id"] = run.id  # `render --plan` continues this stored run
    if run.retrieval is not None:
        out["retrieval_index"] = run.retrieval.index
    if run.notes:
        out["notes"] = list(run.notes)
    for note in run.notes:
        print(f"note: {note}", file=sys.stderr)
    if run.candidates:
        out["candidates"] = run.candidates
    print(f"run {run.id} stored in {folder}", file=sys.stderr)
    if args.json:
        _print_json(out)
    else:
        print(f"Title:        {out['title']}\nCover prompt: {out['cover_prompt']}\nVideo prompt: {out['video_prompt']}")
        if out["matched_categories"]:
            print(f"Categories:   {', '.join(out['matched_categories'])}")
        for i, c in enumerate(run.candidates, 1):
            print(f"  #{i} {c['score'].get('predicted_comments', '?'):>8} comments  {c['plan']['title']}")
    return 0


def _plan_to_render(ref: str) -> tuple[dict, dict | None]:
    """(the plan's fields, its stored run or None) for `render --plan`: a plan JSON file or a stored run's id."""
    path = Path(ref)
    if not path.is_file():
        record = get_store().get_run(ref) if ref and "/" not in ref and not ref.endswith(".json") else None
        if record and record.get("plan"):
            return record["plan"], record
    try:
        plan_dict = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StageError(INPUT, f"cannot read the plan file {ref}: {exc}",
                         "give a JSON file as written by `plan --json`, or a run id from the History") from exc
    if not isinstance(plan_dict, dict):
        raise StageError(INPUT, f"the plan file {ref} holds no plan", "give a JSON file as written by `plan --json`")
    run_id = str(plan_dict.get("run_id") or "")
    return plan_dict, (get_store().get_run(run_id) if run_id else None)


def cmd_render(args) -> int:
    plan_dict, record = _plan_to_render(args.plan)
    the_plan = Plan.from_dict(plan_dict)
    split = _split_render(args, args.argv)
    if split is not None:
        return split
    from popcorn.video import parallel

    if not parallel.is_main_process():  # a split render: the other processes only help render; the main one writes
        pipeline.render(the_plan, args.video, seed=args.seed, memory_mode=args.memory_mode, speed=args.speed)
        return 0
    own = set(the_plan.to_dict())
    run = run_to_render(record, the_plan,
                        pipeline.Settings(query=the_plan.query or the_plan.title, mode=the_plan.mode, llm=the_plan.llm),
                        plan_info={k: plan_dict[k] for k in pipeline.PLAN_INFO if k in plan_dict and k not in own})
    for name in ("video", "seed", "memory_mode", "speed", "cover_model"):
        setattr(run.settings, name, getattr(args, name))
    _render(run, args.out, with_score=not args.no_score)
    return 0


def _render(run: pipeline.Run, out: str | None, with_score: bool = True) -> None:
    """render_run into the run's store folder, the run stored as done (as failed, with why, when it fails)."""
    folder = get_store().run_dir(run.id)
    try:
        pipeline.render_run(run, folder, progress=_stderr_progress, with_score=with_score)
    except StageError as exc:
        _keep(run, "failed", None, error=str(exc))
        raise
    _keep(run, "done", out)
    _print_json({"run_id": run.id, "out": str(out or folder), "title": run.plan.title, **run.video,
                 "score": run.score, "baseline": run.baseline,
                 "timings": run.to_dict()["timings"]})


def cmd_run(args) -> int:
    if (args.gpus or 1) > 1:  # plan here, once; then the plan is rendered split across the GPUs
        from popcorn.video import parallel

        parallel.check(args.video, args.gpus)
        planned = _plan_run(args)
        folder = _keep(planned, "planned", None)
        plan_file = folder / "plan.json"
        plan_file.write_text(json.dumps({**planned.plan.to_dict(), "run_id": planned.id}, ensure_ascii=False),
                             encoding="utf-8")
        return parallel.relaunch(["render", "--plan", str(plan_file), "--video", args.video, "--seed", str(args.seed),
                                  "--memory-mode", args.memory_mode, "--speed", args.speed, "--gpus", str(args.gpus)]
                                 + (["--out", args.out] if args.out else []), args.gpus)
    _render(_plan_run(args), args.out)
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
    import gc

    gc.disable()  # as app.py: no cyclic collection while gradio loads; serve() turns it back on
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

    p = sub.add_parser("plan", help="write a plan (title, cover prompt, video prompt); the run is stored")
    _add_plan_options(p)
    p.add_argument("--video", default="storyboard",
                   help="the video model the plan is written for: its video prompt fits that model's text encoder")
    p.add_argument("--candidates", type=int, default=1, help="write N plans and rank them by predicted popularity")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", help="also copy the run's run.json into this folder")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("render", help="render a plan into video.mp4 + cover.png + run.json; the run is stored")
    p.add_argument("--plan", required=True, help="a plan JSON file (as `plan --json` prints it) or a stored run's id")
    _add_video_options(p)
    p.add_argument("--out", help="also copy the run's files into this folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-score", action="store_true", help="skip the popularity score")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("run", help="plan, render, compose and score one query; the run is stored")
    _add_plan_options(p)
    _add_video_options(p)
    p.add_argument("--out", help="also copy the run's files into this folder")
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
