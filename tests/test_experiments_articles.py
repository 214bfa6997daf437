"""Chapter 9's experiments: the gradient grid against autograd, the Keras examples on Keras 3's
torch backend (tiny runs), and the MP-25 formula checked with sympy."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from precisionlab.study.experiments import articles as A
from precisionlab.study.rules import articles as R


def test_gradient_grid_autograd_matches_the_closed_form_and_fp32():
    g = A.gradient_grid([-2.0, 0.0, 1.5], [-1.0, 0.5], [0.0, 2.0])
    assert len(g) == 12
    assert R.agreement(g, "closed_form").all()
    assert ((g["autograd_fp32"] - g["autograd"]).abs()
            <= 1e-6 * g["autograd"].abs().clip(lower=1.0)).all()


def test_the_articles_formula_agrees_exactly_where_the_algebra_says():
    g = A.gradient_grid([-1.0, 0.0, 0.5, 2.0], [-1.0, 0.0, 1.0, 2.0], [-1.0, 0.5, 1.0])
    assert (R.agreement(g) == (g["special"] != "")).all()
    assert set(g["special"]) == {"", "x = 0", "y = 1 + theta (x - 1)"}


def test_special_point_uses_exact_arithmetic():
    assert A.special_point(0.0, 5.0, 3.0) == "x = 0"
    assert A.special_point(3.0, 2.0, 0.5) == "y = 1 + theta (x - 1)"
    assert A.special_point(3.0, 2.0000001, 0.5) == ""


@pytest.mark.slow
def test_importing_the_library_does_not_import_keras():
    code = ("import sys, precisionlab, precisionlab.study.experiments.articles, "
            "precisionlab.study.rules.articles; print('keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def keras_run():
    """The six cases, two steps each, with torch's state before and after."""
    before = A.torch_state()
    table = A.keras_examples(seed=0, steps=2, batch=8, device="cpu")
    return table, before, A.torch_state()


@pytest.mark.slow
def test_keras_examples_record_what_runs(keras_run):
    table = keras_run[0].set_index("case")
    after = table.loc["policy set after the model is built"]
    assert (after["compute dtype"], after["variable dtype"], after["outcome"]) == \
        ("float32", "float32", "trained")
    before = table.loc["policy set before the model is built"]
    assert (before["compute dtype"], before["variable dtype"], before["output dtype"],
            before["optimizer"], before["outcome"]) == \
        ("float16", "float32", "float16", "LossScaleOptimizer", "trained")
    assert table.loc["model = mixed_precision.set_policy(policy)", "outcome"] == "AttributeError"
    assert "set_policy" in table.loc["model = mixed_precision.set_policy(policy)", "error"]
    assert table.loc["model = set_global_policy(policy)", "outcome"] == "AttributeError"
    assert (table["steps"][table["outcome"] == "trained"] == 2).all()


@pytest.mark.slow
def test_keras_examples_leave_no_global_state_behind(keras_run):
    _, before, after = keras_run
    assert before == after
    assert A.global_policy() == "float32"
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.slow
def test_the_rule_refutes_the_examples_as_run(keras_run):
    assert R.mp23(keras_run[0]).verdict == "refuted"


def test_formula_lines_are_identical_and_a_changed_line_is_not():
    steps = A.formula_lines()
    assert steps[["identical", "equal"]].all(axis=None)
    changed = A.formula_lines([A.FORMULA_LINES[0], "argmin(theta, L(theta, x_int + x_fp))"])
    assert not changed["equal"].any()
    equivalent = A.formula_lines(["L(theta, x_int) + L(theta, x_fp)",
                                  "L(theta, x_fp) + L(theta, x_int)"])
    assert equivalent["equal"].all()


def test_formula_symbols_flag_the_parallel_input_as_undefined():
    table = A.formula_symbols().set_index("symbol")
    used_undefined = table[table["used in the formula"] & ~table["defined"]].index
    assert set(used_undefined) == {"x_int", "x_fp", "x_tilde"}
    defined = [*A.SYMBOLS[:4], ("x_int", "int copy", "floor(x + 1/2)", "derived"),
               ("x_fp", "fp16 copy", "x", "derived"),
               ("x_tilde", "both", "x_int + x_fp", "derived")]
    assert A.formula_symbols(defined)["defined"].all()


def test_parse_rejects_a_name_the_symbol_list_lacks():
    with pytest.raises(ValueError, match="not in the symbol list"):
        A.parse("L(theta, z)", ["theta", "L"])


# ------------------------------------------------------------------------------------ LLM-7 ---

def test_pad_packed_sequence_returns_outputs_and_lengths_so_the_article_forward_fails():
    table = A.lstm_forward_as_written([1, 2, 3, 5])
    # torch returns (padded outputs, lengths (B,)): unpacking lengths as (h, c) fails for every B
    assert list(table.outcome) == ["ValueError", "RuntimeError", "ValueError", "ValueError"]
    assert (table["second item shape"] == [(1,), (2,), (3,), (5,)]).all()
    assert table["pad_packed_sequence returns"].str.startswith("tuple of 2").all()


def test_the_fixed_classifier_uses_the_lstm_state_and_matches_a_manual_run():
    torch.manual_seed(0)
    model = A.PackedLSTMClassifier(128, as_written=False)
    lines, digest = A.text_lines(6, seed=1)
    ids, lengths, labels = A.text_batches(lines, 6, seed=1)[0]
    assert (lengths[:-1] >= lengths[1:]).all() and ids.shape == (int(lengths[0]), 6)
    assert set(labels.tolist()) <= {0, 1} and len(digest) == 64
    logits = model(ids, lengths)
    # the same last states, one sequence at a time, without packing
    for b in range(6):
        _, (h, _) = model.rnn(model.embed(ids[: lengths[b], b : b + 1]))
        assert torch.allclose(logits[b], model.head(h[0, 0]), atol=1e-6)
    assert all(ln.endswith(":") == bool(k) for ln, k in lines)


def test_lstm_training_falls_on_labels_and_stops_without_them():
    t = A.lstm_training(seed=0, steps=12, batch=8).set_index("probe")
    fixed = t.loc["fixed forward, labelled batches"]
    assert fixed.outcome == "trained" and fixed.steps == 12
    assert fixed.last_loss < fixed.first_loss and fixed.loss_terms_per_step == 1.0
    assert fixed.parameter_dtypes == "float32" and not fixed.autocast
    assert t.loc["fixed forward, unlabelled batches", "outcome"] == "ValueError"
    assert t.loc["forward as written, labelled batches", "outcome"] == "ValueError"
    assert R.llm7(A.lstm_forward_as_written([1, 2, 3]), t.reset_index()).verdict == "refuted"
