"""Statistics of the teaching modes against hand-computed and published values."""
import math

import numpy as np
import pytest

from echogen.teaching import stats
from echogen.teaching.summary import format_review, format_trainer, summarise_review, summarise_trainer


def test_mae_bias_bland_altman():
    truth, ans = [30, 50, 60, 40], [35, 45, 70, 40]            # diffs +5 -5 +10 0
    assert stats.mae(truth, ans) == pytest.approx(5.0)
    assert stats.bias(truth, ans) == pytest.approx(2.5)
    ba = stats.bland_altman(truth, ans)
    sd = math.sqrt(((5 - 2.5) ** 2 + (-5 - 2.5) ** 2 + (10 - 2.5) ** 2 + (0 - 2.5) ** 2) / 3)
    assert ba["mean_diff"] == pytest.approx(2.5) and ba["sd_diff"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(2.5 - 1.96 * sd) and ba["loa_high"] == pytest.approx(2.5 + 1.96 * sd)
    assert ba["means"] == [32.5, 47.5, 65.0, 40.0]
    fig = stats.plot_bland_altman(truth, ans)
    assert len(fig.axes) == 1
    one = stats.bland_altman([40.0], [50.0])                     # one pair: no SD, no limits (JSON null)
    assert one["mean_diff"] == 10.0 and one["sd_diff"] is None and one["loa_low"] is None and one["loa_high"] is None
    assert len(stats.plot_bland_altman([40.0], [50.0]).axes) == 1


def test_binomial_exact():
    # two-sided, hand-computed: P(X >= 8 | n=10) = (45 + 10 + 1) / 1024, doubled by symmetry
    assert stats.binomial_test(8, 10) == pytest.approx(112 / 1024, abs=1e-15)
    assert stats.binomial_test(2, 10) == pytest.approx(112 / 1024, abs=1e-15)
    assert stats.binomial_test(5, 5) == pytest.approx(2 / 32, abs=1e-15)
    assert stats.binomial_test(5, 10) == 1.0
    # sum_{k<=7} C(20, k) = 137980; R: binom.test(7, 20)$p.value = 0.2632
    assert stats.binomial_test(7, 20) == pytest.approx(2 * 137980 / 2**20, abs=1e-15)
    # p != 1/2: n=3, p=0.25, k=3 -> outcomes no likelier than 1/64: only k=3 itself
    assert stats.binomial_test(3, 3, 0.25) == pytest.approx(1 / 64)
    with pytest.raises(ValueError):
        stats.binomial_test(4, 3)


def test_cohen_kappa_wikipedia_example():
    # Wikipedia "Cohen's kappa": 50 proposals, yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa(a, a) == pytest.approx(1.0)


def test_fleiss_kappa_wikipedia_example():
    # Wikipedia "Fleiss' kappa" worked example: 10 subjects, 14 raters, 5 categories;
    # P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    assert stats.fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(ValueError):
        stats.fleiss_kappa([[1, 1], [2, 1]])


def test_categories_default_esc2021_and_custom():
    cats = stats.parse_categories()
    assert [c.name for c in cats] == ["reduced", "mildly reduced", "preserved"]
    assert [stats.categorise(e, cats) for e in (40, 40.5, 41, 49.9, 50, 75)] == \
        ["reduced", "mildly reduced", "mildly reduced", "mildly reduced", "preserved", "preserved"]
    ase = stats.parse_categories("ase2015-female")
    assert [stats.categorise(e, ase) for e in (29, 30, 40, 53, 54)] == \
        ["severely abnormal", "moderately abnormal", "moderately abnormal", "mildly abnormal", "normal"]
    custom = stats.parse_categories("low<35, high")
    assert stats.format_categories(custom) == "low<35, high"
    for bad in ("only", "a<50, b<40, c", "a<=40, b<50"):
        with pytest.raises(ValueError):
            stats.parse_categories(bad)


def test_confusion_and_category_accuracy():
    m = stats.confusion_matrix(["a", "a", "b"], ["a", "b", "b"], ["a", "b"])
    assert m.tolist() == [[1, 1], [0, 1]]
    acc = stats.category_accuracy(["a", "a", "b"], ["a", "b", "b"], ["a", "b", "c"])
    assert acc["a"] == {"n": 2, "correct": 1, "accuracy": 0.5} and acc["c"]["accuracy"] is None


def _row(session, case, **kw):
    base = dict(session=session, rater="", case_id=case, truth_ef=None, truth_category=None, truth_label=None,
                answer_ef=None, answer_category=None, answer_label=None, confidence=None)
    return base | kw


def test_summaries():
    rows = [_row("s", f"c{i}", truth_ef=t, answer_ef=a, answer_category=c)
            for i, (t, a, c) in enumerate([(30, 35, "reduced"), (55, 50, "preserved"), (45, 60, "preserved")])]
    s = summarise_trainer(rows)
    assert s["mae"] == pytest.approx(25 / 3) and s["bias"] == pytest.approx(5.0)
    assert s["category_overall"] == pytest.approx(2 / 3)
    assert s["category_accuracy"]["mildly reduced"]["correct"] == 0
    assert "over-calls" in format_trainer(s)
    sessions = [{"id": "s1", "rater": "ann"}, {"id": "s2", "rater": ""}]
    truth = ["real", "generated"] * 5
    r1 = [_row("s1", f"c{i}", truth_label=t, answer_label=t, confidence=4) for i, t in enumerate(truth)]
    r2 = [_row("s2", f"c{i}", truth_label=t, answer_label="real", confidence=2) for i, t in enumerate(truth)]
    s = summarise_review(r1 + r2, sessions)
    assert s["raters"]["ann"]["accuracy"] == 1.0
    assert s["raters"]["ann"]["p_value"] == pytest.approx(2 / 1024)
    assert s["raters"]["anonymous-s2"]["accuracy"] == 0.5
    assert s["confusion"]["counts"] == [[10, 0], [5, 5]]
    assert s["p_value"] == pytest.approx(stats.binomial_test(15, 20))
    assert s["agreement"]["cases"] == 10 and np.isfinite(s["agreement"]["cohen_kappa"])
    assert "binomial" in format_review(s)
