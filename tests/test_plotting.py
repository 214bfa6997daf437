"""The house style's hardware footer: it fits the figure instead of widening it."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")

from PIL import Image  # noqa: E402

from precisionlab.study import plotting  # noqa: E402

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
