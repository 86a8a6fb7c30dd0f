"""Train the Fashion-MNIST classifier whose features the sample-quality metrics use, and save it into
the package (src/aezoo/eval/weights/fmnist_classifier.safetensors) with its test accuracy in the metadata.

    .venv/bin/python scripts/train_classifier.py [--epochs 8]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import aezoo
from aezoo.eval.features import FMNISTClassifier, weights_path
from aezoo.io import atomic_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    ds = aezoo.data.load("fashion-mnist")
    model = FMNISTClassifier()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    steps = a.epochs * (len(ds.train) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=steps)
    t0 = time.time()
    for epoch in range(a.epochs):
        model.train()
        for batch in aezoo.data.batches(ds.train, 128, shuffle=True, seed=a.seed, epoch=epoch, drop_last=True):
            x = batch.x + 0.0
            opt.zero_grad()
            F.cross_entropy(model(x), batch.y).backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            val = (model(ds.val.x).argmax(1) == ds.val.y).float().mean().item()
        print(f"epoch {epoch + 1}: validation accuracy {val:.4f} ({time.time() - t0:.0f} s)", flush=True)
    with torch.no_grad():
        test = (torch.cat([model(ds.test.x[i:i + 1000]) for i in range(0, 10000, 1000)]).argmax(1) == ds.test.y)
    acc = test.float().mean().item()
    print(f"test accuracy {acc:.4f}")
    meta = {"test_accuracy": f"{acc:.4f}", "epochs": str(a.epochs), "seed": str(a.seed), "data": "fashion-mnist",
            "made_by": "scripts/train_classifier.py"}
    path = weights_path()
    with atomic_path(str(path)) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp, metadata=meta)
    print(f"written to {path}")


if __name__ == "__main__":
    main()
