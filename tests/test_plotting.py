"""The house style: the hardware footer fits the figure instead of widening it; series that turn
non-finite draw nothing where they have no value; log axes label plain decimals."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from precisionlab.study import plotting  # noqa: E402

NAN = math.nan

LONG = ("CPU AMD EPYC (avx2, fma, f16c; no avx512_bf16, avx512_fp16, amx); torch 2.13.0 on "
        "2 threads; capability AVX2; oneDNN 3.9; MKL 2025.0; Linux 6.1; Python 3.11.13")


def test_foot_lines_break_at_separators_within_the_width():
    lines = plotting.foot_lines("a; bb; ccc; dddd", 7)
    assert lines == ["a; bb;", "ccc;", "dddd"]
    assert plotting.foot_lines("short; line", 80) == ["short; line"]
    assert plotting.foot_lines("x" * 30, 10) == ["x" * 30]  # no separator: kept whole


def test_a_long_hardware_line_does_not_widen_the_saved_figure():
    plotting.use_style()
    widths = []
    for hardware in ("CPU", LONG + "; " + LONG):
        fig, ax = plotting.figure(width=5.0, height=3.0)
        ax.plot([0, 1], [0, 1])
        plotting.sign(fig, hardware)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=50, bbox_inches="tight")
        widths.append(Image.open(buf).size[0])
        text = fig.texts[-1].get_text()
        assert text.startswith("Measured on: ")
        assert all(len(line) <= 5.0 * 72 / (0.55 * plotting.FOOT_POINTS) for line in
                   text.split("\n") if ";" in line)
    assert widths[1] <= widths[0] * 1.05


def steps_table(values: dict[int, list[float]]) -> pd.DataFrame:
    """seed -> its values at steps 10, 20, 30."""
    return pd.DataFrame([{"seed": s, "step": 10 * (i + 1), "v": v}
                         for s, vs in values.items() for i, v in enumerate(vs)])


def finite_points(line) -> list[tuple[float, float]]:
    x, y = (np.asarray(a, dtype=float) for a in line.get_data())
    return [(a, b) for a, b in zip(x, y, strict=True) if np.isfinite(a) and np.isfinite(b)]


def test_onset_and_its_text_name_the_first_nonfinite_step_per_seed():
    t = steps_table({0: [1.0, NAN, NAN], 1: [1.0, 1.0, math.inf], 2: [1.0, 1.0, 1.0]})
    assert plotting.nonfinite_onset(t, "v") == {0: 20, 1: 30}
    assert plotting.diverged_text({}, 3) == ""
    assert plotting.diverged_text({0: 20, 1: 20}, 2) == "diverged at step 20"
    assert (plotting.diverged_text({0: 20, 1: 30, 2: 30}, 3)
            == "diverged at step 20 (seed 0), 30 (seeds 1, 2)")
    assert (plotting.diverged_text({0: 20, 1: 30}, 3)
            == "diverged at step 20 (seed 0), 30 (seed 1); 1 of 3 seeds finite")
    assert plotting.diverged_text({1: 20}, 2) == "diverged at step 20 (seed 1); 1 of 2 seeds finite"


def test_an_all_nonfinite_series_draws_only_its_legend_entry():
    fig, ax = plotting.figure()
    line = plotting.plot_steps(ax, steps_table({0: [NAN] * 3, 1: [NAN] * 3}), "v", "16-true",
                               band=True, marker="o")
    assert finite_points(line) == [] and not ax.collections  # no marker, no band
    ax.legend()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "16-true (diverged at step 10)"]
    plt.close(fig)


def test_a_series_that_turns_nonfinite_stops_at_its_last_value():
    fig, ax = plotting.figure()
    line = plotting.plot_steps(ax, steps_table({0: [2.0, 1.5, NAN], 1: [2.2, NAN, NAN]}), "v",
                               "fp16", marker="s")
    assert finite_points(line) == [(10.0, 2.1), (20.0, 1.5)]  # the mean of what is finite
    assert line.get_label() == "fp16 (diverged at step 20 (seed 1), 30 (seed 0))"
    plain = plotting.plot_steps(ax, steps_table({0: [2.0, 1.0, 1.0]}), "v", "ok",
                                diverged=True)
    assert len(finite_points(plain)) == 3 and plain.get_label() == "ok (diverged)"
    plt.close(fig)


def test_plain_writes_decimals_without_exponents():
    assert [plotting.plain(x) for x in (0.0, 1e-5, 0.30000000000000004, 2.0, 1e6, -0.01)] == [
        "0", "0.00001", "0.3", "2", "1000000", "-0.01"]


@pytest.mark.parametrize(("low", "high", "expected"), [
    (0.75, 4.2, ["0.8", "1", "2", "3", "4"]),  # under a decade: 1 to 9, thinned
    (0.9, 1.25, ["0.9", "1", "1.1", "1.2"]),  # inside one decade: round linear steps
    (0.01, 1.0, ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1"]),  # 1-2-5
    (1e-3, 1e3, ["0.001", "0.01", "0.1", "1", "10", "100", "1000"]),  # decades
])
def test_a_log_axis_labels_enough_plain_ticks_over_its_view(low, high, expected):
    fig, ax = plotting.figure()
    ax.plot([0, 1], [low, high])
    ax.set_yscale("log")
    ax.set_ylim(low, high)
    plotting.readable_log(ax)
    assert visible_labels(fig, ax) == expected
    assert not any(t.get_text() for t in ax.yaxis.get_minorticklabels())
    plt.close(fig)


def test_symlog_and_base_2_axes_label_plain_decimals_and_a_linear_one_is_refused():
    fig, ax = plotting.figure()
    ax.plot([0, 1], [0.0, 10.0])
    ax.set_yscale("symlog", linthresh=0.01)
    plotting.readable_log(ax)
    labels = visible_labels(fig, ax)
    assert labels[:3] == ["0", "0.01", "0.1"] and "10" in labels
    ax.set_xscale("log", base=2)
    ax.set_xlim(0.25, 4)
    plotting.readable_log(ax, "x")
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels() if 0.25 <= t.get_position()[0] <= 4] == [
        "0.25", "0.5", "1", "2", "4"]  # base 2 keeps its powers, written plainly
    ax.set_xscale("linear")
    with pytest.raises(ValueError, match="not log or symlog"):
        plotting.readable_log(ax, "x")
    plt.close(fig)


def visible_labels(fig, ax) -> list[str]:
    """The y tick labels inside the view, as drawn."""
    fig.canvas.draw()
    lo, hi = sorted(ax.get_ylim())
    return [t.get_text() for t in ax.get_yticklabels()
            if lo * (1 - 1e-9) - 1e-12 <= t.get_position()[1] <= hi * (1 + 1e-9) + 1e-12]
