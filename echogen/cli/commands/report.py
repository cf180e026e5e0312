"""`python -m echogen report --results DIR [--session ID]`: summaries of EF-trainer sessions and
blinded reviews stored in RESULTS/results.sqlite; --csv exports the answers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from echogen.cli.main import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, help="results folder (holds results.sqlite)")
    p.add_argument("--session", default=None, help="one session id (default: every session)")
    p.add_argument("--categories", default=None, help="EF categories for trainer summaries: esc2021, ase2015-male, "
                   "ase2015-female, or 'name<=40, name<50, name' (default: each session's own, as the trainee chose)")
    p.add_argument("--csv", default=None, help="also write the answers shown to this CSV file")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")


def _tidy(x):
    """--json numbers as a reader wants them: floats to 4 decimals (10.799999999999997 -> 10.8)."""
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _tidy(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_tidy(v) for v in x]
    return x


def _trainer(db, s, categories):
    from echogen.teaching.summary import summarise_trainer

    return summarise_trainer(db.answers(session=s["id"]), categories or s["meta"].get("categories"))


def main(args) -> int:
    from echogen.teaching.db import ANSWER_COLUMNS, DB_NAME, ResultsDB, rater_label
    from echogen.teaching.sessions import excluded_ids, source_names
    from echogen.teaching.stats import parse_categories, write_csv
    from echogen.teaching.summary import format_review, format_trainer, summarise_review

    if not (Path(args.results) / DB_NAME).is_file():
        raise UserError(f"{args.results}: no results database ({DB_NAME}) there")
    if args.categories:
        parse_categories(args.categories)                   # fail early on a bad spec
    db = ResultsDB(args.results)
    names = source_names(args.results)                      # pool / review-set ids -> the names the app shows
    sessions = [db.session(args.session)] if args.session else db.sessions()
    excluded = excluded_ids(sessions)
    report, text = [], []
    for s in sessions:
        if s["kind"] != "trainer":
            continue
        summ = _trainer(db, s, args.categories)
        skipped = len(s["meta"].get("skipped", []))
        pool = names.get(s["source"], f"id {s['source']}")
        report.append({"session": s["id"], "kind": "trainer", "rater": rater_label(s), "source": s["source"],
                       "pool": pool, "started": s["started"], "skipped": skipped, "excluded": s["id"] in excluded,
                       "summary": summ})
        note = f", {skipped} skipped" if skipped else ""
        note += ", EXCLUDED by the organiser: left out of the app's summaries" if s["id"] in excluded else ""
        text.append(format_trainer(summ, f"EF trainer {s['id']} ({rater_label(s)}, pool {pool}, "
                                         f"{s['started'][:16]}{note})"))
    review_sources = dict.fromkeys(s["source"] for s in sessions if s["kind"] == "review")
    for src in review_sources:
        ss = [s for s in sessions if s["kind"] == "review" and s["source"] == src]
        kept = [s for s in ss if s["id"] not in excluded]     # as the app: an excluded rater leaves the summary
        rows = [a for s in kept for a in db.answers(session=s["id"])]
        summ = summarise_review(rows, kept)
        what = f"session {ss[0]['id']}" if args.session else f"{len(kept)} session(s)"
        if len(kept) < len(ss):
            what += f", {len(ss) - len(kept)} excluded by the organiser"
        name = names.get(src, f"id {src}")
        report.append({"kind": "review", "source": src, "set": name, "sessions": [s["id"] for s in kept],
                       "excluded": [s["id"] for s in ss if s["id"] in excluded], "summary": summ})
        text.append(format_review(summ, f"Blinded review of set {name} ({what})"))
    if args.csv:
        rows = [{**a, "excluded": s["id"] in excluded} for s in sessions for a in db.answers(session=s["id"])]
        write_csv(args.csv, rows, ANSWER_COLUMNS + ["excluded"])
    if args.json:
        print(json.dumps(_tidy(report), indent=1))
    else:
        print("\n\n".join(text) if text else f"{args.results}: no sessions yet")
        if args.csv:
            print(f"\nanswers written to {args.csv}")
    return 0
