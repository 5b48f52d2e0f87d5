"""`python -m popcorn study ...`: create, list, analyse and export blind A/B studies, and serve their links.

  study create --name N --question Q --from runs --factor mode [--a pe --b basic]
               [--per-participant 10] [--attention-checks 1] [--invites 0] [--seed S]
  study create --name N --question Q --from file --pairs PAIRS.json|csv
  study create --name N --question Q --from batch --batch DIR --factor llm
  study pairs --from runs --factor mode [--out PAIRS.json]      the pairs a rule finds, without creating anything
  study list [--json]
  study results STUDY_ID [--json] [--chart OUT.png]
  study export STUDY_ID --out DIR                               votes CSV, results JSON, win-rate chart PNG
  study serve [--port 8765]                                     the participant routes alone, on 127.0.0.1

The terminal is the owner's seat (it holds the store), so no admin secret is asked here; over the network the
results are behind POPCORN_ADMIN_SECRET.
"""

from __future__ import annotations

import argparse
import json

from popcorn.study import analysis, owner
from popcorn.study import pairs as pairing


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _pairs(args) -> list[dict]:
    return owner.collect_pairs(args.source, factor=args.factor, a=args.a, b=args.b, pair_file=args.pairs,
                               batch_dir=args.batch)


def cmd_create(args) -> int:
    found = _pairs(args)
    study = owner.create_study(owner.LOCAL, args.name, args.question, found, per_participant=args.per_participant,
                               attention_checks=args.attention_checks, invites=args.invites, seed=args.seed,
                               source=args.source)
    if args.json:
        _print_json(study)
    else:
        print(f"study {study['id']}: {len(found)} pairs, {study['per_participant']} per participant, "
              f"{study['attention_checks']} attention check(s)")
        print(f"participant link: {study['url']}")
        for code in study.get("invites", []):
            print(f"invite: {code}")
        for warning in study["warnings"]:
            print(f"warning: {warning}")
    return 0


def cmd_pairs(args) -> int:
    found = _pairs(args)
    if args.out:
        pairing.write_pair_file(found, args.out)
        print(f"{len(found)} pairs written to {args.out}")
    else:
        _print_json(found)
    return 0


def cmd_list(args) -> int:
    rows = owner.list_studies(owner.LOCAL)
    if args.json:
        _print_json(rows)
    for s in [] if args.json else rows:
        print(f"{s['id']}  {s['status']:<6} {s['participants']:>4} people {s['votes']:>5} votes  {s['name']}  "
              f"{s['url']}")
    return 0


def cmd_results(args) -> int:
    result = owner.results(owner.LOCAL, args.study, bootstrap=args.bootstrap)
    if args.chart:
        analysis.chart_png(result, args.chart)
    if args.json:
        _print_json(result)
    else:
        print("\n".join(analysis.summary_lines(result)))
    return 0


def cmd_export(args) -> int:
    _print_json(owner.export(owner.LOCAL, args.study, args.out, bootstrap=args.bootstrap))
    return 0


def cmd_serve(args) -> int:
    from popcorn.study.server import main as serve

    return serve(["--port", str(args.port), "--host", args.host] + (["--home", args.home] if args.home else []))


def _add_source(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="source", choices=owner.SOURCES, default="runs",
                   help="runs: stored runs paired by --factor; file: --pairs FILE; batch: --batch DIR")
    p.add_argument("--factor", choices=pairing.FACTORS, default="mode", help="what differs within a pair")
    p.add_argument("--a", help="the first condition (e.g. pe); with --b only these two are paired")
    p.add_argument("--b", help="the second condition (e.g. basic)")
    p.add_argument("--pairs", help="a pair file (JSON or CSV: a, b, condition_a, condition_b, query, ...)")
    p.add_argument("--batch", help="a batch output folder (python -m popcorn batch --out DIR)")


def add_parser(sub) -> None:
    """Register `study` on the main CLI's subparsers."""
    study = sub.add_parser("study", help="blind A/B user studies: create, list, results, export, serve")
    actions = study.add_subparsers(dest="study_command", required=True)

    p = actions.add_parser("create", help="create a study and print its participant link")
    p.add_argument("--name", required=True, help="for you only; participants never see it")
    p.add_argument("--question", default="Which video would be more popular?")
    _add_source(p)
    p.add_argument("--per-participant", type=int, default=10, help="pairs each participant sees")
    p.add_argument("--attention-checks", type=int, default=0, help="pairs repeated with the sides swapped")
    p.add_argument("--invites", type=int, default=0, help="make N invite codes (0: anyone with the link)")
    p.add_argument("--seed", help="the randomisation seed (default: drawn and recorded)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create)

    p = actions.add_parser("pairs", help="show (or write) the pairs a rule finds")
    _add_source(p)
    p.add_argument("--out", help="write them as a pair file")
    p.set_defaults(func=cmd_pairs)

    p = actions.add_parser("list", help="the studies in the store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = actions.add_parser("results", help="win rates, Bradley-Terry, agreement, screening, h vs people")
    p.add_argument("study")
    p.add_argument("--json", action="store_true")
    p.add_argument("--chart", help="also write the win-rate chart to this PNG")
    p.add_argument("--bootstrap", type=int, default=analysis.BOOTSTRAP)
    p.set_defaults(func=cmd_results)

    p = actions.add_parser("export", help="votes CSV, results JSON and the chart PNG into a folder")
    p.add_argument("study")
    p.add_argument("--out", required=True)
    p.add_argument("--bootstrap", type=int, default=analysis.BOOTSTRAP)
    p.set_defaults(func=cmd_export)

    p = actions.add_parser("serve", help="serve the participant links alone (127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--home")
    p.set_defaults(func=cmd_serve)

