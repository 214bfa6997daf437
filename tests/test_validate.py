"""Parameter checks name the parameter and what is allowed."""

from __future__ import annotations

import pytest

from precisionlab import validate as v
from precisionlab.provenance import resolve_device


@pytest.mark.parametrize("call, message", [
    (lambda: v.one_of("rounding", "up", ["nearest", "stochastic"]),
     "rounding: must be one of 'nearest', 'stochastic'; got 'up'"),
    (lambda: v.subset_of("formats", ["fp16", "fp17"], ["fp16", "bf16"]),
     "formats: unknown 'fp17'; allowed: 'fp16', 'bf16'"),
    (lambda: v.subset_of("formats", "fp16", ["fp16"]),
     "formats: must be a non-empty list drawn from 'fp16'; got 'fp16'"),
    (lambda: v.subset_of("formats", ["fp16", "fp16"], ["fp16"]),
     "formats: has repeated entries: ['fp16', 'fp16']"),
    (lambda: v.integer("train_steps", 0, 1, 100),
     "train_steps: must be an integer from 1 to 100; got 0"),
    (lambda: v.integer("seed", 1.5, 0), "seed: must be an integer >= 0; got 1.5"),
    (lambda: v.integer("seed", True, 0), "seed: must be an integer >= 0; got True"),
    (lambda: v.integers("seeds", [], 0),
     "seeds: must be a non-empty list of integers >= 0; got []"),
    (lambda: v.integers("seeds", [0, -1], 0), "seeds: must be an integer >= 0; got -1"),
    (lambda: v.positive("lr", 0), "lr: must be a number > 0; got 0"),
    (lambda: v.positive("lr", "0.1"), "lr: must be a number > 0; got '0.1'"),
])
def test_messages_name_the_parameter_and_the_allowed_values(call, message):
    with pytest.raises(v.ParameterError) as err:
        call()
    assert str(err.value) == message


def test_valid_values_pass_through():
    assert v.subset_of("formats", ("fp16",), ["fp16"]) == ["fp16"]
    assert v.integers("seeds", [0, 1, 2], 0) == [0, 1, 2]
    assert v.positive("lr", 1) == 1.0


def test_device_auto_is_cpu_without_a_gpu_and_bad_names_fail():
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="^device: must be one of auto, cpu, cuda; got 'tpu'"):
        resolve_device("tpu")
