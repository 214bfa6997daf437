"""reports.llm_quantization: summaries, tables, facts and the figure's axes (Agg backend)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as sps  # noqa: E402

from precisionlab.study.reports import llm_quantization as report  # noqa: E402
from precisionlab.study.rules import llm_quantization as rules  # noqa: E402


def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for config, kl in (("W8 per-channel", 0.003), ("W4 asym g32", 0.05),
                       ("W4 Q4_1-grid g32", 1e-6), ("LLM.int8 |x|>6", 0.01)):
        for w in range(3):
            k = kl * (1 + 0.1 * rng.standard_normal())
            rows.append({"config": config, "window": w, "nll_ref": 2.0 + 0.1 * w,
                         "nll": 2.0 + 0.1 * w + k, "kl": k, "delta_p": -k / 10,
                         "ppl_ref": np.exp(2.0 + 0.1 * w), "ppl_ratio": np.exp(k),
                         "weight_change": 0.01})
    return pd.DataFrame(rows)


def test_summary_and_table_keep_config_order_with_intervals():
    s = report.quality_summary(table())
    assert list(s["config"]) == ["W8 per-channel", "W4 asym g32", "W4 Q4_1-grid g32",
                                 "LLM.int8 |x|>6"]
    assert (s["kl_low"] <= s["kl_mean"]).all() and (s["kl_mean"] <= s["kl_high"]).all()
    assert (s["n"] == 3).all()
    t = report.quality_table(table())
    assert t.shape == (4, 6) and "[" in t.iloc[0]["KL (nats/token)"]


def test_plot_quality_labels_axes_with_units():
    fig = report.plot_quality(table(), "test machine")
    ax1, ax2 = fig.axes[:2]
    assert "%" in ax1.get_xlabel() and "nats/token" in ax2.get_xlabel()
    assert [t.get_text() for t in ax1.get_yticklabels()][0] == "W8 per-channel"
    assert any("test machine" in t.get_text() for t in fig.texts)
    plt.close(fig)
    zero = table().assign(kl=lambda t: t["kl"].where(t["config"] != "W4 Q4_1-grid g32", 0.0))
    fig = report.plot_quality(zero, "m")
    ax = fig.axes[1]
    (note,) = [t for t in ax.texts if "KL = 0" in t.get_text()]
    assert note.xy[1] == 2  # on the row of the configuration whose KL is 0
    plt.close(fig)


def _t95(values) -> tuple[float, float, float]:
    """Mean and 95 % Student-t interval, computed here (not by the module)."""
    x = np.asarray(values, dtype=float)
    half = sps.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / np.sqrt(x.size)
    return x.mean(), x.mean() - half, x.mean() + half


def test_plot_quality_draws_means_and_intervals_over_windows():
    # a fifth configuration whose KL interval reaches below 0: its bar stops above 0 (log axis)
    wide = pd.DataFrame({"config": "W8A8 per-token", "window": [0, 1, 2],
                         "kl": [0.001, 0.002, 0.05], "ppl_ratio": [1.01, 0.99, 1.2],
                         "delta_p": 0.0, "weight_change": np.nan})
    t = pd.concat([table(), wide], ignore_index=True)
    fig = report.plot_quality(t, "m")
    configs = list(dict.fromkeys(t.config))
    for ax, value in ((fig.axes[0], "ppl_change"), (fig.axes[1], "kl")):
        (bars,) = ax.containers
        line, _, (horizontal, *_) = bars.lines
        x, y = (np.asarray(v, dtype=float) for v in line.get_data())
        seg = np.array(horizontal.get_segments(), dtype=float)
        np.testing.assert_allclose(y, np.arange(len(configs)))  # one row per configuration
        for i, c in enumerate(configs):
            part = t[t.config == c]
            v = 100 * (part.ppl_ratio - 1) if value == "ppl_change" else part.kl
            mean, low, high = _t95(v)
            if value == "kl":
                low = max(low, 0.001 * mean)  # kept positive on the log axis
            np.testing.assert_allclose(x[i], mean)
            np.testing.assert_allclose(seg[i], [[low, i], [high, i]], rtol=1e-9, atol=1e-15)
    assert 0.001 * t[t.config == "W8A8 per-token"].kl.mean() > _t95([0.001, 0.002, 0.05])[1]
    plt.close(fig)


def test_facts_and_inventory_table():
    grid = pd.DataFrame({"kind": ["model.embed_tokens", "q_proj"], "tensors": [1, 2],
                         "blocks": [10, 20], "max_distinct": [32, 16], "share_le16": [0.0, 1.0]})
    inv = pd.DataFrame({"module": ["Linear", "LayerNorm"], "computes_in": ["int8", "float32"],
                        "count": [3, 2], "parameters": [90, 10], "integer": [True, False],
                        "parameter_share": [0.9, 0.1]})
    f = report.facts(table(), grid, inv, {"total": 100, "integer": 97},
                     {"fp32": 4 * 2**20, "int8": 2**20}, fidelity())
    assert f["grid_max_distinct"] == "16" and f["grid_share"] == "100 %"
    assert f["q6_flop_share"] == "97.0 %" and f["q6_size_ratio"] == "4.00"
    assert f["q6_nn_agree"] == "50 %" and f["q6_def_nn_agree"] == "0 %"
    assert f["q6_cos_mean"] == "0.9985" and f["q6_def_cos_min"] == "0.9500"
    assert f["q6_nn_interval"] == "9-91 %" and f["q6_sentences"] == "2"
    assert "n_windows" not in f  # the template glues it
    alone = report.facts(table(), grid, inv, {"total": 100, "integer": 97},
                         {"fp32": 4 * 2**20, "int8": 2**20}, fidelity().iloc[:2])
    assert alone["q6_def_nn_interval"] == "(not run)"
    assert list(report.inventory_table(inv)["share of parameters (%)"]) == [90.0, 10.0]


def fidelity() -> pd.DataFrame:
    return pd.DataFrame({"recipe": [rules.JUDGED] * 2 + [rules.CONTRAST] * 2,
                         "cosine": [0.999, 0.998, 0.96, 0.95],
                         "nn_agree": [True, False, False, False]})


def test_fidelity_table_one_row_per_recipe_with_intervals():
    t = report.fidelity_table(fidelity())
    assert list(t["recipe"]) == [rules.JUDGED, rules.CONTRAST] and list(t["sentences"]) == [2, 2]
    assert t.iloc[0]["nearest neighbour kept (%)"] == "50.0 [9.5, 90.5]"
    assert t.iloc[1]["lowest cosine"] == "0.9500" and "[" in t.iloc[1]["1 - cosine to fp32"]
