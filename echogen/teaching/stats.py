"""Statistics of trainer and review sessions: EF categories, MAE / bias, Bland-Altman, an exact
binomial test, confusion matrices, Cohen's and Fleiss' kappa. Plain numpy + fractions, no scipy.

EF categories default to the 2021 ESC heart-failure guideline (McDonagh et al., Eur Heart J
2021;42:3599-3726, doi:10.1093/eurheartj/ehab368, Table 3): reduced LVEF <= 40 %, mildly reduced
41-49 %, preserved >= 50 %. The ASE/EACVI 2015 chamber-quantification grades (Lang et al., J Am Soc
Echocardiogr 2015;28:1-39.e14, doi:10.1016/j.echo.2014.10.003, Table 4) are available as well.
The guidelines give integer percentages; for a continuous EF the gaps are closed at the boundary
named in the spec (e.g. 40.5 % is "mildly reduced").
"""
from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


# ------------------------------------------------------------------------------------- categories
@dataclass(frozen=True)
class Category:
    name: str
    upper: float | None      # EF < upper (or <= when inclusive); None for the last category
    inclusive: bool = False


SCHEMES = {
    # 2021 ESC HF guideline, Table 3
    "esc2021": "reduced<=40, mildly reduced<50, preserved",
    # ASE/EACVI 2015 chamber quantification, Table 4 (LVEF by sex)
    "ase2015-male": "severely abnormal<30, moderately abnormal<=40, mildly abnormal<52, normal",
    "ase2015-female": "severely abnormal<30, moderately abnormal<=40, mildly abnormal<54, normal",
}
DEFAULT_SCHEME = "esc2021"

_PART = re.compile(r"^\s*(.+?)\s*(<=|<)\s*([0-9.]+)\s*$")


def parse_categories(spec: str | None = None) -> list[Category]:
    """A scheme name (see SCHEMES) or a spec "name<=40, name<50, name": ordered, increasing bounds;
    the last part has no bound."""
    spec = SCHEMES.get(spec or DEFAULT_SCHEME, spec)
    parts = [p for p in spec.split(",") if p.strip()]
    if len(parts) < 2:
        raise ValueError(f"EF categories '{spec}': need at least two, e.g. 'reduced<=40, preserved'")
    cats, last = [], -math.inf
    for i, p in enumerate(parts):
        m = _PART.match(p)
        if i == len(parts) - 1:
            if m:
                raise ValueError(f"EF categories '{spec}': the last category takes no bound ('{p.strip()}')")
            cats.append(Category(p.strip(), None))
            continue
        if not m:
            raise ValueError(f"EF categories '{spec}': '{p.strip()}' should read NAME<=X or NAME<X")
        upper = float(m.group(3))
        if upper <= last:
            raise ValueError(f"EF categories '{spec}': bounds must increase")
        last = upper
        cats.append(Category(m.group(1), upper, m.group(2) == "<="))
    names = [c.name for c in cats]
    if len(set(names)) != len(names):
        raise ValueError(f"EF categories '{spec}': names repeat")
    return cats


def format_categories(cats: list[Category]) -> str:
    return ", ".join(c.name if c.upper is None else f"{c.name}{'<=' if c.inclusive else '<'}{c.upper:g}"
                     for c in cats)


def categorise(ef: float, cats: list[Category]) -> str:
    for c in cats:
        if c.upper is None or ef < c.upper or (c.inclusive and ef == c.upper):
            return c.name
    return cats[-1].name


# ------------------------------------------------------------------------------------ EF agreement
def mae(truth, answer) -> float:
    t, a = _pair(truth, answer)
    return float(np.mean(np.abs(a - t)))


def bias(truth, answer) -> float:
    """Mean of answer - truth: > 0 means the rater over-calls EF."""
    t, a = _pair(truth, answer)
    return float(np.mean(a - t))


def bland_altman(truth, answer) -> dict:
    """Bland & Altman (Lancet 1986): differences answer - truth against the pair means; mean difference
    and 95 % limits of agreement mean +- 1.96 SD (sample SD, ddof 1). With one pair there is no SD: sd_diff and
    the limits are None (not a zero-width interval)."""
    t, a = _pair(truth, answer)
    d = a - t
    md = float(np.mean(d))
    sd = float(np.std(d, ddof=1)) if len(d) > 1 else None
    return {"n": int(len(d)), "mean_diff": md, "sd_diff": sd, "loa_low": None if sd is None else md - 1.96 * sd,
            "loa_high": None if sd is None else md + 1.96 * sd, "means": ((a + t) / 2).tolist(), "diffs": d.tolist()}


def plot_bland_altman(truth, answer, title: str = "Bland-Altman: your EF - true EF"):
    """A matplotlib Figure of the Bland-Altman plot (Agg backend: no display needed)."""
    import matplotlib
    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ba = bland_altman(truth, answer)
    fig = Figure(figsize=(5.5, 4.0), dpi=100)
    ax = fig.add_subplot(111)
    ax.scatter(ba["means"], ba["diffs"], s=22, alpha=0.8)
    lines = [(ba["mean_diff"], "-", f"bias {ba['mean_diff']:+.1f}")]
    if ba["sd_diff"] is not None:                                  # no limits of agreement from one pair
        lines += [(ba["loa_low"], "--", f"-1.96 SD {ba['loa_low']:+.1f}"),
                  (ba["loa_high"], "--", f"+1.96 SD {ba['loa_high']:+.1f}")]
    for y, style, label in lines:
        ax.axhline(y, linestyle=style, color="k", linewidth=1)
        ax.annotate(label, (1.0, y), xycoords=("axes fraction", "data"), ha="right", va="bottom", fontsize=8)
    ax.axhline(0, color="0.7", linewidth=0.8)
    ax.set_xlabel("mean of your EF and the true EF (%)")
    ax.set_ylabel("your EF - true EF (%)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def category_accuracy(truth_cats, answer_cats, names) -> dict:
    """Per true category: {name: {"n", "correct", "accuracy"}} (accuracy None when n = 0)."""
    out = {n: {"n": 0, "correct": 0, "accuracy": None} for n in names}
    for t, a in zip(truth_cats, answer_cats):
        if t not in out:
            out[t] = {"n": 0, "correct": 0, "accuracy": None}
        out[t]["n"] += 1
        out[t]["correct"] += int(t == a)
    for v in out.values():
        v["accuracy"] = v["correct"] / v["n"] if v["n"] else None
    return out


# ------------------------------------------------------------------------- exact binomial test
def binomial_pmf(k: int, n: int, p) -> Fraction:
    p = Fraction(p).limit_denominator(10**9) if not isinstance(p, Fraction) else p
    return math.comb(n, k) * p**k * (1 - p) ** (n - k)


def binomial_test(k: int, n: int, p=Fraction(1, 2)) -> float:
    """Exact two-sided p-value of k successes in n trials under success probability p: the summed
    probability of every outcome no more likely than the one observed (as R's binom.test and
    scipy.stats.binomtest). Exact rational arithmetic, rounded to float at the end."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"binomial test needs 0 <= k <= n and n >= 1 (got k={k}, n={n})")
    p = Fraction(p).limit_denominator(10**9) if not isinstance(p, Fraction) else p
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    pmf = [binomial_pmf(i, n, p) for i in range(n + 1)]
    obs = pmf[k]
    return float(min(Fraction(1), sum(x for x in pmf if x <= obs)))


# ------------------------------------------------------------------------- agreement / confusion
def confusion_matrix(truth, answer, labels) -> np.ndarray:
    """counts[i, j] = number of cases with truth labels[i] answered labels[j]."""
    idx = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), np.int64)
    for t, a in zip(truth, answer):
        m[idx[t], idx[a]] += 1
    return m


def cohen_kappa(r1, r2, labels=None) -> float:
    """Cohen (1960): (p_o - p_e) / (1 - p_e) for two raters over the same cases."""
    if len(r1) != len(r2) or not len(r1):
        raise ValueError("Cohen's kappa needs two equally long, non-empty rating lists")
    labels = labels or sorted(set(r1) | set(r2))
    m = confusion_matrix(r1, r2, labels).astype(np.float64)
    n = m.sum()
    po = np.trace(m) / n
    pe = float((m.sum(1) / n) @ (m.sum(0) / n))
    return float("nan") if pe == 1 else float((po - pe) / (1 - pe))


def fleiss_kappa(counts) -> float:
    """Fleiss (1971): counts[i, j] = raters who put subject i in category j; every subject must have
    the same number of raters n >= 2."""
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] < 1:
        raise ValueError("Fleiss' kappa needs a (subjects, categories) table of counts")
    n = c.sum(1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise ValueError("Fleiss' kappa needs the same number (>= 2) of ratings for every subject")
    n = n[0]
    p_j = c.sum(0) / c.sum()                                   # category proportions
    P_i = (np.sum(c * c, 1) - n) / (n * (n - 1))                # agreement per subject
    P_bar, Pe_bar = P_i.mean(), float(np.sum(p_j * p_j))
    return float("nan") if Pe_bar == 1 else float((P_bar - Pe_bar) / (1 - Pe_bar))


# ---------------------------------------------------------------------------------------- helpers
def _pair(truth, answer) -> tuple[np.ndarray, np.ndarray]:
    t, a = np.asarray(truth, np.float64), np.asarray(answer, np.float64)
    if t.shape != a.shape or t.ndim != 1 or not len(t):
        raise ValueError("need two equally long, non-empty lists of numbers")
    return t, a


def write_csv(path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """Rows (dicts) -> CSV with a header; columns default to the union of keys in first-seen order."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return path
