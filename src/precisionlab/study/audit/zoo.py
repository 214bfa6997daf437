"""Models and data a reader can audit at once, built from what the book already has.

Each function takes no arguments, so it can be named on the command line, e.g.

    precisionlab audit precisionlab.study.audit.zoo:mlp precisionlab.study.audit.zoo:digits
    precisionlab audit precisionlab.study.audit.zoo:smollm2 \\
        precisionlab.study.audit.zoo:stdlib_text --task language-model

MODEL factories return fp32 `nn.Module`s; DATA factories return `((x_train, y_train),
(x_test, y_test))` tensors. The pretrained models load offline from their installed packages
(`precisionlab.pretrained`); a process loads each one once and hands out deep copies.

| MODEL                | DATA                | --task           |
|----------------------|---------------------|------------------|
| `mlp`, `mlp_1m`      | `digits`            | classification   |
| `regression_mlp`     | `regression_data`   | regression       |
| `minilm_classifier`  | `stdlib_sentences`  | classification   |
| `smollm2`            | `stdlib_text`       | language-model   |
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
from torch import nn

from precisionlab import data as datasets
from precisionlab import pretrained
from precisionlab.models import MLP

__all__ = ["SentenceClassifier", "digits", "minilm_classifier", "mlp", "mlp_1m",
           "regression_data", "regression_mlp", "smollm2", "stdlib_sentences", "stdlib_text"]

# Digits (8x8 images, 10 classes) with the book's MLP widths (chapters 02 and 04).
DIGITS_SIZES = (64, 256, 256, 10)
# The same task, widened to ~1 M parameters: the size the 10-minute cpu budget names.
DIGITS_1M_SIZES = (64, 1024, 896, 10)
# scikit-learn's bundled diabetes set: 442 patients, 10 features, a disease-progression score.
REGRESSION_SIZES = (10, 64, 64, 1)
TEST_FRACTION = 0.25  # held-out share of digits and diabetes (the book's digits split)

# Language model: windows of LM_CONTEXT + 1 tokens (inputs, then targets shifted by one),
# evenly spaced through each file. Train and test come from different files, so the test text
# is held out from the audit's fine-tuning. 32 tokens keep one fp32 SmolLM2 step of 2 windows
# near 2 s on one AVX2 core; 8 x 6 train and 4 x 4 test windows make a smoke audit, not a
# benchmark (its perplexity is that of a short context).
LM_CONTEXT = 32
LM_TRAIN_FILES = pretrained.STDLIB_FILES[:8]
LM_TEST_FILES = pretrained.STDLIB_FILES[8:]
LM_TRAIN_PER_FILE = 6
LM_TEST_PER_FILE = 4

# Sentence classification: the label is the module whose namespace held the documented
# function or class (imported names included, as pretrained.stdlib_sentences reads them).
# These five each have >= 18 usable docstring lines in CPython 3.11.
SENTENCE_CLASSES = ("statistics", "shutil", "os.path", "base64", "itertools")
SENTENCES_PER_CLASS = 18
SENTENCE_TOKENS = 40  # the longest of these sentences is 36 MiniLM tokens with [CLS]/[SEP]
TEST_EVERY = 3  # every third sentence of a class is a test example: 6 per class
MINILM_PAD_ID = 0  # BERT's [PAD]; a test checks it against the tokenizer


@functools.cache
def _pretrained(name: str) -> pretrained.Pretrained:
    """Pretrained model `name`, loaded (offline) once per process; tests replace this."""
    return pretrained.load(name)


def _pairs(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor
           ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    return (x_tr, y_tr), (x_te, y_te)


def mlp() -> nn.Module:
    """The book's digits MLP, 64-256-256-10 (85 k parameters), freshly initialized."""
    return MLP(list(DIGITS_SIZES))


def mlp_1m() -> nn.Module:
    """The digits MLP widened to 64-1024-896-10 (~1 M parameters), freshly initialized."""
    return MLP(list(DIGITS_1M_SIZES))


def digits() -> tuple:
    """scikit-learn's 8x8 digits, standardized float32 images and int64 labels (split seed 0)."""
    s = datasets.digits(0, TEST_FRACTION)
    return _pairs(s.x_train, s.y_train, s.x_test, s.y_test)


def regression_mlp() -> nn.Module:
    """A 10-64-64-1 MLP for the diabetes regression, freshly initialized."""
    return MLP(list(REGRESSION_SIZES))


def regression_data() -> tuple:
    """scikit-learn's bundled diabetes set (442 x 10): features and the target standardized on
    the train part, float32, targets shape (N,); split seed 0."""
    from sklearn.datasets import load_diabetes  # noqa: PLC0415 - heavy; only when wanted
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    x, y = load_diabetes(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=0)
    mean, std = x_tr.mean(axis=0), x_tr.std(axis=0)
    y_mean, y_std = y_tr.mean(), y_tr.std()

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.float32)

    return _pairs(t((x_tr - mean) / std), t((y_tr - y_mean) / y_std),
                  t((x_te - mean) / std), t((y_te - y_mean) / y_std))


def smollm2() -> nn.Module:
    """SmolLM2-135M-Instruct (causal LM, fp32 from its Q4_1 file), without a key-value cache."""
    model = copy.deepcopy(_pretrained("smollm2").model)
    model.config.use_cache = False  # training and scoring whole windows: no cache to keep
    return model


def _lm_windows(tokenizer: object, files: tuple[str, ...], per_file: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """`per_file` windows of LM_CONTEXT + 1 tokens evenly spaced through each file: (inputs,
    targets), both int64 (N, LM_CONTEXT), targets shifted by one token."""
    rows = []
    for path in files:
        text, _ = pretrained.stdlib_text(path)
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"],
                           dtype=torch.int64)
        span = LM_CONTEXT + 1
        if len(ids) < per_file * span:
            raise ValueError(f"{path}: {len(ids)} tokens, fewer than {per_file} windows of {span}")
        starts = torch.linspace(0, len(ids) - span, per_file).round().long()
        rows += [ids[s:s + span] for s in starts.tolist()]
    windows = torch.stack(rows)
    return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


def stdlib_text() -> tuple:
    """Next-token windows of standard-library source in SmolLM2's tokens: 48 train windows from
    8 files, 16 test windows from 4 other files, int64 (N, 32) inputs and shifted targets."""
    tokenizer = _pretrained("smollm2").tokenizer
    train = _lm_windows(tokenizer, LM_TRAIN_FILES, LM_TRAIN_PER_FILE)
    test = _lm_windows(tokenizer, LM_TEST_FILES, LM_TEST_PER_FILE)
    return train, test


class SentenceClassifier(nn.Module):
    """A sentence encoder with a linear head on its token states mean-pooled over the real
    tokens: the forward takes one int64 (B, L) tensor of ids padded with `pad_id`, and the
    attention mask is derived from it, so an audit can feed it like any classifier."""

    def __init__(self, encoder: nn.Module, n_classes: int, pad_id: int = MINILM_PAD_ID) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)
        self.pad_id = pad_id

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, n_classes) logits for (B, L) token ids."""
        mask = ids != self.pad_id
        hidden = self.encoder(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        weight = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1)
        return self.head(pooled)


def minilm_classifier() -> nn.Module:
    """all-MiniLM-L6-v2 (22.7 M parameters) with a mean-pooled linear head over the 5 modules
    of `stdlib_sentences`; the head is drawn from torch's global seed (the audit sets it)."""
    encoder = copy.deepcopy(_pretrained("minilm").model)
    return SentenceClassifier(encoder, len(SENTENCE_CLASSES))


def _labelled_sentences() -> tuple[list[str], list[int]]:
    """Sentences of SENTENCE_CLASSES (up to SENTENCES_PER_CLASS each, a sentence found in two
    modules dropped) and the index of the module each came from."""
    per_class = [pretrained.stdlib_sentences(SENTENCES_PER_CLASS, (m,))[0]
                 for m in SENTENCE_CLASSES]
    seen: dict[str, int] = {}
    for sentences in per_class:
        for s in sentences:
            seen[s] = seen.get(s, 0) + 1
    texts, labels = [], []
    for label, sentences in enumerate(per_class):
        kept = [s for s in sentences if seen[s] == 1]
        texts += kept
        labels += [label] * len(kept)
    return texts, labels


def stdlib_sentences() -> tuple:
    """Docstring first lines labelled by their module (5 classes): MiniLM token ids int64
    (N, 40) padded with 0, int64 labels; every third sentence of a module is a test example.
    60 train and 28 test sentences in CPython 3.11."""
    texts, labels = _labelled_sentences()
    tokenizer = _pretrained("minilm").tokenizer
    ids = tokenizer(texts, padding="max_length", truncation=True, max_length=SENTENCE_TOKENS,
                    return_tensors="pt")["input_ids"].long()
    y = torch.tensor(labels, dtype=torch.int64)
    rank = torch.zeros(len(labels), dtype=torch.int64)  # position of each sentence in its class
    for c in range(len(SENTENCE_CLASSES)):
        where = (y == c).nonzero().flatten()
        rank[where] = torch.arange(len(where))
    test = rank % TEST_EVERY == TEST_EVERY - 1
    # classes take turns (rank, then label), so the first examples an audit evaluates (it caps
    # them at eval_examples) cover every class
    order = sorted(range(len(labels)), key=lambda i: (int(rank[i]), labels[i]))
    ids, y, test = ids[order], y[order], test[order]
    return _pairs(ids[~test], y[~test], ids[test], y[test])
