"""What a trainer or review session does per case, apart from any UI: draw the cases, score an
answer, store it. The app's tabs (and scripts) call these, so the UI holds no logic of its own."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from echogen.teaching import stats
from echogen.teaching.db import ResultsDB
from echogen.teaching.pool import POOL_FILE, Pool
from echogen.teaching.review import REVIEW_FILE, ReviewSet


def find_pools(root) -> list[Path]:
    """Folders under root (root itself included, two levels deep) that hold a pool."""
    return _find(root, POOL_FILE)


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


def review_order(review: ReviewSet, seed=None) -> list[str]:
    """The set's cases in a fresh random order for one rater (order effects average out over raters)."""
    rng = np.random.default_rng(seed)
    return [review.cases[i]["id"] for i in rng.permutation(len(review.cases))]


def start_trainer(db: ResultsDB, pool: Pool, n: int, rater: str = "", categories=None, seed=None) -> tuple[str, list[str]]:
    """A new trainer session: (session id, the case ids to show in order)."""
    cats = stats.parse_categories(categories)
    cases = draw_cases(pool, n, seed)
    sid = db.start_session("trainer", pool.id, rater=rater, source_path=str(pool.dir),
                           meta={"categories": stats.format_categories(cats), "cases": cases})
    return sid, cases


def start_review(db: ResultsDB, review: ReviewSet, rater: str = "", seed=None) -> tuple[str, list[str]]:
    if review.key is None:
        raise ValueError(f"review set {review.id}: its key is needed to record answers (kept beside the folder)")
    order = review_order(review, seed)
    sid = db.start_session("review", review.id, rater=rater, source_path=str(review.dir), meta={"cases": order})
    return sid, order


def trainer_feedback(case: dict, answer_ef=None, answer_category=None, categories=None) -> dict:
    """What the trainee sees after answering: truth, their error, the regressor's reading, the category."""
    cats = categories if isinstance(categories, list) else stats.parse_categories(categories)
    true_cat = stats.categorise(case["ef"], cats)
    return {"true_ef": case["ef"], "error": None if answer_ef is None else float(answer_ef) - case["ef"],
            "regressor_ef": case.get("ef_regressor"), "true_category": true_cat,
            "category_correct": None if not answer_category else answer_category == true_cat,
            "kind": case["kind"]}


def record_trainer_answer(db: ResultsDB, session: str, position: int, pool: Pool, case_id: str, answer_ef=None,
                          answer_category=None, response_ms=None, comment: str = "") -> dict:
    """Store one trainer answer (truth taken from the pool, never from the client); returns the feedback."""
    cats = db.session(session)["meta"].get("categories")
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
