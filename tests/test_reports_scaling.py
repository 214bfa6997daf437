"""Chapter 03's report: tables, glued facts and figures from toy measurements."""

from __future__ import annotations

import matplotlib

from precisionlab.reports import scaling as report

matplotlib.use("Agg")


def test_tables_facts_and_figures_read_the_measurements(scaling_measured, tmp_path):
    runs, traces, under = scaling_measured
    table = report.loss_table(runs, [8])
    assert list(table.index.get_level_values("config"))[0] == "32-true"
    assert len(report.underflow_table(under, 2)) == 2
    facts = report.facts(runs, under, traces, [8], {"mlp": 3, "transformer": 3}, 2)
    assert facts["mlp_act_none"] == "(not run)" and facts["transformer_best"].startswith("2^")
    assert report.histogram_facts(tmp_path / "missing.csv")["ch01_flush"] == "(see chapter 1)"


def test_figures_have_labelled_axes_and_the_hardware(scaling_measured):
    runs, traces, under = scaling_measured
    for fig in (report.plot_final_loss(runs, [8], "test CPU"),
                report.plot_underflow(under, [8], "test CPU"),
                report.plot_dynamic(traces, "test CPU")):
        assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
        assert any("test CPU" in t.get_text() for t in fig.texts)
        matplotlib.pyplot.close(fig)
