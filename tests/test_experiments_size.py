"""Q-5's counts: weights and biases per stored format, checked against torch's own modules."""

from __future__ import annotations

import torch
from torch import nn

from precisionlab import memory
from precisionlab.models import MLP
from precisionlab.quant import QuantConfig, QuantSpec, quantize_, to_int8_backend
from precisionlab.study.experiments import size


def test_torch_ao_parameters_omit_the_packed_weights_that_unpacking_finds():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    ao = to_int8_backend(net, backend="torch.ao")  # torch.ao's quantize_dynamic, qint8
    assert sum(p.numel() for p in ao.parameters()) == 0  # the fact Q-5's counting works around
    unpacked = [t for m in ao.modules() if isinstance(getattr(m, "_packed_params", None),
                                                      nn.Module)
                for t in m._packed_params._weight_bias()]
    assert sum(t.numel() for t in unpacked) == 12 * 8 + 8 + 8 * 3 + 3
    assert size.model_values(ao) == size.model_values(net) == 12 * 8 + 8 + 8 * 3 + 3
    # the state_dict holds the same packed tensors (plus a scalar scale and zero point per layer)
    stored = size.stored_tensors(ao)
    assert {t.dtype for t in stored} == {torch.qint8, torch.float32, torch.int64}
    assert sum(t.numel() for t in stored) == 12 * 8 + 8 + 8 * 3 + 3 + 2 * 2


def test_parameter_counts_same_values_fewer_bytes():
    torch.manual_seed(0)
    model = MLP([20, 16, 4]).eval()
    n = 20 * 16 + 16 + 16 * 4 + 4
    counts = size.count_formats([16], n_in=20, n_classes=4).set_index("format")
    assert counts.parameters.eq(n).all()
    assert counts.stored_bytes["fp32"] == memory.tensor_bytes(model.parameters()) == 4 * n
    assert counts.stored_bytes["bf16"] == counts.stored_bytes["fp16"] == 2 * n
    # our int8: one byte per weight, fp32 biases and one fp32 scale per output channel
    weights, outs = 20 * 16 + 16 * 4, 16 + 4
    assert counts.stored_bytes["int8"] == weights + 4 * outs + 4 * outs
    assert counts.stored_elements["int8"] == n + outs
    # packed int4: two weights per stored byte, so fewer stored elements, not fewer parameters
    assert counts.stored_elements["int4"] == weights // 2 + 2 * outs
    assert counts.parameters_api["int8"] == outs  # only the biases are nn.Parameters
    ao = next(f for f in counts.index if f.startswith("int8 ("))
    assert counts.parameters_api[ao] == 0 and counts.stored_dtypes[ao] == "float32, int64, qint8"


def test_model_values_reads_the_logical_shape_of_packed_int4():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 6))
    q = quantize_(nn.Sequential(nn.Linear(10, 6)),
                  QuantConfig(weight=QuantSpec(bits=4, granularity="per_channel")))
    assert q[0].qweight.numel() == 30 and size.model_values(q) == size.model_values(net) == 66
    assert size.model_values(to_int8_backend(net)) == 66
