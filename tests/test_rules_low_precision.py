"""MP-12's rule and the recipe outcomes on small hand-made tables: every word they can return."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from precisionlab.study.rules import low_precision as rules

NOISE = [0.0, 0.004, -0.003]
WORKING = "16-true, eps 1e-4"


def runs_table(shift: dict[str, float], seeds: int = 3, nan: str = "",
               spread: float = 0.001) -> pd.DataFrame:
    """bf16-mixed at 2.0 + seed noise, each recipe shifted by `shift` (plus `spread` * seed);
    the recipe named `nan` gets NaN losses."""
    rows = []
    for s in range(seeds):
        rows.append({"seed": s, "recipe": "bf16-mixed", "val_loss": 2.0 + NOISE[s]})
        for r, d in shift.items():
            v = math.nan if r == nan else 2.0 + NOISE[s] + d + spread * s
            rows.append({"seed": s, "recipe": r, "val_loss": v})
    return pd.DataFrame(rows)


def test_supported_when_every_naive_pure_recipe_matches():
    f = rules.mp12(runs_table({"bf16-true": 0.01, "16-true": -0.01, "bf16-kahan": 0.0}))
    assert f.verdict == "supported" and f.claim == "MP-12" and f.evidence == "tbl-mp12"
    assert "bf16-true matches" in f.reason and "16-true matches" in f.reason


def test_supported_when_fp16_trains_with_an_eps_it_holds_and_the_naive_recipe_says_why_not():
    f = rules.mp12(runs_table({"bf16-true": 0.0, "16-true": 0.0, WORKING: 0.01},
                              nan="16-true"))
    assert f.verdict == "supported"
    first = f.reason.split("; ")[0]  # the clause the front page quotes
    assert (f"pure fp16 trains as '{WORKING}' (matches) but not as '16-true' (diverged: its "
            "Adam eps rounds to 0 in fp16)") in first
    assert "pure bf16 trains as 'bf16-true' (matches)" in first
    assert ("16-true diverged (3 of 3 seeds not finite or > 0.69 nats above): Adam's eps 1e-08 "
            "rounds to 0 in fp16") in f.reason and f"{WORKING} matches" in f.reason


def test_nuanced_when_only_the_naive_fp16_recipe_ran_and_diverged():
    f = rules.mp12(runs_table({"bf16-true": 0.0, "16-true": 0.0}, nan="16-true"))
    assert f.verdict == "nuanced"
    assert ("pure fp16 is not shown to train: '16-true' (diverged: its Adam eps rounds to 0 in "
            "fp16) (no recipe with an eps this format holds was run)") in f.reason


def test_nuanced_when_the_working_fp16_recipe_also_fails():
    f = rules.mp12(runs_table({"bf16-true": 0.0, "16-true": 0.0, WORKING: 0.3},
                              nan="16-true"))
    assert f.verdict == "nuanced"
    assert f"'{WORKING}' (worse)" in f.reason.split("; ")[0]


def test_eps_lost_is_the_naive_fp16_recipe_only():
    assert rules.eps_lost("16-true")["format"] == "fp16"
    assert all(rules.eps_lost(r) is None for r in
               (WORKING, "bf16-true", "bf16-mixed", "bf16-kahan", "mxfp4", "unknown"))
    assert WORKING in rules.PLAIN["fp16"]


def test_nuanced_when_naive_fails_but_stochastic_rounding_matches():
    f = rules.mp12(runs_table({"bf16-true": 0.3, "16-true": 0.0, "bf16-stochastic": 0.0},
                              nan="16-true"))
    assert f.verdict == "nuanced"
    assert "16-true diverged (3 of 3 seeds not finite" in f.reason
    assert "bf16-true worse" in f.reason and "bf16-stochastic matches" in f.reason


def test_nuanced_when_one_naive_recipe_matches_and_the_other_diverges():
    f = rules.mp12(runs_table({"bf16-true": 0.0, "16-true": 0.0}, nan="16-true"))
    assert f.verdict == "nuanced"


def test_refuted_when_no_recipe_without_master_weights_matches():
    f = rules.mp12(runs_table({"bf16-true": 0.3, "16-true": 2.0, "bf16-kahan": 0.2}))
    assert f.verdict == "refuted"
    assert "16-true diverged" in f.reason and "bf16-kahan worse" in f.reason
    assert ("bf16 with a corrected update is not shown to train: 'bf16-kahan' (worse)"
            in f.reason.split("; ")[0])


def test_not_testable_with_one_seed_or_a_diverged_reference():
    assert rules.mp12(runs_table({"bf16-true": 0.0}, seeds=1)).verdict == "not testable here"
    t = runs_table({"bf16-true": 0.0})
    t.loc[t.recipe == "bf16-mixed", "val_loss"] = math.nan
    f = rules.mp12(t)
    assert f.verdict == "not testable here" and "diverged" in f.reason


def test_bad_tables_raise_naming_what_is_missing():
    with pytest.raises(ValueError, match="bf16-mixed"):
        rules.mp12(runs_table({"bf16-true": 0.0}).query("recipe != 'bf16-mixed'"))
    with pytest.raises(ValueError, match="without master weights"):
        rules.mp12(runs_table({"fp8-current": 0.0}))


def test_classify_reaches_every_outcome():
    t = runs_table({"a": 0.0, "b": 0.2, "c": -0.2, "d": 0.0, "e": 1.0, "f": 0.0}, nan="f")
    wide = runs_table({"d": 0.0}, spread=0.05)  # interval crosses the margin and 0
    assert rules.classify(t, "a")[0] == "matches"
    assert rules.classify(t, "b")[0] == "worse"
    assert rules.classify(t, "c")[0] == "better"
    assert rules.classify(wide, "d")[0] == "inconclusive"
    assert rules.classify(t, "e")[0] == "diverged"  # finite but > ln 2 above its pair
    assert rules.classify(t, "f")[0] == "diverged"  # not finite
    assert set(rules.OUTCOMES) == {"matches", "worse", "better", "inconclusive", "diverged"}


def test_outcomes_and_matching_list_recipes_in_order():
    t = runs_table({"fp8-current": 0.0, "mxfp4": 1.5, "mxfp8": 0.01})
    o = rules.outcomes(t)
    assert list(o.recipe) == ["fp8-current", "mxfp4", "mxfp8"]
    assert list(o.outcome) == ["matches", "diverged", "matches"]
    assert list(o.diverged_runs) == [0, 3, 0] and (o.n == 3).all()
    assert o.loc[0, "low"] < o.loc[0, "mean"] < o.loc[0, "high"]
    assert rules.matching(t, ["mxfp4", "mxfp8", "fp8-rowwise"]) == ["mxfp8"]


def test_margin_is_chapter_12s():
    from precisionlab.study.rules import language_models

    assert rules.LOSS_MARGIN == language_models.LOSS_MARGIN
    assert rules.FAR_ABOVE == pytest.approx(math.log(2))


def chapter02(word: str) -> pd.DataFrame:
    """Chapter 02's pure-run finals whose four arms give `word` under rules.mixed.mp12."""
    from test_rules_mixed import arms, pure  # the same synthetic finals chapter 02 tests with

    good = {(o, p): 0.9 for o in ("sgd", "adam") for p in ("16-true", "bf16-true")}
    acc = {"supported": good, "refuted": dict.fromkeys(good, 0.5),
           "nuanced": {**good, ("adam", "16-true"): 0.5},
           "working": {**good, ("adam", "16-true"): 0.1, ("adam", WORKING): 0.9}}[word]
    # test_examples: one example's share of accuracy is the resolution a zero-spread arm needs
    return pure(arms(acc), diverged={("adam", "16-true")} if word == "working" else set()
                ).assign(test_examples=2000)


@pytest.mark.parametrize("lm, ch02, verdict", [
    ({"bf16-true": 0.0, "16-true": 0.0}, "supported", "supported"),
    ({"bf16-true": 0.0, "16-true": 0.0}, "nuanced", "nuanced"),  # an MLP arm fails
    ({"bf16-true": 0.3, "16-true": 2.0, "bf16-kahan": 0.2}, "refuted", "refuted"),
    ({"bf16-true": 0.3, "16-true": 2.0, "bf16-kahan": 0.2}, "supported", "nuanced"),
    ({"bf16-true": 0.3, "bf16-kahan": 0.0}, "refuted", "nuanced"),  # Kahan rescues the LM
    # chapter 02's naive fp16 Adam diverges, its eps-1e-4 twin trains: a way exists there too
    ({"bf16-true": 0.0, "16-true": 0.0, WORKING: 0.0}, "working", "supported"),
])
def test_chapter_02s_pure_runs_join_the_language_model(lm, ch02, verdict):
    f = rules.mp12(runs_table(lm, nan="16-true" if WORKING in lm else ""), chapter02(ch02))
    assert f.verdict == verdict
    assert "Chapter 02's MLPs" in f.reason and "fp16 SGD" in f.reason
    assert f"chapter 02's MLPs: {rules.mixed.mp12(chapter02(ch02)).verdict}" in \
        f.reason.split("; ")[0]
