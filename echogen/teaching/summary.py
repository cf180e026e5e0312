"""Session summaries from stored answers (rows of echogen.teaching.db), as dicts and as text.
Used by `python -m echogen report` and by the app."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from echogen.teaching import stats
from echogen.teaching.db import LABELS


def plural(n: int, word: str) -> str:
    """'1 case', '2 cases': a count in words for the teaching tabs, the pool command and report."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def summarise_trainer(answers: list[dict], categories=None) -> dict:
    """EF answers: MAE, bias, Bland-Altman; category answers: accuracy per true category."""
    cats = categories if isinstance(categories, list) else stats.parse_categories(categories)
    names = [c.name for c in cats]
    ef_rows = [a for a in answers if a["answer_ef"] is not None and a["truth_ef"] is not None]
    out = {"n": len(answers), "n_ef": len(ef_rows), "categories": stats.format_categories(cats)}
    if ef_rows:
        t = [a["truth_ef"] for a in ef_rows]
        y = [a["answer_ef"] for a in ef_rows]
        ba = stats.bland_altman(t, y)
        out |= {"mae": stats.mae(t, y), "bias": stats.bias(t, y),
                "bland_altman": {k: ba[k] for k in ("n", "mean_diff", "sd_diff", "loa_low", "loa_high")}}
    cat_rows = [a for a in answers if a["answer_category"] and (a["truth_category"] or a["truth_ef"] is not None)]
    out["n_category"] = len(cat_rows)
    if cat_rows:
        truth = [a["truth_category"] or stats.categorise(a["truth_ef"], cats) for a in cat_rows]
        ans = [a["answer_category"] for a in cat_rows]
        labels = names + sorted(set(truth + ans) - set(names))
        out["category_accuracy"] = stats.category_accuracy(truth, ans, names)
        out["category_overall"] = float(np.mean([t == a for t, a in zip(truth, ans)]))
        out["category_labels"] = labels
        out["category_confusion"] = stats.confusion_matrix(truth, ans, labels).tolist()
    return out


def summarise_review(answers: list[dict], sessions: list[dict]) -> dict:
    """Accuracy per rater and overall with exact binomial tests against 50 %, the confusion matrix, and
    agreement (Fleiss' kappa; Cohen's too with exactly two raters) on cases every rater answered."""
    from echogen.teaching.db import rater_label

    who = {s["id"]: rater_label(s) for s in sessions}
    rows = [a for a in answers if a["answer_label"] and a["truth_label"]]
    out = {"n": len(rows), "raters": {}}
    if not rows:
        return out
    correct = sum(a["answer_label"] == a["truth_label"] for a in rows)
    out |= {"correct": correct, "accuracy": correct / len(rows), "p_value": stats.binomial_test(correct, len(rows))}
    by_rater = defaultdict(list)
    for a in rows:
        by_rater[who.get(a["session"], a["rater"] or a["session"])].append(a)
    for r, rs in sorted(by_rater.items()):
        k = sum(a["answer_label"] == a["truth_label"] for a in rs)
        conf = [a["confidence"] for a in rs if a["confidence"] is not None]
        out["raters"][r] = {"n": len(rs), "correct": k, "accuracy": k / len(rs),
                            "p_value": stats.binomial_test(k, len(rs)),
                            "mean_confidence": float(np.mean(conf)) if conf else None}
    cm = stats.confusion_matrix([a["truth_label"] for a in rows], [a["answer_label"] for a in rows], list(LABELS))
    out["confusion"] = {"labels": list(LABELS), "counts": cm.tolist()}      # rows truth, columns answer
    # agreement: each rater's last answer per case, on the cases every rater answered
    per = defaultdict(dict)
    for r, rs in by_rater.items():
        for a in rs:
            per[r][a["case_id"]] = a["answer_label"]
    raters = sorted(per)
    if len(raters) >= 2:
        common = sorted(set.intersection(*(set(per[r]) for r in raters)))
        out["agreement"] = {"raters": len(raters), "cases": len(common)}
        if common:
            table = [[sum(per[r][c] == lab for r in raters) for lab in LABELS] for c in common]
            out["agreement"]["fleiss_kappa"] = stats.fleiss_kappa(table)
            if len(raters) == 2:
                out["agreement"]["cohen_kappa"] = stats.cohen_kappa([per[raters[0]][c] for c in common],
                                                                    [per[raters[1]][c] for c in common], list(LABELS))
    return out


def _f(x, fmt=".1f") -> str:
    return "-" if x is None else format(x, fmt)


def format_trainer(s: dict, title: str = "EF trainer") -> str:
    lines = [f"{title}: {plural(s['n'], 'answer')}"]
    if s.get("n_ef"):
        ba = s["bland_altman"]
        call = "over-calls" if s["bias"] > 0 else "under-calls" if s["bias"] < 0 else "neither over- nor under-calls"
        loa = (f"limits of agreement {ba['loa_low']:+.1f} to {ba['loa_high']:+.1f} %" if ba["n"] > 1 else
               "limits of agreement n/a (one answer)")
        lines += [f"  EF: MAE {s['mae']:.1f} %, bias {s['bias']:+.1f} % ({call} EF), {loa} (n={ba['n']})"]
    if s.get("n_category"):
        lines.append(f"  categories ({s['categories']}): {s['category_overall']:.0%} correct (n={s['n_category']})")
        for name, v in s["category_accuracy"].items():
            if v["n"]:
                lines.append(f"    {name:<22} {v['correct']}/{v['n']} ({v['accuracy']:.0%})")
    return "\n".join(lines)


def format_review(s: dict, title: str = "Blinded review") -> str:
    if not s.get("n"):
        return f"{title}: no answers"
    lines = [f"{title}: {s['n']} answers, {s['correct']} correct ({s['accuracy']:.1%}), "
             f"exact binomial test vs 50 %: p = {s['p_value']:.4g}"]
    for r, v in s["raters"].items():
        lines.append(f"  {r:<24} {v['correct']}/{v['n']} ({v['accuracy']:.0%}), p = {v['p_value']:.3g}, "
                     f"mean confidence {_f(v['mean_confidence'])}")
    (rr, rg), (gr, gg) = s["confusion"]["counts"]
    lines += ["  confusion (rows truth, columns answer):", "                  real  generated",
              f"    real       {rr:>7} {rg:>10}", f"    generated  {gr:>7} {gg:>10}"]
    ag = s.get("agreement")
    if ag:
        k = f"Fleiss' kappa {_f(ag.get('fleiss_kappa'), '.3f')}"
        if "cohen_kappa" in ag:
            k += f", Cohen's kappa {_f(ag['cohen_kappa'], '.3f')}"
        lines.append(f"  agreement of {ag['raters']} raters on {ag['cases']} common cases: {k}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ tables for the app
def trainer_rows(s: dict) -> tuple[list[str], list[list]]:
    """(headers, rows) of a trainer summary: one row per measure, then one per true category."""
    rows = [["answers", s["n"], ""]]
    if s.get("n_ef"):
        ba = s["bland_altman"]
        rows += [["EF: mean absolute error (%)", round(s["mae"], 1), f"n={ba['n']}"],
                 ["EF: bias, you - truth (%)", round(s["bias"], 1),
                  "over-calls" if s["bias"] > 0 else "under-calls" if s["bias"] < 0 else ""],
                 ["EF: 95 % limits of agreement (%)",
                  f"{ba['loa_low']:+.1f} to {ba['loa_high']:+.1f}" if ba["n"] > 1 else "n/a",
                  "" if ba["n"] > 1 else "needs two or more answers"]]
    if s.get("n_category"):
        rows.append(["category: correct", f"{s['category_overall']:.0%}", f"n={s['n_category']}"])
        for name, v in s["category_accuracy"].items():
            if v["n"]:
                rows.append([f"  true {name}", f"{v['correct']}/{v['n']}", f"{v['accuracy']:.0%}"])
    return ["measure", "value", "note"], rows


def review_rows(s: dict) -> tuple[list[str], list[list]]:
    """(headers, rows): one row per rater, then all raters, then the confusion counts and agreement."""
    head = ["rater", "answers", "correct", "accuracy", "p (binomial vs 50 %)", "mean confidence"]
    if not s.get("n"):
        return head, []
    rows = [[r, v["n"], v["correct"], f"{v['accuracy']:.0%}", f"{v['p_value']:.3g}", _f(v["mean_confidence"])]
            for r, v in s["raters"].items()]
    rows.append(["all raters", s["n"], s["correct"], f"{s['accuracy']:.1%}", f"{s['p_value']:.4g}", ""])
    (rr, rg), (gr, gg) = s["confusion"]["counts"]
    rows += [["real clips answered real / generated", rr + rg, rr, f"{rg} called generated", "", ""],
             ["generated clips answered generated / real", gr + gg, gg, f"{gr} called real", "", ""]]
    ag = s.get("agreement")
    if ag:
        k = f"Fleiss {_f(ag.get('fleiss_kappa'), '.3f')}"
        if "cohen_kappa" in ag:
            k += f", Cohen {_f(ag['cohen_kappa'], '.3f')}"
        rows.append([f"agreement ({ag['raters']} raters)", ag["cases"], "", k, "", ""])
    return head, rows
