"""Blind A/B user studies: pairs of videos made for the same query, shown to people who do not know which system
made which, and the analysis of their votes.

    pairs.py     pairing rules (stored runs, a pair file, a batch folder) -> plain pair dicts
    assign.py    per-participant subset (least-seen first), order, sides, gold checks, drawn from a recorded seed
    media.py     anonymised copies of the videos under opaque ids, metadata stripped and checked; the frozen side of
                 a gold check
    prereg.py    the analysis frozen at creation, and where the data departed from it
    storage.py   studies, items, participants and votes in the project's SQLite store (WAL, idempotent votes, group
                 commit, join limits, the viewing rule)
    analysis.py  win rates (two-way participant x pair bootstrap), Bradley-Terry (Ford's condition), agreement,
                 voter screening, h vs people
    planner.py   how many participants a study needs, by simulating its clustered design
    owner.py     what the study owner does (create, list, close / reopen, results, exports), behind the admin secret
    server.py    the participant side: FastAPI routes under /s/<link token>/...; page.html is its page
    cli.py       python -m popcorn study create|plan|pairs|list|close|reopen|results|export|serve

Nothing here imports gradio; the owner's tab is popcorn/ui/study.py.
"""


from popcorn.types import StageError


class StudyError(StageError):
    """A failure of the study stage the owner or a participant can act on: `message` is what to show, `status` the
    HTTP status it maps to (400 bad input, 403 refused, 404 not found / not yours, 409 already answered)."""

    def __init__(self, message: str, status: int = 400, hint: str = ""):
        super().__init__("study", message, hint)
        self.status = status
