"""precisionlab.study.tasks: each seed draws its own split and weights; same seed, same pair."""

import pytest
import torch

from precisionlab.study import tasks
from precisionlab.validate import ParameterError


def test_seeds_draw_different_splits_and_weights():
    a, model_a = tasks.make("digits", seed=0, hidden=[16])
    b, model_b = tasks.make("digits", seed=1, hidden=[16])
    assert not torch.equal(a.x_train[:5], b.x_train[:5])
    assert not torch.equal(model_a[0].weight, model_b[0].weight)


def test_same_seed_same_data_and_weights():
    a, model_a = tasks.make("mnist1d", seed=3, samples=400, hidden=[8])
    b, model_b = tasks.make("mnist1d", seed=3, samples=400, hidden=[8])
    assert torch.equal(a.x_train, b.x_train)
    assert all(torch.equal(p, q) for p, q in zip(model_a.parameters(), model_b.parameters(),
                                                 strict=True))


@pytest.mark.parametrize("task", tasks.TASKS)
def test_every_task_builds_a_model_that_fits_its_data(task):
    split, model = tasks.make(task, seed=0, samples=400, context=16, n_train=32, n_test=8,
                              hidden=[8], d_model=16, n_layers=1, channels=4)
    out = model(split.x_test[:4])
    assert out.shape[0] == 4 and out.shape[-1] == split.n_classes


def test_unknown_task_is_named():
    with pytest.raises(ParameterError, match="task: must be one of"):
        tasks.load("cifar", 0)
