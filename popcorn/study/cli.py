"""`python -m popcorn study ...`: create, list, analyse and export blind A/B studies, and serve their links.

  study create --name N --question Q --from runs --factor mode [--a pe --b basic]
               [--per-participant 10] [--attention-checks 1] [--invites 0] [--seed S]
               [--max-joins-per-address 20] [--max-participants 0] [--min-view-seconds S] [--view-policy refuse]
               [--consent FILE] [--completion-code C] [--redirect-url URL] [--planned-participants N]
               [--tie-rule apart] [--gold-failures 1]
  study create --name N --question Q --from file --pairs PAIRS.json|csv
  study create --name N --question Q --from batch --batch DIR --factor llm
  study pairs --from runs --factor mode [--out PAIRS.json]      the pairs a rule finds, without creating anything
  study plan --pairs 20 --effect 0.6 --per-participant 10 [--half-width 0.05] [--participant-sd 0.5]
             [--pair-sd 0.5] [--tie-rate 0]                     participants needed, by simulating the design
  study close STUDY_ID | study reopen STUDY_ID                  the link answers 410 while closed
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

from pathlib import Path

from popcorn.study import StudyError, analysis, owner, planner, prereg
from popcorn.study import pairs as pairing


STUDY_ID_HELP = "the study's id (one made before 2026-12-08 may start with '-': give it after --, as in -- -AbC)"


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, ensure_ascii=False, default=str))


def _pairs(args) -> list[dict]:
    return owner.collect_pairs(args.source, factor=args.factor, a=args.a, b=args.b, pair_file=args.pairs,
                               batch_dir=args.batch)


def _consent(value: str | None) -> str:
    """--consent: a text file's contents (the owner's consent text), or the text itself."""
    if not value:
        return ""
    path = Path(value)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    if len(value) < 200 and (value.endswith((".txt", ".md")) or "/" in value):
        raise StudyError(f"the consent file {value} is missing")
    return value


def cmd_create(args) -> int:
    found = _pairs(args)
    study = owner.create_study(owner.LOCAL, args.name, args.question, found, per_participant=args.per_participant,
                               attention_checks=args.attention_checks, invites=args.invites, seed=args.seed,
                               source=args.source, repeats=args.repeats,
                               max_joins_per_address=args.max_joins_per_address,
                               max_participants=args.max_participants, consent=_consent(args.consent),
                               completion_code=args.completion_code, redirect_url=args.redirect_url or "",
                               planned_participants=args.planned_participants, tie_rule=args.tie_rule,
                               min_view_seconds=args.min_view_seconds, view_policy=args.view_policy,
                               exclusion={"gold_failures": args.gold_failures},
                               primary=(args.a, args.b) if args.a and args.b else None)
    if args.json:
        _print_json(study)
    else:
        print(f"study {study['id']}: {len(found)} pairs, {study['per_participant']} per participant, "
              f"{study['attention_checks']} gold attention check(s)")
        print(f"participant link: {study['url']}")
        print(f"completion code: {study['settings']['completion_code']}"
              + (f" (then to {study['settings']['redirect_url']})" if study["settings"]["redirect_url"] else ""))
        print(f"analysis frozen: {study['prereg']['primary']['measure']}; {study['prereg']['interval']}")
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


def cmd_plan(args) -> int:
    result = planner.plan(args.pairs, args.effect, args.per_participant, half_width=args.half_width,
                          participant_sd=args.participant_sd, pair_sd=args.pair_sd, tie_rate=args.tie_rate,
                          sims=args.sims, bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        _print_json(result)
    else:
        print("\n".join(planner.lines(result)))
    return 0 if result["reachable"] else 1


def cmd_status(args) -> int:
    study = owner.set_status(owner.LOCAL, args.study, "closed" if args.study_command == "close" else "open")
    print(f"study {study['id']} is {study['status']}: {study['participants']} participants, {study['votes']} votes; "
          f"{study['url']}")
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

    return serve(["--port", str(args.port), "--host", args.host] + (["--home", args.home] if args.home else [])
                 + [x for proxy in args.trusted_proxy for x in ("--trusted-proxy", proxy)])


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
    p.add_argument("--repeats", type=int, default=0, help="pairs shown again with the sides swapped (reported)")
    p.add_argument("--max-joins-per-address", type=int, default=20,
                   help="joins per client address and hour (0: no limit); behind a proxy see `study serve`")
    p.add_argument("--max-participants", type=int, default=0, help="the participant cap (0: none)")
    p.add_argument("--min-view-seconds", type=float, default=None,
                   help="seconds between serving a pair and accepting its vote (default: the shorter video's "
                        "length; 0 switches it off, for scripted tests)")
    p.add_argument("--view-policy", choices=prereg.VIEW_POLICIES, default="refuse",
                   help="a quicker vote is refused (425) or stored flagged 'fast'")
    p.add_argument("--consent", help="a consent text file (or the text) shown before the first pair")
    p.add_argument("--completion-code", help="shown at the end (default: drawn)")
    p.add_argument("--redirect-url", help="where the page sends a participant at the end, e.g. "
                                          "https://app.prolific.com/submissions/complete?cc=CODE")
    p.add_argument("--planned-participants", type=int, default=0, help="frozen with the analysis")
    p.add_argument("--tie-rule", choices=prereg.TIE_RULES, default="apart", help="the primary rate's tie rule")
    p.add_argument("--gold-failures", type=int, default=1,
                   help="gold checks failed (the frozen video picked) that exclude a participant (0: never)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_create)

    p = actions.add_parser("plan", help="how many participants a chosen interval half-width needs (simulated)")
    p.add_argument("--pairs", type=int, required=True, help="pairs in the study")
    p.add_argument("--effect", type=float, required=True, help="the expected win rate of one condition, e.g. 0.6")
    p.add_argument("--per-participant", type=int, required=True, help="pairs each participant sees")
    p.add_argument("--half-width", type=float, default=0.05, help="the 95%% interval's half-width wanted")
    p.add_argument("--participant-sd", type=float, default=planner.PARTICIPANT_SD, help="logit scale")
    p.add_argument("--pair-sd", type=float, default=planner.PAIR_SD, help="logit scale")
    p.add_argument("--tie-rate", type=float, default=0.0, help="share of votes that are ties")
    p.add_argument("--sims", type=int, default=planner.SIMS)
    p.add_argument("--bootstrap", type=int, default=planner.BOOTSTRAP)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plan)

    for name, what in (("close", "close a study: its link answers 410, no joins, no votes"),
                       ("reopen", "reopen a closed study")):
        p = actions.add_parser(name, help=what)
        p.add_argument("study", help=STUDY_ID_HELP)
        p.set_defaults(func=cmd_status)

    p = actions.add_parser("pairs", help="show (or write) the pairs a rule finds")
    _add_source(p)
    p.add_argument("--out", help="write them as a pair file")
    p.set_defaults(func=cmd_pairs)

    p = actions.add_parser("list", help="the studies in the store")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = actions.add_parser("results", help="win rates, Bradley-Terry, agreement, screening, h vs people")
    p.add_argument("study", help=STUDY_ID_HELP)
    p.add_argument("--json", action="store_true")
    p.add_argument("--chart", help="also write the win-rate chart to this PNG")
    p.add_argument("--bootstrap", type=int, default=analysis.BOOTSTRAP)
    p.set_defaults(func=cmd_results)

    p = actions.add_parser("export", help="votes CSV, results JSON and the chart PNG into a folder")
    p.add_argument("study", help=STUDY_ID_HELP)
    p.add_argument("--out", required=True)
    p.add_argument("--bootstrap", type=int, default=analysis.BOOTSTRAP)
    p.set_defaults(func=cmd_export)

    p = actions.add_parser("serve", help="serve the participant links alone (127.0.0.1)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--home")
    p.add_argument("--trusted-proxy", action="append", default=[],
                   help="a proxy whose X-Forwarded-For names the participant (repeatable)")
    p.set_defaults(func=cmd_serve)

