"""The chapter-9 rules reach every verdict they can return, on small hand-built tables."""

from __future__ import annotations

import pandas as pd
import pytest

from precisionlab.study.rules import articles as R


def grid(points: list[tuple[float, float, float]], article=None, reference_off: bool = False
         ) -> pd.DataFrame:
    """A gradient grid with exact true gradients; `article` maps (x, y, theta) to the formula
    under test (default: the article's -2 (x - theta x))."""
    article = article or (lambda x, y, t: -2 * (x - t * x))
    rows = []
    for x, y, t in points:
        true = -2 * x * (y - t * x)
        rows.append({"x": x, "y": y, "theta": t, "autograd": true,
                     "closed_form": true + (1.0 if reference_off else 0.0),
                     "article": article(x, y, t),
                     "special": "x = 0" if x == 0 else
                     ("y = 1 + theta (x - 1)" if y == 1 + t * (x - 1) else "")})
    return pd.DataFrame(rows)


GENERIC = [(2.0, 3.0, 0.5), (-1.0, 2.0, 2.0), (3.0, -1.0, 1.0), (0.0, 1.0, 1.0)]


def test_mp19_refuted_when_the_formula_meets_the_gradient_only_at_special_points():
    found = R.mp19(grid(GENERIC))
    assert found.verdict == "refuted"
    assert "1 of 4" in found.reason and "all 1 where x = 0" in found.reason


def test_mp19_supported_when_the_formula_is_the_gradient():
    assert R.mp19(grid(GENERIC, article=lambda x, y, t: -2 * x * (y - t * x))).verdict == \
        "supported"


def test_mp19_agreement_allows_rounding_but_not_more():
    g = grid(GENERIC, article=lambda x, y, t: -2 * x * (y - t * x) * (1 + 1e-15))
    assert R.agreement(g).all() and R.mp19(g).verdict == "supported"
    g = grid(GENERIC, article=lambda x, y, t: -2 * x * (y - t * x) * (1 + 1e-9))
    assert not R.agreement(g)[g["autograd"] != 0].any()


def test_mp19_nuanced_when_right_at_most_points_but_not_all():
    wrong_at_one = lambda x, y, t: -2 * x * (y - t * x) + (1.0 if x == 3.0 else 0.0)  # noqa: E731
    assert R.mp19(grid(GENERIC, article=wrong_at_one)).verdict == "nuanced"


def test_mp19_not_testable_when_the_reference_disagrees_with_autograd():
    assert R.mp19(grid(GENERIC, reference_off=True)).verdict == "not testable here"


def test_mp19_rejects_an_empty_grid():
    with pytest.raises(ValueError, match="grid"):
        R.mp19(grid([]))


def keras_table(*rows: tuple[str, str, str, str]) -> pd.DataFrame:
    """Cases (kind, compute dtype, variable dtype, outcome) as `keras_examples` returns them."""
    return pd.DataFrame([{"case": f"case {i}", "kind": kind, "compute dtype": compute,
                          "variable dtype": variable, "outcome": outcome}
                         for i, (kind, compute, variable, outcome) in enumerate(rows)])


FIX = ("fix", "float16", "float32", "trained")


def test_mp23_refuted_when_no_example_or_translation_trains_in_mixed_precision():
    table = keras_table(("as written", "float32", "float32", "trained"),
                        ("as written", "float32", "float32", "AttributeError"),
                        ("translated", "float32", "float32", "trained"), FIX)
    found = R.mp23(table)
    assert found.verdict == "refuted" and "float16 compute with float32 variables" in found.reason


def test_mp23_supported_when_every_example_trains_in_mixed_precision():
    table = keras_table(("as written", "float16", "float32", "trained"),
                        ("as written", "bfloat16", "float32", "trained"), FIX)
    assert R.mp23(table).verdict == "supported"


def test_mp23_nuanced_when_only_a_translation_trains_in_mixed_precision():
    table = keras_table(("as written", "float32", "float32", "AttributeError"),
                        ("translated", "float16", "float32", "trained"), FIX)
    assert R.mp23(table).verdict == "nuanced"


def test_mp23_a_16_bit_layer_that_failed_to_train_is_not_mixed_precision_training():
    table = keras_table(("as written", "float16", "float32", "ValueError"), FIX)
    assert R.mp23(table).verdict == "refuted"


def test_mp23_not_testable_when_no_fix_trains_in_mixed_precision():
    table = keras_table(("as written", "float32", "float32", "trained"),
                        ("fix", "float16", "float32", "RuntimeError"))
    assert R.mp23(table).verdict == "not testable here"


def test_mp23_needs_the_articles_examples():
    with pytest.raises(ValueError, match="as written"):
        R.mp23(keras_table(FIX))


def lines(*equal_identical: tuple[bool, bool]) -> pd.DataFrame:
    return pd.DataFrame([{"step": f"line {i + 1} = line {i + 2}", "equal": e, "identical": s}
                         for i, (e, s) in enumerate(equal_identical)])


def symbols(*defined: bool) -> pd.DataFrame:
    """theta (given, used) and one derived symbol per entry of `defined`, each used."""
    rows = [{"symbol": "theta", "kind": "given", "defined": True, "used in the formula": True}]
    rows += [{"symbol": f"s{i}", "kind": "derived", "defined": d, "used in the formula": True}
             for i, d in enumerate(defined)]
    return pd.DataFrame(rows)


def test_mp25_not_testable_when_the_lines_are_identical_and_the_input_undefined():
    found = R.mp25(lines((True, True)), symbols(False, True))
    assert found.verdict == "not testable here"
    assert "1 of 1" in found.reason and "none of s0" in found.reason


def test_mp25_refuted_when_a_step_does_not_hold():
    assert R.mp25(lines((True, True), (False, False)), symbols(False)).verdict == "refuted"


def test_mp25_nuanced_when_the_formula_holds_and_every_symbol_is_defined():
    assert R.mp25(lines((True, False)), symbols(True)).verdict == "nuanced"


def test_mp25_ignores_symbols_the_formula_does_not_use():
    s = symbols(True).assign(**{"used in the formula": [True, True]})
    s = pd.concat([s, pd.DataFrame([{"symbol": "z", "kind": "derived", "defined": False,
                                     "used in the formula": False}])])
    assert R.mp25(lines((True, True)), s).verdict == "nuanced"


def test_mp23_reason_names_each_case_once_across_seeds():
    one = keras_table(("as written", "float32", "float32", "trained"), FIX)
    found = R.mp23(pd.concat([one, one, one], ignore_index=True))
    assert found.verdict == "refuted" and found.reason.count("case 0:") == 1


# ------------------------------------------------------------------------------------ LLM-7 ---

def lstm_tables(ran: list[bool], unlabelled: str = "ValueError", last: float = 0.1
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    forward = pd.DataFrame({"batch_size": list(range(1, len(ran) + 1)),
                            "outcome": ["ran" if r else "ValueError" for r in ran]})
    common = {"error": "", "loss_terms_per_step": 1.0, "parameter_dtypes": "float32"}
    training = pd.DataFrame([
        {"probe": "fixed forward, labelled batches", "outcome": "trained", "steps": 30,
         "first_loss": 0.7, "last_loss": last, **common},
        {"probe": "fixed forward, unlabelled batches", "outcome": unlabelled, "steps": 0,
         "first_loss": float("nan"), "last_loss": float("nan"), **common}])
    return forward, training


def test_llm7_refuted_for_a_plain_supervised_loop():
    f = R.llm7(*lstm_tables([False, False, False]))
    assert f.verdict == "refuted" and "3 of 3 batch sizes" in f.reason
    assert "plain supervised" in f.reason


def test_llm7_supported_when_hybrid_and_the_forward_runs():
    assert R.llm7(*lstm_tables([True, True], unlabelled="trained")).verdict == "supported"


def test_llm7_nuanced_when_hybrid_but_the_forward_fails_somewhere():
    f = R.llm7(*lstm_tables([True, False], unlabelled="trained"))
    assert f.verdict == "nuanced" and "1 of 2" in f.reason


def test_llm7_not_testable_when_the_fixed_version_does_not_learn():
    f = R.llm7(*lstm_tables([False], last=0.9))
    assert f.verdict == "not testable here" and "did not train" in f.reason


def test_llm7_needs_both_tables_and_probes():
    forward, training = lstm_tables([False])
    with pytest.raises(ValueError, match="both tables"):
        R.llm7(forward.iloc[:0], training)
    with pytest.raises(ValueError, match="unlabelled"):
        R.llm7(forward, training.iloc[:1])
