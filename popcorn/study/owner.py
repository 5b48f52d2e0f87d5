"""What a study's owner does, as plain functions (the CLI, the Study tab and the admin routes call these).

    authorise(secret, who)                 StudyError 403 unless LOCAL, `who` is the signed-in owner, or the secret
                                           matches POPCORN_ADMIN_SECRET (popcorn.serve.access: constant time, tries limited)
    collect_pairs(source, ...)             pairs from stored runs / a pair file / a batch folder (pairs.py)
    create_study(secret, name, question, pairs, ...) -> the study, its participant link and invite codes (its
                                           analysis frozen: prereg.py; join limits, consent, completion code)
    set_status(secret, study_id, "closed" | "open")   close (the link answers 410) or reopen
    list_studies(secret), results(secret, study_id), export(secret, study_id, folder)

Results and exports show everything (run ids, conditions, h): they are for the owner only. The CLI runs on the
machine that holds the store and passes LOCAL; anything served over the network passes the secret it was given and
who gave it (a visitor id, a client address): each public function here checks it once, so one owner action is one
try against popcorn.serve.access's limits.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from popcorn import config
from popcorn.serve import access
from popcorn.store import Store
from popcorn.study import StudyError, analysis, pairs as pairing
from popcorn.study.storage import StudyStore
from popcorn.text import plural
from popcorn.types import StageError

SECRET_ENV = "POPCORN_ADMIN_SECRET"
LOCAL = object()  # the owner at the machine's own terminal (the CLI)
SOURCES = ("runs", "file", "batch")
RECRUITMENT = ("consent", "completion_code", "redirect_url", "max_participants", "max_joins_per_address")

_STORES: dict[Path, StudyStore] = {}
_LOCK = threading.Lock()


def get_studies(home: str | Path | None = None) -> StudyStore:
    """The study store of `home` (default config.home_dir()), opened and migrated once per folder."""
    home = Path(home) if home else config.home_dir()
    with _LOCK:
        if home not in _STORES:
            _STORES[home] = StudyStore(Store(home=home))
        return _STORES[home]


def authorise(secret, who: str = "") -> None:
    """The owner, or StudyError: LOCAL (the terminal), a visitor signed in as the owner on this studio (History's owner
    mode), or the admin secret, checked by popcorn.serve.access.admin_secret_ok (constant time, never logged, tries limited
    per `who` and per server: 429 when over them)."""
    if secret is LOCAL or access.is_owner(who):
        return
    if not access.owner_mode_enabled():
        raise StudyError(f"study results are off: set {SECRET_ENV} on the server to use them", 403)
    try:
        ok = access.admin_secret_ok(secret if isinstance(secret, str) else "", who)
    except StageError as exc:  # too many tries
        raise StudyError(f"{exc.message}; {exc.hint}", 429) from None
    if not ok:
        raise StudyError("wrong admin secret", 403)


def participant_url(link: str) -> str:
    """The shareable link: POPCORN_PUBLIC_URL + /s/<link>/ (a path alone when the public address is unknown)."""
    base = os.environ.get("POPCORN_PUBLIC_URL", "").rstrip("/")
    return f"{base}/s/{link}/"


def collect_pairs(source: str, *, factor: str = "mode", a: str | None = None, b: str | None = None,
                  pair_file: str | Path | None = None, batch_dir: str | Path | None = None,
                  home: str | Path | None = None, limit: int = 100_000) -> list[dict]:
    if source not in SOURCES:
        raise StudyError(f"pairs come from one of {', '.join(SOURCES)}")
    studies = get_studies(home)
    if source == "runs":
        store = studies.store
        runs = [store.get_run(r["id"]) for r in store.list_runs(limit=limit)]
        found = pairing.pairs_from_runs(runs, factor, a or None, b or None)
        where = f"the store in {store.home}"
    elif source == "file":
        if not pair_file:
            raise StudyError("name the pair file (JSON or CSV)")
        found = pairing.pairs_from_file(pair_file, studies.store)
        where = str(pair_file)
    else:
        if not batch_dir:
            raise StudyError("name the batch output folder")
        found = pairing.pairs_from_batch(batch_dir, factor, a or None, b or None)
        where = str(batch_dir)
    if not found:
        wanted = f" ({a} vs {b})" if a and b else ""
        raise StudyError(f"no pairs in {where}: no two finished runs of the same query differ only in "
                         f"{factor}{wanted}. Render both versions of each query first.")
    return found


# generators that write their own name into the frames: a pair that sets one against another is not blind
MARKED_GENERATORS = {"storyboard": "the storyboard preview writes 'PREVIEW - storyboard' into its frames"}


def blindness_warnings(pairs: list[dict]) -> list[str]:
    """What could unblind participants in the pixels themselves (the copies carry no metadata, the frames do)."""
    warnings = set()
    for pair in pairs:
        if pair.get("factor") == "video":
            for side in ("a", "b"):
                why = MARKED_GENERATORS.get(str(pair[side].get("condition")))
                if why:
                    warnings.add(f"{why}: participants can tell it from the other video model")
    return sorted(warnings)


def create_study(secret, name: str, question: str, pairs: list[dict], *, per_participant: int = 10,
                 attention_checks: int = 0, invites: int = 0, seed: str | None = None, source: str = "",
                 home: str | Path | None = None, who: str = "", **options) -> dict:
    """`options`: StudyStore.create's keywords (repeats, max_joins_per_address, max_participants, consent,
    completion_code, redirect_url) and prereg.freeze's (planned_participants, tie_rule, primary, min_view_seconds,
    view_policy, exclusion)."""
    authorise(secret, who)
    study = get_studies(home).create(name, question, pairs, per_participant=per_participant,
                                     attention_checks=attention_checks, seed=seed, invites=invites, source=source,
                                     **options)
    return {**study, "url": participant_url(study["link"]), "warnings": blindness_warnings(pairs)}


def set_status(secret, study_id: str, status: str, home: str | Path | None = None, who: str = "") -> dict:
    authorise(secret, who)
    study = get_studies(home).set_status(study_id, status)
    return {**study, "url": participant_url(study["link"])}


def list_studies(secret, home: str | Path | None = None, who: str = "") -> list[dict]:
    authorise(secret, who)
    return [{**s, "url": participant_url(s["link"])} for s in get_studies(home).studies()]


def results(secret, study_id: str, bootstrap: int = analysis.BOOTSTRAP, home: str | Path | None = None,
            who: str = "") -> dict:
    authorise(secret, who)
    studies = get_studies(home)
    study = studies.study(study_id)
    votes = studies.votes(study_id)
    recruitment = {k: study["settings"].get(k) for k in RECRUITMENT}  # never the address salt
    return {"study": {**{k: study[k] for k in ("id", "name", "question", "created", "seed", "per_participant",
                                               "attention_checks", "participants", "votes", "status")},
                      "recruitment": recruitment},
            **analysis.analyse(votes, bootstrap=bootstrap, plan=study["prereg"])}


def export(secret, study_id: str, folder: str | Path, bootstrap: int = analysis.BOOTSTRAP,
           home: str | Path | None = None, who: str = "") -> dict[str, str]:
    """votes.csv, participants.csv, results.json (with the frozen plan and the departures from it) and
    win_rates.png of a study into `folder`; returns their paths."""
    authorise(secret, who)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    studies = get_studies(home)
    votes = studies.votes(study_id)
    result = results(LOCAL, study_id, bootstrap=bootstrap, home=home)  # authorised above: one try per action
    paths = {"csv": folder / f"study-{study_id}-votes.csv", "json": folder / f"study-{study_id}-results.json",
             "png": folder / f"study-{study_id}-win-rates.png",
             "participants": folder / f"study-{study_id}-participants.csv"}
    paths["csv"].write_text(analysis.votes_csv(votes), encoding="utf-8")
    paths["participants"].write_text(analysis.participants_csv(studies.participants(study_id), result["voters"]),
                                     encoding="utf-8")
    paths["json"].write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    analysis.chart_png(result, paths["png"])
    return {k: str(v) for k, v in paths.items()}


# ------------------------------------------------------------------------------------------------ the Study tab's views

RESULT_COLUMNS = ["comparison", "votes", "first wins", "second wins", "ties", "both bad", "win rate (decisive)",
                  "95% CI (people x pairs)", "95% CI (votes only, Wilson)", "ties as half"]


def create_view(secret, name: str, question: str, source: str, factor: str, a: str, b: str, pair_file: str,
                batch_dir: str, per_participant: int, attention_checks: int, invites: int,
                home: str | Path | None = None, who: str = "") -> str:
    """Create a study from the tab's form; returns Markdown with the participant link and invite codes."""
    authorise(secret, who)
    found = collect_pairs(source, factor=factor, a=a or None, b=b or None, pair_file=pair_file or None,
                          batch_dir=batch_dir or None, home=home)
    study = create_study(LOCAL, name, question, found, per_participant=int(per_participant or 10),
                         attention_checks=int(attention_checks or 0), invites=int(invites or 0), source=source,
                         home=home)
    lines = [f"**Study `{study['id']}` created** with {plural(len(found), 'pair')} ({study['per_participant']} "
             f"per participant, {plural(study['attention_checks'], 'gold attention check')}).", "", f"Participant link: `{study['url']}`",
             "", f"Completion code: `{study['settings']['completion_code']}`",
             "", f"Analysis frozen: {study['prereg']['primary']['measure']}; {study['prereg']['interval']}"]
    if study.get("invites"):
        lines += ["", "Invite codes (one per participant): " + ", ".join(f"`{c}`" for c in study["invites"])]
    lines += [f"\n**Warning:** {w}" for w in study["warnings"]]
    return "\n".join(lines)


def study_choices(secret, home: str | Path | None = None, who: str = "") -> list[tuple[str, str]]:
    return [(f"{s['name']} ({s['status']}, {s['participants']} people, {s['votes']} votes) · {s['id']}", s["id"])
            for s in list_studies(secret, home, who)]


STUDY_FIELDS = {"status": "status", "participants": "people", "votes": "votes", "url": "link to share"}


def studies_table(secret, home: str | Path | None = None, who: str = "") -> list[dict]:
    """The Study tab's list, newest first: each study's name, id and STUDY_FIELDS (status, counts, participant link),
    keyed by their labels."""
    return [{"name": s["name"], "id": s["id"], **{label: s[key] for key, label in STUDY_FIELDS.items()}}
            for s in list_studies(secret, home, who)]


def status_view(secret, study_id: str, status: str, home: str | Path | None = None, who: str = "") -> str:
    """Close or reopen a study from the tab; returns Markdown with its state and participant link."""
    if not study_id:
        raise StudyError("pick a study first")
    study = set_status(secret, study_id, status, home, who)
    people = f"{study['participants']} {'participant' if study['participants'] == 1 else 'participants'}"
    votes = f"{study['votes']} {'vote' if study['votes'] == 1 else 'votes'}"
    return (f"**{study['name']}** is **{study['status']}** ({people}, {votes})."
            f" Participant link: `{study['url']}`" + (" (it tells visitors the study is closed)"
                                                      if status == "closed" else ""))


def results_view(secret, study_id: str, folder: str | Path, home: str | Path | None = None, who: str = ""
                 ) -> tuple[str, list[list], str, list[str]]:
    """(summary Markdown, the win-rate table's rows, the chart PNG, [CSV, JSON]) of a study, written to `folder`."""
    if not study_id:
        raise StudyError("pick a study first")
    paths = export(secret, study_id, folder, home=home, who=who)
    result = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    rows = []
    for r in result["win_rates"]:
        a = r["apart"]
        pct = lambda x: "" if x is None else f"{x:.1%}"  # noqa: E731
        ci = lambda c: "" if not c else f"{c[0]:.1%} – {c[1]:.1%}"  # noqa: E731
        rows.append([f"{r['x']} vs {r['y']}", r["votes"], r["x_wins"], r["y_wins"], r["ties"], r["both_bad"],
                     pct(a["rate"]), ci(a["ci95"]) or "needs 2+ people and 2+ pairs", ci(a.get("wilson_ci95")),
                     pct(r["half"]["rate"])])
    bt = result["bradley_terry"].get("strengths", {})
    lines = [f"### {result['study']['name']}", "", *[f"- {line}" for line in analysis.summary_lines(result)]]
    if bt:
        lines.append("- Bradley–Terry strengths (95% bootstrap CI): " + "; ".join(
            f"{p} {s['strength']:.2f}" + (f" [{s['ci95'][0]:.2f}, {s['ci95'][1]:.2f}]" if s["ci95"] else "")
            for p, s in bt.items()))
    flagged = [v for v in result["voters"] if v["flags"]]
    if flagged:
        lines.append("- Flagged voters: " + ", ".join(f"{v['participant']} ({', '.join(v['flags'])})"
                                                        for v in flagged))
    return "\n".join(lines), rows, paths["png"], [paths["csv"], paths["participants"], paths["json"]]
