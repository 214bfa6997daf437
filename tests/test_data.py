"""Tests for precisionlab.data: offline, deterministic datasets with validated arguments."""

import hashlib
import socket
import urllib.request

import numpy as np
import pytest
import torch

from precisionlab.data import Split, char_corpus, char_sequences, digits, mnist1d


def _no_network(*args, **kwargs):
    raise AssertionError("network access attempted")


def _tensors(s: Split):
    return s.x_train, s.y_train, s.x_test, s.y_test


@pytest.fixture(scope="module")
def small_mnist1d():
    return mnist1d(seed=3, n_samples=1000)


# ---------------------------------------------------------------- mnist1d


def test_mnist1d_shapes_dtypes_classes():
    s = mnist1d()
    assert s.name == "mnist1d"
    assert s.x_train.shape == (3200, 40) and s.x_test.shape == (800, 40)
    assert s.x_train.dtype == s.x_test.dtype == torch.float32
    assert s.y_train.dtype == s.y_test.dtype == torch.int64
    assert s.n_features == 40 and s.n_classes == 10
    assert set(s.y_train.tolist()) == set(s.y_test.tolist()) == set(range(10))


def test_mnist1d_standardized_on_train(small_mnist1d):
    x = small_mnist1d.x_train
    torch.testing.assert_close(x.mean(0), torch.zeros(40), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0, correction=0), torch.ones(40), atol=1e-4, rtol=0)


def test_mnist1d_deterministic_per_seed(small_mnist1d):
    again = mnist1d(seed=3, n_samples=1000)
    for a, b in zip(_tensors(small_mnist1d), _tensors(again), strict=True):
        assert torch.equal(a, b)
    other = mnist1d(seed=4, n_samples=1000)
    assert not torch.equal(small_mnist1d.x_train, other.x_train)


def test_mnist1d_leaves_global_rng_alone():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    mnist1d(n_samples=100)
    assert np.random.rand() == expected


def test_mnist1d_uses_no_network_and_writes_no_file(monkeypatch, tmp_path):
    import requests
    from mnist1d import data as upstream

    monkeypatch.setattr(upstream, "get_dataset", _no_network)  # the downloading loader
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(requests, "get", _no_network)
    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.chdir(tmp_path)
    assert mnist1d(n_samples=100).x_train.shape == (80, 40)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- char corpus


@pytest.fixture(scope="module")
def corpus():
    return char_corpus()


def test_char_corpus_deterministic_with_sha256(corpus):
    again = char_corpus()
    assert again == corpus
    assert corpus.sha256 == hashlib.sha256(corpus.text.encode("ascii")).hexdigest()
    assert corpus.text.isascii() and "\t" not in corpus.text
    assert corpus.vocab == "".join(sorted(set(corpus.text)))
    assert list(corpus.modules) == sorted(corpus.modules) and len(corpus.modules) >= 8
    assert "def dedent(" in corpus.text  # textwrap, the last module, is complete by default


def test_char_corpus_max_chars_cuts_text(corpus):
    short = char_corpus(max_chars=5000)
    assert short.text == corpus.text[:5000]
    assert short.modules == corpus.modules[:len(short.modules)] and len(short.modules) < 10


def test_encode_decode_round_trip(corpus):
    s = corpus.text[1000:3000]
    ids = corpus.encode(s)
    assert ids.dtype == torch.int64 and ids.shape == (2000,)
    assert corpus.decode(ids) == s
    assert corpus.decode(ids.tolist()) == s
    with pytest.raises(ValueError, match="^s: "):
        char_corpus(max_chars=50).encode("\u00e9")


def test_char_sequences_windows_are_next_char_pairs(corpus):
    s = char_sequences(seed=1, context=32, n_train=200, n_test=100)
    assert s.name == "chars" and s.n_classes == len(corpus.vocab)
    assert s.x_train.shape == s.y_train.shape == (200, 32)
    assert s.x_test.shape == s.y_test.shape == (100, 32)
    assert s.x_train.dtype == s.y_test.dtype == torch.int64
    cut = int(0.9 * len(corpus.text))
    train_text, test_text = corpus.text[:cut], corpus.text[cut:]
    for x, y, part in [(s.x_train, s.y_train, train_text), (s.x_test, s.y_test, test_text)]:
        assert torch.equal(x[:, 1:], y[:, :-1])
        for xi, yi in zip(x, y, strict=True):
            assert corpus.decode(xi) + corpus.decode(yi[-1:]) in part


def test_char_sequences_deterministic_and_seeded():
    a = char_sequences(seed=0, n_train=64, n_test=16)
    b = char_sequences(seed=0, n_train=64, n_test=16)
    assert all(torch.equal(u, v) for u, v in zip(_tensors(a), _tensors(b), strict=True))
    c = char_sequences(seed=1, n_train=64, n_test=16)
    assert not torch.equal(a.x_train, c.x_train)


def test_char_sequences_classes_is_vocab_size_even_if_top_char_absent():
    s = char_sequences(context=8, n_train=4, n_test=4, max_chars=2000)
    assert s.n_classes == len(char_corpus(max_chars=2000).vocab)
    assert s.to("cpu").classes == s.classes


# ---------------------------------------------------------------- digits and Split


def test_digits_standardized_on_train_with_constant_pixels_left_at_scale_one():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=7, stratify=y)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    std[std == 0] = 1.0
    s = digits(seed=7)
    assert s.name == "digits" and s.classes is None and s.n_classes == 10
    assert torch.equal(s.x_train, torch.tensor((x_tr - mean) / std, dtype=torch.float32))
    assert torch.equal(s.x_test, torch.tensor((x_te - mean) / std, dtype=torch.float32))
    assert torch.equal(s.y_train, torch.tensor(y_tr)) and torch.equal(s.y_test, torch.tensor(y_te))
    assert all(torch.equal(u, v) for u, v in zip(_tensors(s), _tensors(digits(seed=7)),
                                                  strict=True))
    assert s.x_test.abs().max() < 100  # no test pixel divided by a near-zero train std


def test_split_default_classes_from_labels():
    y = torch.tensor([0, 2, 1])
    assert Split("t", torch.zeros(3, 2), y, torch.zeros(3, 2), y).n_classes == 3
    assert Split("t", torch.zeros(3, 2), y, torch.zeros(3, 2), y, classes=5).n_classes == 5


# ---------------------------------------------------------------- argument errors


@pytest.mark.parametrize("fn, kwargs, name", [
    (digits, {"test_fraction": 1.0}, "test_fraction"),
    (mnist1d, {"seed": -1}, "seed"),
    (mnist1d, {"n_samples": 0}, "n_samples"),
    (mnist1d, {"n_samples": 105}, "n_samples"),
    (mnist1d, {"n_samples": 2.5}, "n_samples"),
    (mnist1d, {"test_fraction": 0.0}, "test_fraction"),
    (mnist1d, {"n_samples": 10, "test_fraction": 0.01}, "test_fraction"),
    (char_corpus, {"max_chars": 0}, "max_chars"),
    (char_sequences, {"seed": "0"}, "seed"),
    (char_sequences, {"context": 0}, "context"),
    (char_sequences, {"context": 100, "max_chars": 500}, "context"),
    (char_sequences, {"n_train": -3}, "n_train"),
    (char_sequences, {"n_test": 0}, "n_test"),
    (char_sequences, {"max_chars": True}, "max_chars"),
])
def test_argument_errors_name_the_parameter(fn, kwargs, name):
    with pytest.raises(ValueError, match=f"^{name}: "):
        fn(**kwargs)


def test_close_pairs_labels_and_gaps() -> None:
    from precisionlab.data import close_pairs

    d = close_pairs(seed=3, n_samples=4000, test_fraction=0.5, min_gap=1e-5, max_gap=1e-2)
    assert d.x_train.shape == (2000, 2) and d.x_train.dtype == torch.float32 and d.n_classes == 2
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    assert torch.equal(y, (x[:, 0] > x[:, 1]).long())
    gap = (x[:, 0].double() - x[:, 1].double()).abs()
    assert gap.min() > 0.9e-5 and gap.max() < 1.01e-2
    assert 0.6 <= float(x.min()) and float(x.max()) < 0.9
    assert torch.equal(close_pairs(seed=3, n_samples=4000, test_fraction=0.5, min_gap=1e-5,
                                   max_gap=1e-2).x_test, d.x_test)
    with pytest.raises(ValueError, match="min_gap, max_gap"):
        close_pairs(min_gap=0.2, max_gap=0.1)
