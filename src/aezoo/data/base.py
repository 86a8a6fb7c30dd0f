"""The in-memory dataset every source produces, its splits and the batch iterator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Literal

import numpy as np
import torch

from ..errors import UserError
from ..outputs import Batch

SPLITS = ("train", "val", "test")


@dataclass
class Split:
    """Items ``x`` (N, *shape) as float32, when known integer labels ``y`` (N,), and item ids (names
    used by search results; by default the item's position, e.g. ``"train/12"``). With
    ``dynamic_binarize``, ``x`` holds grey values and :func:`batches` draws binary items from them."""

    x: torch.Tensor  # or, for a training split left on disk, a MappedItems (indexing it gives tensors)
    y: torch.Tensor | None = None
    ids: list[str] | None = None
    dynamic_binarize: bool = False  # binarise afresh each time an item is batched (IWAE, NVAE)

    def item_ids(self, split_name: str) -> list[str]:
        return list(self.ids) if self.ids is not None else [f"{split_name}/{i}" for i in range(len(self))]

    def head(self, n: int) -> "Split":
        """The first n items."""
        x = self.x.head(n) if hasattr(self.x, "head") else self.x[:n]  # items on disk stay there
        return Split(x, None if self.y is None else self.y[:n], None if self.ids is None else self.ids[:n],
                     self.dynamic_binarize)

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass
class Dataset:
    """Train, validation and test splits of one source.

    ``kind`` is ``"image"`` (items are (C, H, W), values in [0, 1]), ``"vector"`` (items are (D,)) or
    ``"text"`` (items are word counts (V,) over ``meta["vocabulary"]``).
    """

    spec: str
    kind: Literal["image", "vector", "text"]
    train: Split
    val: Split
    test: Split
    classes: list[str] | None = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])

    @property
    def has_labels(self) -> bool:
        return self.train.y is not None

    def split(self, name: str) -> Split:
        if name not in SPLITS:
            raise UserError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def value_range(self) -> tuple[float, float]:
        """(low, high) of the values: (0, 1) for images, the training data's extremes otherwise."""
        if self.kind == "image":
            return 0.0, 1.0
        x = self.train.x
        return float(x.min()), float(x.max())


def batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    epoch: int = 0,
    start: int = 0,
    drop_last: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[Batch]:
    """Minibatches of ``split``: one gather per batch, no per-item Python work.

    The order of epoch ``epoch`` depends only on ``(seed, epoch)``, and with ``split.dynamic_binarize``
    the binary draws of batch b only on ``(seed, epoch, b)``, so a resumed run can skip to batch
    ``start`` and see exactly the batches an uninterrupted run would have seen. ``shard=(r, n)``: the
    r-th of n contiguous parts of each batch (a rank's share of a global batch).
    """
    n = len(split)
    if shuffle:
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n))
    else:
        order = torch.arange(n)
    stop = (n // batch_size) * batch_size if drop_last else n
    r, parts = shard
    for i in range(start * batch_size, stop, batch_size):
        idx = order[i : i + batch_size]
        lo, hi = r * len(idx) // parts, (r + 1) * len(idx) // parts
        if split.dynamic_binarize:  # the draws of the whole batch, then the share
            x = bernoulli(split.x[idx], int(np.random.SeedSequence([seed, epoch, i // batch_size]).generate_state(1)[0]))
            x = x[lo:hi]
        else:
            x = split.x[idx[lo:hi]]
        idx = idx[lo:hi]
        yield Batch(x, None if split.y is None else split.y[idx], idx)


def bernoulli(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Binary items drawn with P(1) = x from a generator seeded with ``seed`` (torch's global RNG is
    left alone)."""
    return (torch.rand(x.shape, generator=torch.Generator().manual_seed(seed)) < x).float()


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def split_off(x: np.ndarray, y: np.ndarray | None, fraction: float, seed: int = 0):
    """Split ``fraction`` of the items off at random (fixed seed: the same split on every run).

    Returns ``(x_kept, y_kept, x_held, y_held)``.
    """
    n = len(x)
    n_held = int(round(n * fraction))
    if n_held < 1 or n - n_held < 1:
        raise UserError(f"too few items ({n}) to split off a {fraction:.0%} part; give more data")
    order = np.random.default_rng(seed).permutation(n)
    held, kept = np.sort(order[:n_held]), np.sort(order[n_held:])
    take = (lambda a, i: None if a is None else a[i])
    return x[kept], take(y, kept), x[held], take(y, held)


def make_dataset(
    spec: str,
    kind: str,
    x_train: np.ndarray,
    y_train: np.ndarray | None,
    x_test: np.ndarray | None = None,
    y_test: np.ndarray | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    classes: list[str] | None = None,
    meta: dict | None = None,
) -> Dataset:
    """Build a Dataset from arrays. Without a given test set, ``test_fraction`` of the items is held out;
    the validation split always comes from the training items. Splits use a fixed seed."""
    if x_test is None:
        x_train, y_train, x_test, y_test = split_off(x_train, y_train, test_fraction, seed=1)
    x_train, y_train, x_val, y_val = split_off(x_train, y_train, val_fraction, seed=0)

    def mk(x, y):
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        yt = None if y is None else torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        return Split(xt, yt)

    return Dataset(
        spec=spec,
        kind=kind,  # type: ignore[arg-type]
        train=mk(x_train, y_train),
        val=mk(x_val, y_val),
        test=mk(x_test, y_test),
        classes=classes,
        meta=meta or {},
    )


def check_finite(x: np.ndarray, where: str) -> None:
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise UserError(f"{where}: {bad} value(s) are NaN or infinite; clean the data first")
