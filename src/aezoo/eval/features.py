"""In-domain feature extractors for the Frechet distances: a small CNN classifier of the data's images.

For 28x28 greyscale data the Fashion-MNIST classifier ships with aezoo
(``eval/weights/fmnist_classifier.safetensors``, made by ``scripts/train_classifier.py``; its test accuracy
is in the file's metadata and in BENCHMARKS.md). For other *labelled* image data the same recipe is
trained once on the data's training split and cached under ``$XDG_CACHE_HOME/aezoo`` (default ``~/.cache/aezoo``)
by the data's fingerprint; its test accuracy is reported with the distances, since features are only as
good as the classifier. Unlabelled data of another shape has no feature network. Features are the 128
units before the classification layer; distances in them are *not* Inception FID.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open
from torch import nn

from ..errors import UserError
from ..progress import bar

WEIGHTS = "fmnist_classifier.safetensors"


class FMNISTClassifier(nn.Module):
    """Two conv blocks (32, 64 channels, 3x3, max-pool) and a 128-unit hidden layer; input (B, C, H, W),
    by default (B, 1, 28, 28) with 10 classes (the shipped Fashion-MNIST classifier)."""

    def __init__(self, shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10):
        super().__init__()
        c, h, w = shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # H/2
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # H/4
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(128, classes))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))  # (B, 10) logits


def weights_path():
    return resources.files("aezoo.eval") / "weights" / WEIGHTS


def load_classifier() -> FMNISTClassifier:
    path = weights_path()
    if not path.is_file():
        raise UserError(f"{path}: the Fashion-MNIST classifier weights are missing; run scripts/train_classifier.py")
    model = FMNISTClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def classifier_info() -> dict:
    with safe_open(str(weights_path()), framework="pt") as f:
        return dict(f.metadata() or {})


@torch.no_grad()
def classifier_features(x: torch.Tensor, batch_size: int = 1000, progress: bool = False,
                        model: FMNISTClassifier | None = None) -> torch.Tensor:
    """Features (N, 128) of images ``x`` in ``model`` (default: the shipped Fashion-MNIST classifier)."""
    if model is None:
        if tuple(x.shape[1:]) != (1, 28, 28):
            raise UserError(f"classifier features need 28x28 greyscale images, got items of shape {tuple(x.shape[1:])}")
        model = load_classifier()
    model.eval()
    steps = bar(range(0, len(x), batch_size), progress=progress, desc="classifier features")
    return torch.cat([model.features(x[i : i + batch_size].float()) for i in steps])


@dataclass
class FeatureNetwork:
    """A classifier whose penultimate features the Frechet distances and precision/recall are measured in."""

    name: str  # "fmnist-classifier" (shipped) or "classifier-<fingerprint>" (trained on the data)
    model: FMNISTClassifier
    test_accuracy: float

    def __call__(self, x: torch.Tensor, progress: bool = False) -> torch.Tensor:
        return classifier_features(x, progress=progress, model=self.model)


def fingerprint(dataset) -> str:
    """A short hash of a dataset's training split: its shape, its labels and every 1 in ~2,000 items."""
    x, y = dataset.train.x, dataset.train.y
    h = hashlib.sha256(repr((tuple(x.shape), dataset.kind)).encode())
    h.update(x[:: max(1, len(x) // 2000)].float().contiguous().numpy().tobytes())
    if y is not None:
        h.update(y.long().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def features_for(dataset, progress: bool = False) -> FeatureNetwork | None:
    """The feature network for an image dataset: the shipped classifier for 28x28 greyscale items, else a
    classifier trained on the data's labels (cached by fingerprint); None when there is none to be had
    (not images, no labels, or items smaller than 4x4)."""
    if dataset.kind != "image" or len(dataset.shape) != 3:
        return None
    if tuple(dataset.shape) == (1, 28, 28) and weights_path().is_file():
        return FeatureNetwork("fmnist-classifier", load_classifier(), float(classifier_info()["test_accuracy"]))
    if dataset.train.y is None or min(dataset.shape[1:]) < 4:
        return None
    return trained_features(dataset, progress)


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aezoo"


def trained_features(dataset, progress: bool = False) -> FeatureNetwork:
    """The recipe of the shipped classifier trained on ``dataset``, once: cached by the data's fingerprint."""
    from safetensors import SafetensorError

    from ..io import save_tensors

    key = fingerprint(dataset)
    path = cache_dir() / "features" / f"{key}.safetensors"
    classes = int(torch.cat([dataset.train.y, dataset.test.y if dataset.test.y is not None else dataset.train.y]).max()) + 1
    model = FMNISTClassifier(tuple(dataset.shape), classes)
    if path.is_file():
        try:
            model.load_state_dict(load_file(str(path)))
            with safe_open(str(path), framework="pt") as f:
                acc = float((f.metadata() or {})["test_accuracy"])
            return FeatureNetwork(f"classifier-{key}", model.eval(), acc)
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError):
            pass  # a damaged cache entry: train again and replace it
    acc = train_classifier(model, dataset, progress=progress)
    try:
        save_tensors(path, {k: v.contiguous() for k, v in model.state_dict().items()},
                     metadata={"test_accuracy": f"{acc:.4f}", "data": dataset.spec})
    except (OSError, UserError):
        pass  # a cache that cannot be written only costs the training next time
    return FeatureNetwork(f"classifier-{key}", model.eval(), acc)


def train_classifier(model: FMNISTClassifier, dataset, epochs: int = 8, max_steps: int = 3000, seed: int = 0,
                     progress: bool = False) -> float:
    """Train ``model`` on ``dataset``'s training labels (Adam, one-cycle schedule peaking at 3e-3, batch 128,
    ``epochs`` passes or ``max_steps`` steps, whichever is fewer); return its test accuracy."""
    import torch.nn.functional as F

    from ..data import batches
    from ..rng import seeded

    per_epoch = max(1, len(dataset.train) // 128)
    epochs = max(1, min(epochs, math.ceil(max_steps / per_epoch)))
    steps = epochs * per_epoch
    with seeded(seed):
        opt = torch.optim.Adam(model.parameters(), 1e-3)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
        model.train()
        with bar(total=steps, progress=progress, desc="feature classifier", unit="step") as done:
            for epoch in range(epochs):
                for batch in batches(dataset.train, 128, shuffle=True, seed=seed, epoch=epoch, drop_last=True):
                    opt.zero_grad()
                    F.cross_entropy(model(batch.x.float()), batch.y.long()).backward()
                    opt.step()
                    sched.step()
                    done.update()
    model.eval()
    test = dataset.test if dataset.test.y is not None else dataset.val
    with torch.no_grad():
        pred = torch.cat([model(test.x[i : i + 1000].float()).argmax(1) for i in range(0, len(test.x), 1000)])
    return float((pred == test.y.long()).float().mean())
