"""The trainer's tax: aezoo's ``Trainer`` against a bare PyTorch loop on the same network, in one process.

    .venv/bin/python bench/overhead.py [--threads 2] [--rounds 9] [--seconds 1.5]

The bare loop is what a user would write with nothing around it: a fused Adam, then per batch
``zero_grad``, the model's loss, ``backward``, ``step``; no logging, no NaN check, no schedule. The
Trainer runs the same model's training step with its defaults (fused Adam, the NaN check on each loss,
metrics averaged for the log every 50 steps, the learning-rate schedule), in memory (``run_dir=None``;
``--run-dir`` trains into a temporary directory, adding metrics.jsonl, the final checkpoint and model
to the time), progress bar off, validation off (``val_every`` beyond the run: it is work on other data
that the bare loop does not do, not a tax). Both see the same items in shuffled batches of the same size.

Each row alternates the two for ``--rounds`` rounds (bare first in even rounds, Trainer first in odd
ones) so that load from other processes hits both. A round is a short run on each side: new optimizers
(``Trainer.fit`` builds its own; allocating Adam's state for the 17M parameters of the conv networks
adds ~0.1 s to the first step), then one epoch over as many batches as the bare loop runs in
``--seconds`` (measured on warm-up steps; at least 10), timed around the whole call (``Trainer.fit``:
set-up included). Reported: the median samples/s of each, their ratio, and the median of the ratios of
the two sides' runs in each round. The target is judged on the last: the two runs of a round share the
machine's load, while the ratio of medians can compare rounds from different load regimes when other
processes start or stop during a row. The JSON keeps every round.

Rows: the MLP VAE of bench/vs_pythae.py (784-512-10) at batch 64 and 256; its convolutional VAE
(pythae's MNIST benchmark networks) and VQ-VAE (pythae's MNIST ResNet networks); and a small adversarial
model (encoder, decoder, discriminator; one forward pass and three losses routed to three optimizers, as
VAE-GAN), which the bare loop trains with ``torch.autograd.backward(loss, inputs=...)``.
Target: the Trainer at least 0.9x the bare loop in every row. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import aezoo
from aezoo.env import machine_info
from aezoo.io import write_json
from aezoo.models.base import Autoencoder, LossStep, ModelConfig, Optim
from aezoo.outputs import Batch, Encoded
from aezoo.rng import seeded
from vs_pythae import conv_decoder, conv_encoder, vq_decoder, vq_encoder


class Adversarial(Autoencoder):
    """A VAE-GAN in miniature: MLP encoder (784-512-2z), decoder (z-512-784) and discriminator (784-512-1,
    its hidden layer the feature space of the reconstruction loss); Larsen et al. 2016, Algorithm 1."""

    name = "bench-adversarial"
    GAMMA = 1e-2  # weight of the feature-space reconstruction in the decoder's loss

    def __init__(self, latent: int = 10):
        super().__init__(ModelConfig(input_shape=(1, 28, 28)))
        self.latent = latent
        with seeded(0):
            self.encoder = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 2 * latent))
            self.decoder = nn.Sequential(nn.Linear(latent, 512), nn.ReLU(), nn.Linear(512, 784))
            self.disc_features = nn.Sequential(nn.Linear(784, 512), nn.ReLU())
            self.disc_head = nn.Linear(512, 1)

    def optimizers(self):
        return {"encoder": Optim(self.encoder.parameters()), "decoder": Optim(self.decoder.parameters()),
                "disc": Optim([*self.disc_features.parameters(), *self.disc_head.parameters()])}

    def encode(self, x):
        mean, _ = self.encoder(x.flatten(1)).chunk(2, dim=1)
        return Encoded(mean)

    def decode(self, z):
        return torch.sigmoid(self.decoder(z)).view(-1, 1, 28, 28)

    def losses(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One forward pass; the encoder's, decoder's and discriminator's losses."""
        x = x.flatten(1)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        z = mean + torch.randn_like(mean) * (0.5 * logvar).exp()
        rec = torch.sigmoid(self.decoder(z))
        fake = torch.sigmoid(self.decoder(torch.randn_like(z)))
        f_real, f_rec, f_fake = self.disc_features(x), self.disc_features(rec), self.disc_features(fake)
        d_real, d_rec, d_fake = self.disc_head(f_real), self.disc_head(f_rec), self.disc_head(f_fake)
        kl = 0.5 * (mean.square() + logvar.exp() - 1 - logvar).sum(1).mean()
        feature = (f_real - f_rec).square().sum(1).mean()
        gan = F.softplus(-d_real).mean() + F.softplus(d_rec).mean() + F.softplus(d_fake).mean()
        return {"encoder": kl + feature, "decoder": self.GAMMA * feature - gan, "disc": gan}

    def training_step(self, batch, ctx):
        losses = self.losses(batch.x)
        ctx.backward(losses["encoder"], "encoder", retain_graph=True)
        ctx.backward(losses["decoder"], "decoder", retain_graph=True)
        ctx.backward(losses["disc"], "disc")
        ctx.step()
        return {"loss_" + k: v.detach() for k, v in losses.items()}


def fused_adam(params) -> torch.optim.Adam:
    return torch.optim.Adam(list(params), lr=1e-3, fused=True)


class Bare:
    """The bare loop over ``model``: one call is one short run (new optimizers, as ``Trainer.fit`` builds
    its own; their state is allocated at the first step), one epoch over ``steps`` batches."""

    def __init__(self, model):
        self.model = model.train()
        if isinstance(model, Adversarial):
            self.groups = {name: list(spec.params) for name, spec in model.optimizers().items()}
        else:
            self.groups = {"main": list(model.parameters())}
        self.epoch = 0

    def step(self, x: torch.Tensor, step: int) -> None:
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        if isinstance(self.model, Adversarial):
            losses = self.model.losses(x)
            torch.autograd.backward(losses["encoder"], inputs=self.groups["encoder"], retain_graph=True)
            torch.autograd.backward(losses["decoder"], inputs=self.groups["decoder"], retain_graph=True)
            torch.autograd.backward(losses["disc"], inputs=self.groups["disc"])
        else:
            self.model.loss(Batch(x), LossStep(step)).loss.backward()
        for opt in self.opts.values():
            opt.step()

    def epoch_of(self, x: torch.Tensor, batch: int, steps: int) -> None:
        self.opts = {name: fused_adam(ps) for name, ps in self.groups.items()}
        order = torch.from_numpy(np.random.default_rng([0, self.epoch]).permutation(len(x)))
        for i in range(steps):
            self.step(x[order[i * batch:(i + 1) * batch]], i)
        self.epoch += 1


def build(row: str, shape):
    """A fresh model of ``row`` under a fixed seed (the bare loop and the Trainer train twins)."""
    torch.manual_seed(0)
    if row.startswith("mlp"):
        return aezoo.create("vae", input_shape=shape, widths=[512], latent_dim=10, activation="relu",
                            likelihood="bernoulli")
    if row == "conv":
        m = aezoo.create("vae", input_shape=shape, arch="conv", latent_dim=16, likelihood="bernoulli")
        m.encoder, m.decoder = conv_encoder(16), conv_decoder(16)
        return m
    if row == "vqvae":
        m = aezoo.create("vqvae", input_shape=shape, num_codes=128, code_dim=16, hidden=128, ema=False)
        m.encoder, m.decoder = vq_encoder(16), vq_decoder(16)
        return m
    return Adversarial()


ROWS = {  # key: (label, batch)
    "mlp64": ("MLP VAE 784-512-10 (vs_pythae default)", 64),
    "mlp256": ("MLP VAE 784-512-10 (vs_pythae default)", 256),
    "conv": ("conv VAE, pythae MNIST benchmark nets (z=16)", 64),
    "vqvae": ("VQ-VAE, pythae MNIST ResNet nets (K=128, D=16)", 64),
    "adversarial": ("adversarial MLP, 3 optimizers, routed losses", 64),
}


def measure(row: str, ds, a) -> dict:
    label, batch = ROWS[row]
    load_before = os.getloadavg()[0]
    bare = Bare(build(row, ds.shape))
    twin = build(row, ds.shape)
    x = ds.train.x
    # warm-up, and the number of steps a round takes: as many as the bare loop runs in --seconds (the
    # fastest of three timings: a burst of load from other processes must not shrink the rounds)
    bare.epoch_of(x, batch, 3)
    per_step = math.inf
    for _ in range(3):
        t = time.perf_counter()
        bare.epoch_of(x, batch, 5)
        per_step = min(per_step, (time.perf_counter() - t) / 5)
    steps = max(10, min(len(x) // batch, int(a.seconds / per_step)))
    train = dataclasses.replace(ds, train=ds.train.head(steps * batch), val=ds.val.head(batch))
    cfg = dict(epochs=1, batch_size=batch, progress=False, seed=0, val_every=steps + 1)

    def trainer_round(tmp: str | None) -> float:
        t = time.perf_counter()
        aezoo.Trainer(twin, train, aezoo.TrainConfig(**cfg), run_dir=tmp).fit()
        return time.perf_counter() - t

    def bare_round() -> float:
        t = time.perf_counter()
        bare.epoch_of(train.train.x, batch, steps)
        return time.perf_counter() - t

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = tmp if a.run_dir else None
        trainer_round(run_dir)  # warm-up
        times = {"bare": [], "trainer": []}
        for r in range(a.rounds):
            order = ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare")
            for who in order:
                times[who].append(bare_round() if who == "bare" else trainer_round(run_dir))
    n = steps * batch
    rates = {k: [n / s for s in v] for k, v in times.items()}
    out = {"row": row, "label": label, "batch": batch, "steps_per_round": steps,
           "bare": statistics.median(rates["bare"]), "trainer": statistics.median(rates["trainer"]),
           "rounds": rates, "load_avg_1min": [load_before, os.getloadavg()[0]]}  # with this bench's own threads
    out["ratio"] = out["trainer"] / out["bare"]
    out["paired_ratio"] = statistics.median(t / b for t, b in zip(rates["trainer"], rates["bare"]))
    print(f"{row}: bare {out['bare']:,.0f}/s, trainer {out['trainer']:,.0f}/s ({out['ratio']:.2f}x, per round "
          f"{out['paired_ratio']:.2f}x; {steps} steps a round)", file=sys.stderr, flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--seconds", type=float, default=1.5, help="length of one round of one side")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {', '.join(ROWS)}")
    ap.add_argument("--run-dir", action="store_true", help="the Trainer writes a run directory (temporary)")
    ap.add_argument("--out", default="bench/results/overhead.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = [r for r in a.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        ap.error(f"unknown row {unknown[0]!r} (rows: {', '.join(ROWS)})")
    ds = aezoo.data.load("fashion-mnist", progress=False)
    results = [measure(r, ds, a) for r in rows]
    print(f"\nTrainer against a bare loop, {a.threads} threads, median of {a.rounds} alternating rounds of "
          f"~{a.seconds:g} s, fp32, run_dir={'a temporary directory' if a.run_dir else 'None'}\n")
    print("| network | batch | bare loop, samples/s | Trainer, samples/s | ratio of medians | median ratio per round |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['label']} | {r['batch']} | {r['bare']:,.0f} | {r['trainer']:,.0f} | {r['ratio']:.2f}x | "
              f"{r['paired_ratio']:.2f}x |")
    worst = min(r["paired_ratio"] for r in results)
    print(f"\nTarget Trainer >= 0.9x bare in every row (median ratio per round): "
          f"{'met' if worst >= 0.9 else 'NOT met'} (worst {worst:.2f}x)")
    write_json(a.out, {"benchmark": "overhead", "settings": vars(a), "rows": results, "target": 0.9,
                       "met": worst >= 0.9, "machine": machine_info(), "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
