"""Chapter 03's report: tables, glued facts and figures from toy measurements."""

from __future__ import annotations

import matplotlib

from precisionlab.study.reports import scaling as report

matplotlib.use("Agg")


def test_tables_facts_and_figures_read_the_measurements(scaling_measured, tmp_path):
    runs, traces, under = scaling_measured
    table = report.loss_table(runs, [8])
    assert list(table.index.get_level_values("config"))[0] == "32-true"
    assert len(report.underflow_table(under, 2)) == 2
    facts = report.facts(runs, under, traces, [8], {"mlp": 3, "transformer": 3}, 2)
    assert facts["mlp_act_none"] == "(not run)" and facts["transformer_best"].startswith("2^")
    assert report.histogram_facts(tmp_path / "missing.csv")["ch01_flush"] == "(see chapter 1)"


def test_one_line_table_pairs_each_change_with_32_true(scaling_measured):
    runs, *_ = scaling_measured
    table = report.one_line_table(runs)
    configs = list(table.index.get_level_values("configuration"))
    assert configs == ["bf16-mixed", "16-mixed, no scaling", "16-mixed, dynamic", "16-true"]
    assert table["train loss minus 32-true (nats)"].iloc[0].endswith("(n=2)")
    assert table.loc[("TinyTransformer on characters", "16-true"), "seeds with non-finite loss"
                     ].endswith("of 2")


def test_one_line_facts_give_paired_intervals_per_task(scaling_measured):
    runs, *_ = scaling_measured
    facts = report.one_line_facts(runs, 0.05)
    assert facts["transformer_bf16_vs32"].endswith("nats (n=2)")
    assert facts["transformer_cast_bad"] == "2 of 2" and facts["transformer_cast_first"] == "2"
    assert facts["mlp_none_within"] == "(not run)"
    one = report.one_line_facts(runs[runs.seed == 0], 0.05)
    assert one["transformer_dyn_vs32"] == "(one seed: no interval)"


def test_adam_fp16_facts_follow_from_fp16():
    import torch

    facts = report.adam_fp16_facts()
    assert facts["adam_eps16"] == "0"  # 1e-8 is below half fp16's smallest subnormal
    g = float(facts["adam_gmin"])
    v = torch.tensor(0.001 * g * g, dtype=torch.float16)
    assert v > 0 and torch.tensor(0.001 * (0.99 * g) ** 2, dtype=torch.float16) == 0


def test_figures_have_labelled_axes_and_the_hardware(scaling_measured):
    runs, traces, under = scaling_measured
    for fig in (report.plot_final_loss(runs, [8], "test CPU"),
                report.plot_underflow(under, [8], "test CPU"),
                report.plot_dynamic(traces, "test CPU")):
        assert any(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
        assert any("test CPU" in t.get_text() for t in fig.texts)
        matplotlib.pyplot.close(fig)
