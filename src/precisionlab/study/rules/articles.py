"""Verdict rules of chapter 9 (the articles' code, run): MP-19, MP-23, MP-25 and LLM-7.

MP-19 (seed 001): for y = theta x under squared error the fp32 gradient is -2 (x - theta x).
Tested on `experiments.articles.gradient_grid`: the formula against fp64 autograd over a grid.

MP-23 (seeds 000, 001): their Keras examples train in mixed precision. Tested on
`experiments.articles.keras_examples`: each example as written (and in its closest Keras 3
translation) run for a few steps, with the dtypes its Dense layer computed and stored in.

MP-25 (seed 004): training minimizes a loss over an integer copy and a half-precision copy of
the input in parallel (their formula). Tested on `experiments.articles.formula_lines` and
`formula_symbols`: the formula, typed in our notation, checked with sympy.

LLM-7 (seed 003): their LSTM text classifier demonstrates hybrid (mixed-paradigm) training.
Tested on `experiments.articles.lstm_forward_as_written` (its forward at several batch sizes)
and `lstm_training` (its loop, forward fixed, fed labelled and unlabelled batches).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from precisionlab.study.claims import Finding, sig2

# Two fp64 evaluations of the same gradient differ by a few units of fp64's roundoff (1.1e-16)
# relative to their size; 1e-12 is four orders above that and far below any real difference.
ROUND_TOL = 1e-12
# A formula that is wrong on most of a grid spanning signs and sizes is a different function
# that meets the true one on a special set; right on most but not all, it is right with
# exceptions the claim does not state.
MAJORITY = 0.5
LOW_PRECISION = ("float16", "bfloat16")  # compute dtypes that make a Keras policy "mixed"


# ------------------------------------------------------------------------------------ MP-19 ---

def agreement(grid: pd.DataFrame, column: str = "article", reference: str = "autograd"
              ) -> pd.Series:
    """Per grid point: does `column` equal `reference` to within ROUND_TOL (relative to the larger
    of the two; two exact zeros agree)?"""
    a, r = grid[column].to_numpy(float), grid[reference].to_numpy(float)
    return pd.Series(np.abs(a - r) <= ROUND_TOL * np.maximum(np.abs(a), np.abs(r)),
                     index=grid.index, name="agrees")


def relative_error(grid: pd.DataFrame) -> pd.Series:
    """|article - autograd| / |autograd| per grid point (NaN where the true gradient is 0)."""
    ref = grid["autograd"].abs().replace(0.0, np.nan)
    return ((grid["article"] - grid["autograd"]).abs() / ref).rename("relative error")


def mp19(grid: pd.DataFrame, evidence: str = "tbl-mp19") -> Finding:
    """MP-19 from `gradient_grid` (x, y, theta, autograd, closed_form, article, special).

    not testable here: autograd and the closed form -2 x (y - theta x) disagree somewhere (the
    reference itself is in doubt); supported: the article's formula agrees with autograd at
    every grid point; refuted: it agrees at fewer than MAJORITY of the points (a different
    function, equal only on a special set); nuanced: it agrees at most points but not all."""
    if grid.empty:
        raise ValueError("grid: no grid points to judge")
    if not agreement(grid, "closed_form").all():
        bad = int((~agreement(grid, "closed_form")).sum())
        return Finding("MP-19", "not testable here",
                       f"autograd and -2 x (y - theta x) disagree at {bad} of {len(grid)} grid "
                       f"points: the reference gradient itself is in doubt", evidence)
    agrees = agreement(grid)
    n, k = len(grid), int(agrees.sum())
    special = grid["special"].astype(str) != ""
    rel = relative_error(grid)[~agrees].dropna()
    where = (f"all {k} where x = 0 or y = 1 + theta (x - 1)" if k and special[agrees].all()
             else f"{int((agrees & special).sum())} of them where x = 0 or y = 1 + theta (x - 1)")
    elsewhere = (f"; elsewhere its relative error was {sig2(rel.median())} (median) and "
                 f"{sig2(rel.min())} to {sig2(rel.max())}" if len(rel) else "")
    reason = (f"-2 (x - theta x) matched fp64 autograd's -2 x (y - theta x) at {k} of {n} grid "
              f"points ({where}){elsewhere}")
    if k == n:
        return Finding("MP-19", "supported", reason, evidence)
    if k / n < MAJORITY:
        return Finding("MP-19", "refuted", reason + ": a different function, not the gradient",
                       evidence)
    return Finding("MP-19", "nuanced", reason + ": right except on points the claim does not "
                   "exclude", evidence)


# ------------------------------------------------------------------------------------ MP-23 ---

def in_mixed_precision(table: pd.DataFrame) -> pd.Series:
    """Per case: it trained, its layer computed in a 16-bit float and kept float32 variables."""
    return ((table["outcome"] == "trained") & table["compute dtype"].isin(LOW_PRECISION)
            & (table["variable dtype"] == "float32")).rename("mixed precision")


def mp23(table: pd.DataFrame, evidence: str = "tbl-mp23") -> Finding:
    """MP-23 from `keras_examples` (case, kind, compute dtype, variable dtype, outcome).

    not testable here: no fix case trains in mixed precision (this Keras cannot show what the
    examples should have done); supported: every example as written trains in mixed precision;
    refuted: no example, as written or in its closest Keras 3 translation, does; nuanced:
    some do, or only their translations do."""
    mixed = in_mixed_precision(table)
    written, translated, fix = (table["kind"] == k for k in ("as written", "translated", "fix"))
    if not written.any():
        raise ValueError("table: no case of kind 'as written' (the articles' examples)")

    def says(rows: pd.Series) -> str:  # one entry per distinct case and result (seeds merged)
        cols = ["case", "outcome", "compute dtype", "variable dtype"]
        return "; ".join(
            f"{r['case']}: {r['outcome']}"
            + (f" in {r['compute dtype']} compute / {r['variable dtype']} variables"
               if r["outcome"] == "trained" else "")
            for _, r in table.loc[rows, cols].drop_duplicates().iterrows())

    fixed = table[fix & mixed]
    if fixed.empty:
        return Finding("MP-23", "not testable here",
                       f"no fix case trained in mixed precision ({says(fix) or 'none run'}): "
                       f"Keras here cannot show what the examples should do", evidence)
    reason = (f"as written: {says(written)}; translated: {says(translated) or 'none'}; "
              f"with the policy set before the model: {len(fixed)} of {int(fix.sum())} fix runs "
              f"trained in {', '.join(sorted(fixed['compute dtype'].unique()))} compute with "
              f"float32 variables (mixed, not single precision)")
    if mixed[written].all():
        return Finding("MP-23", "supported", reason, evidence)
    if not mixed[written | translated].any():
        return Finding("MP-23", "refuted", reason, evidence)
    return Finding("MP-23", "nuanced", reason, evidence)


# ------------------------------------------------------------------------------------ MP-25 ---

def mp25(lines: pd.DataFrame, symbols: pd.DataFrame, evidence: str = "tbl-mp25") -> Finding:
    """MP-25 from `formula_lines` (step, identical, equal) and `formula_symbols` (symbol, kind,
    defined, used in the formula).

    refuted: some "=" step of the formula does not hold (sympy cannot reduce the difference of
    its sides to 0 for an arbitrary loss L): the formula contradicts itself; not testable here:
    every step holds but a symbol the formula uses has no definition in the text (the loss it
    minimizes cannot be computed, so nothing about it can be measured); nuanced: the formula
    holds and every symbol it uses is defined: a well-formed scheme, stated but not shown to be
    what training does."""
    if lines.empty or symbols.empty:
        raise ValueError("lines, symbols: both tables must have rows")
    used = symbols[symbols["used in the formula"].astype(bool)]
    undefined = used.loc[~used["defined"].astype(bool), "symbol"].tolist()
    unequal = lines.loc[~lines["equal"].astype(bool), "step"].tolist()
    n_identical = int(lines["identical"].astype(bool).sum())
    steps = (f"{n_identical} of {len(lines)} '=' steps join identical expressions"
             + (f", {', '.join(unequal)} does not hold for a general L" if unequal else ""))
    symbols_text = (f"the text defines none of {', '.join(undefined)} that the formula uses"
                    if undefined else f"all {len(used)} symbols it uses are defined")
    reason = f"{steps}; {symbols_text}"
    if unequal:
        return Finding("MP-25", "refuted", reason, evidence)
    if undefined:
        return Finding("MP-25", "not testable here",
                       reason + ": the loss it minimizes cannot be computed", evidence)
    return Finding("MP-25", "nuanced", reason + ": a scheme stated, not shown to be how "
                   "training works", evidence)


# ------------------------------------------------------------------------------------ LLM-7 ---

def llm7(forward: pd.DataFrame, training: pd.DataFrame, evidence: str = "tbl-llm7") -> Finding:
    """LLM-7 from `lstm_forward_as_written` (batch_size, outcome) and `lstm_training` (probe,
    outcome, first_loss, last_loss, loss_terms_per_step, parameter_dtypes).

    The loop is *hybrid* when it also trains on unlabelled batches (a second paradigm beside the
    supervised one). not testable here: the fixed classifier does not train on labelled batches
    (its loss does not fall), so the loop itself cannot be judged; refuted: the loop is not
    hybrid (one supervised paradigm); supported: it is hybrid and the forward as written runs
    at every batch size tried; nuanced: hybrid, but the forward as written fails somewhere."""
    if forward.empty or training.empty:
        raise ValueError("forward, training: both tables must have rows")
    probe = training.set_index("probe")
    for name in ("fixed forward, labelled batches", "fixed forward, unlabelled batches"):
        if name not in probe.index:
            raise ValueError(f"training: needs the probe {name!r}")
    fixed = probe.loc["fixed forward, labelled batches"]
    unlabelled = probe.loc["fixed forward, unlabelled batches"]
    fails = forward[forward["outcome"] != "ran"]
    by_size = "; ".join(f"batch {int(r.batch_size)}: {r.outcome}" for r in forward.itertuples())
    written = (f"the forward as written failed at {len(fails)} of {len(forward)} batch sizes "
               f"({by_size}): pad_packed_sequence returns (outputs, lengths), not (outputs, "
               "(h, c))" if len(fails) else
               f"the forward as written ran at all {len(forward)} batch sizes")
    trains = fixed["outcome"] == "trained" and fixed["last_loss"] < fixed["first_loss"]
    if not trains:
        return Finding("LLM-7", "not testable here",
                       f"{written}; the fixed classifier did not train ({fixed['outcome']}, loss "
                       f"{sig2(fixed['first_loss'])} -> {sig2(fixed['last_loss'])})", evidence)
    hybrid = unlabelled["outcome"] == "trained"
    loop = (f"with the forward fixed its loss fell from {sig2(fixed['first_loss'])} to "
            f"{sig2(fixed['last_loss'])} in {int(fixed['steps'])} steps, one supervised loss "
            f"term per step ({sig2(fixed['loss_terms_per_step'])}) on labelled batches, "
            f"{fixed['parameter_dtypes']} parameters; fed unlabelled batches the loop "
            + ("trained too" if hybrid else f"stops ({unlabelled['outcome']}): it has no "
               "unsupervised or semi-supervised part"))
    reason = f"{written}; {loop}"
    if not hybrid:
        return Finding("LLM-7", "refuted", reason + ": a plain supervised loop", evidence)
    if fails.empty:
        return Finding("LLM-7", "supported", reason, evidence)
    return Finding("LLM-7", "nuanced", reason, evidence)
