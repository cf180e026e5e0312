"""What a trainer or review session does per case, apart from any UI: draw the cases, score an
answer, store it. The app's tabs (and scripts) call these, so the UI holds no logic of its own."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from echogen.teaching import stats
from echogen.teaching.db import ResultsDB
from echogen.teaching.pool import POOL_FILE, Pool, load_pool
from echogen.teaching.review import REVIEW_FILE, ReviewSet, load_review_set

# a results folder (the app's --results): results.sqlite, pools/NAME, reviews/NAME and the review keys
POOLS, REVIEWS, KEYS = "pools", "reviews", "keys"


def review_key_path(results_dir, review_name) -> Path:
    return Path(results_dir) / KEYS / f"{review_name}.key.json"


def source_names(results_dir) -> dict[str, str]:
    """Pool / review-set id -> its folder name under the results folder (the name the app's pickers show)."""
    names = {}
    for p in find_pools(Path(results_dir) / POOLS):
        try:
            names[load_pool(p).id] = p.name
        except (OSError, ValueError, KeyError):
            pass
    for p in find_review_sets(Path(results_dir) / REVIEWS):
        try:
            names[load_review_set(p, key_path=review_key_path(results_dir, p.name)).id] = p.name
        except (OSError, ValueError, KeyError):
            pass
    return names


def find_pools(root, ready_only: bool = False) -> list[Path]:
    """Folders under root (root itself included, two levels deep) that hold a pool; ready_only: only
    finished pools with at least one case (what trainees may pick)."""
    hits = _find(root, POOL_FILE)
    if ready_only:
        def ready(p):
            try:
                return load_pool(p).ready
            except (OSError, ValueError):
                return False
        hits = [p for p in hits if ready(p)]
    return hits


def by_name(root, name) -> Path:
    """The folder `name` directly inside root: a bare name from a picker, never a path (no '/', no '..')."""
    name = str(name or "").strip()
    if not name:
        raise ValueError("nothing selected")
    if name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError("unknown name")
    p = Path(root) / name
    if not p.is_dir():
        raise ValueError(f"'{name}' is not available")
    return p


def find_review_sets(root) -> list[Path]:
    return _find(root, REVIEW_FILE)


def _find(root, fname: str) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    hits = [root] if (root / fname).is_file() else []
    hits += sorted(p.parent for p in root.glob(f"*/{fname}")) + sorted(p.parent for p in root.glob(f"*/*/{fname}"))
    return hits


def draw_cases(pool: Pool, n: int, seed=None) -> list[str]:
    """n case ids in random order, without repeats until the pool is used up (then reshuffled)."""
    if n < 1:
        raise ValueError(f"case count must be >= 1, got {n}")
    if not pool.cases:
        raise ValueError(f"pool {pool.id} has no cases")
    rng = np.random.default_rng(seed)
    ids = [c["id"] for c in pool.cases]
    out = []
    while len(out) < n:
        out += [ids[i] for i in rng.permutation(len(ids))]
    return out[:n]


def repeat_note(n_cases_in_pool: int, n: int) -> str:
    """What a trainee is told when a session is longer than its pool ('' when no case repeats)."""
    if n <= n_cases_in_pool:
        return ""
    times = -(-n // n_cases_in_pool)
    if n_cases_in_pool == 1:
        return f"This pool has 1 case, so it is repeated for all your {n} cases."
    return (f"This pool has {n_cases_in_pool} cases, so your {n} cases repeat each of them up to {times} times "
            f"(every case is shown once before any repeats).")


def review_order(review: ReviewSet, seed=None) -> list[str]:
    """The set's cases in a fresh random order for one rater (order effects average out over raters)."""
    rng = np.random.default_rng(seed)
    return [review.cases[i]["id"] for i in rng.permutation(len(review.cases))]


def start_trainer(db: ResultsDB, pool: Pool, n: int, rater: str = "", categories=None, seed=None,
                  user: str = "") -> tuple[str, list[str]]:
    """A new trainer session: (session id, the case ids to show in order). user: the login name, if any."""
    cats = stats.parse_categories(categories)
    cases = draw_cases(pool, n, seed)
    sid = db.start_session("trainer", pool.id, rater=rater, source_path=str(pool.dir),
                           meta={"categories": stats.format_categories(cats), "cases": cases, "user": user or "",
                                 "pool_cases": len(pool.cases), "skipped": []})
    return sid, cases


def start_review(db: ResultsDB, review: ReviewSet, rater: str = "", seed=None, user: str = "") -> tuple[str, list[str]]:
    """A new review (study) session. A study has no anonymous rows: the rater's name is required."""
    if not (rater or "").strip():
        raise ValueError("enter your name to take part in the study")
    if review.key is None:
        raise ValueError(f"review set {review.dir.name}: its key is needed to record answers")
    order = review_order(review, seed)
    sid = db.start_session("review", review.id, rater=rater, source_path=str(review.dir),
                           meta={"cases": order, "user": user or ""})
    return sid, order


def exclude_session(db: ResultsDB, session: str, excluded: bool = True, reason: str = "") -> dict:
    """The organiser excludes (or re-includes) a session: its answers stay in the database but leave
    every summary and export of included answers."""
    return db.update_meta(session, excluded=bool(excluded), excluded_reason=(reason or "")[:200])


def excluded_ids(sessions: list[dict]) -> set[str]:
    """Ids of the sessions the organiser has excluded (the one rule every summary and export uses)."""
    return {s["id"] for s in sessions if s["meta"].get("excluded")}


def included(sessions: list[dict]) -> list[dict]:
    out = excluded_ids(sessions)
    return [s for s in sessions if s["id"] not in out]


def included_answers(db: ResultsDB, **where) -> list[dict]:
    """Answers of sessions the organiser has not excluded."""
    keep = {s["id"] for s in included(db.sessions(kind=where.get("kind"), source=where.get("source")))}
    return [a for a in db.answers(**where) if a["session"] in keep]


def skip_trainer_case(db: ResultsDB, session: str, position: int, case_id: str) -> None:
    """An explicit skip: recorded in the session (meta "skipped": [{position, case_id}]), never as an answer."""
    meta = db.session(session)["meta"]
    if any(a["position"] == position for a in db.answers(session=session)):
        raise ValueError("this case is already answered")
    skipped = [x for x in meta.get("skipped", []) if x["position"] != position]
    db.update_meta(session, skipped=skipped + [{"position": int(position), "case_id": str(case_id)}])


def trainer_feedback(case: dict, answer_ef=None, answer_category=None, categories=None) -> dict:
    """What the trainee sees after answering: truth, their error, the regressor's reading, the category."""
    cats = categories if isinstance(categories, list) else stats.parse_categories(categories)
    true_cat = stats.categorise(case["ef"], cats)
    return {"true_ef": case["ef"], "ef_source": case.get("ef_source"), "requested_ef": case.get("ef_requested"),
            "readings": case.get("ef_readings") or {},
            "error": None if answer_ef is None else float(answer_ef) - case["ef"],
            "regressor_ef": case.get("ef_regressor"), "true_category": true_cat,
            "category_correct": None if not answer_category else answer_category == true_cat,
            "kind": case["kind"]}


def record_trainer_answer(db: ResultsDB, session: str, position: int, pool: Pool, case_id: str, answer_ef=None,
                          answer_category=None, response_ms=None, comment: str = "") -> dict:
    """Store one trainer answer (truth taken from the pool, never from the client); returns the feedback.
    An answer is an EF (0-100 %) and/or one of the session's categories; nothing given is refused (an
    unanswered case is skipped explicitly with skip_trainer_case)."""
    cats = db.session(session)["meta"].get("categories")
    names = [c.name for c in stats.parse_categories(cats)]
    if answer_ef is None and not answer_category:
        raise ValueError("give an EF and/or a category (or skip the case)")
    if answer_category and answer_category not in names:
        raise ValueError(f"category must be one of: {', '.join(names)}")
    if answer_ef is not None and not 0 <= float(answer_ef) <= 100:
        raise ValueError("EF must be 0-100 %")
    case = pool.case(case_id)
    fb = trainer_feedback(case, answer_ef, answer_category, cats)
    db.add_answer(session, position, case_id, truth_ef=case["ef"], truth_category=fb["true_category"],
                  answer_ef=answer_ef, answer_category=answer_category or None, response_ms=response_ms,
                  comment=comment)
    return fb


def record_review_answer(db: ResultsDB, session: str, position: int, review: ReviewSet, case_id: str, label: str,
                         confidence=None, comment: str = "", response_ms=None) -> bool:
    """Store one review answer with its truth from the key (never shown to the rater)."""
    return db.add_answer(session, position, case_id, truth_label=review.truth(case_id), answer_label=label,
                         confidence=confidence, comment=comment, response_ms=response_ms)
