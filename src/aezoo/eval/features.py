"""An in-domain feature extractor for sample-quality metrics: a small CNN trained on Fashion-MNIST.

Its weights ship with aezoo (``eval/weights/fmnist_classifier.safetensors``, made by
``scripts/train_classifier.py``; its test accuracy is recorded in the file's metadata and in
BENCHMARKS.md). Features are the 128 units before the classification layer. Distances measured in these
features are *not* Inception FID; we call the metric "Frechet distance in Fashion-MNIST classifier
features" (FD-FMNIST).
"""

from __future__ import annotations

from importlib import resources

import torch
from safetensors.torch import load_file, safe_open
from torch import nn

from ..errors import UserError
from ..progress import bar

WEIGHTS = "fmnist_classifier.safetensors"


class FMNISTClassifier(nn.Module):
    """Two conv blocks (32, 64 channels, 3x3, max-pool) and a 128-unit hidden layer; input (B, 1, 28, 28)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
            nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(128, 10))

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
def classifier_features(x: torch.Tensor, batch_size: int = 1000, progress: bool = False) -> torch.Tensor:
    if tuple(x.shape[1:]) != (1, 28, 28):
        raise UserError(f"classifier features need 28x28 greyscale images, got items of shape {tuple(x.shape[1:])}")
    model = load_classifier()
    steps = bar(range(0, len(x), batch_size), progress=progress, desc="classifier features")
    return torch.cat([model.features(x[i : i + batch_size].float()) for i in steps])
