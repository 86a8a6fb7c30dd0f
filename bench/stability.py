"""Training stability of the adversarial models over seeds, not only their best run.

    .venv/bin/python bench/stability.py [--models vaegan acai alae] [--seeds 3] [--minutes 2.5] [--steps N] [--threads 2]

Each model trains on Fashion-MNIST for ``--minutes`` per seed (its CPU default config and batch size), one
run after another. Besides the families, ``--models`` takes the variants in ``VARIANTS``: each paper's
comparison baseline and the ablations of a kept or dropped setting (``vae-vaegan-nets``: VAE-GAN's own
encoder and decoder trained as a plain VAE, the baseline of Larsen et al.; ``vaegan-gan-on-recon``: the
GAN also sees reconstructions, the paper's Algorithm 1; ``alae-linear-d``: the authors' linear
discriminator). Per run: whether it diverged (the trainer stops on a NaN/inf loss and names the
optimizer), the steps done, the last logged costs of its adversary, how often the VAE-GAN's equilibrium
rule let the decoder and the discriminator update, the test pixel error (MSE) and the Frechet distance of
reconstructions (5,000 test items) and, for models that sample, of 5,000 samples, with their recall and
the mean per-pixel standard deviation of 1,000 samples. Collapse is flagged when sample recall is below
0.05 or the samples' spread is below a tenth of the data's. Writes ``bench/results/stability.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import aezoo
from aezoo import registry
from aezoo.models.vaegan import VAEGAN
from aezoo.apps.runs import build
from aezoo.eval.metrics import reconstruction_quality, sample_quality
from aezoo.env import machine_info
from aezoo.errors import TrainingDiverged
from aezoo.eval import reconstruction_metrics
from aezoo.eval.generate import sample_images
from aezoo.io import write_json

ADVERSARY = {"vaegan": ("dis_real_cost", "dis_fake_cost"), "acai": ("critic_loss", "critic_on_mix"),
             "alae": ("d_loss", "g_loss", "latent_mse")}


def last_logged(run_dir: Path) -> tuple[dict, list[dict]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "train"]
    return (train[-1] if train else {}), train


class VAEOnVAEGANNets(VAEGAN):
    """VAE-GAN's encoder and decoder trained as a VAE: Bernoulli pixel likelihood and the KL, nothing else
    (the discriminator is built but never used)."""

    def training_step(self, batch, ctx) -> dict:
        q = self.posterior(batch.x)
        h = self.decoder_input(q.sample()).view(-1, *self.start)
        for up, norm, size in zip(self.ups, self.up_norms, self.up_sizes):
            h = torch.relu(norm(up(h, output_size=size)))
        logits = 2 * self.to_image(h).float()  # (tanh(a) + 1) / 2 = sigmoid(2a): the decoder's mean
        nll = F.binary_cross_entropy_with_logits(logits, batch.x, reduction="none").flatten(1).sum(1).mean()
        loss = nll + q.kl().mean()
        ctx.backward(loss, "encoder", "decoder")
        ctx.step("encoder", "decoder")
        return {"loss": loss.detach(), "recon_nll": nll.detach()}


def linear_discriminator(model) -> None:
    """ALAE's discriminator without activations, as the authors' MNIST code."""
    for i, layer in enumerate(model.discriminator):
        if isinstance(layer, torch.nn.LeakyReLU):
            model.discriminator[i] = torch.nn.Identity()


# name -> (family, config values, what to do to the built model)
VARIANTS = {"vae-vaegan-nets": ("vaegan", {}, lambda m: VAEOnVAEGANNets(m.config).to(m.device)),
            "vaegan-gan-on-recon": ("vaegan", {"gan_on_recon": True}, None),
            "alae-linear-d": ("alae", {}, linear_discriminator)}


def make(name: str, ds, seed: int):
    family, values, change = VARIANTS.get(name, (name, {}, None))
    model = build(family, ds, None, [f"{k}={json.dumps(v)}" for k, v in values.items()], seed)
    if change is not None:
        torch.manual_seed(seed)
        model = change(model) or model
    return model, family


def one_run(name: str, seed: int, ds, a, root: Path) -> dict:
    model, family = make(name, ds, seed)
    batch = registry.get(family).TRAIN_DEFAULTS.get("batch_size", 64)
    cfg = aezoo.TrainConfig(epochs=None, max_minutes=a.minutes, max_steps=a.steps, batch_size=batch, seed=seed,
                            threads=a.threads, checkpoint_every=0, progress=sys.stderr.isatty())
    run_dir = root / f"{name}-seed{seed}"
    row = {"model": name, "seed": seed}
    try:
        res = aezoo.Trainer(model, ds, cfg, run_dir).fit()
        row.update(diverged=False, steps=res.step)
    except TrainingDiverged as e:
        row.update(diverged=True, error=str(e))
        return row
    last, logged = last_logged(run_dir)
    for key in ADVERSARY.get(family, ()):
        row[key] = last.get(key)
    for key in ("decoder_updated", "discriminator_updated"):  # averages over the logged windows
        vals = [r[key] for r in logged if key in r]
        if vals:
            row[key] = statistics.fmean(vals)
    model.eval()
    x = ds.test.x
    row["recon_mse"] = reconstruction_metrics(model, x)["recon_mse"]
    row.update(reconstruction_quality(model, ds, ds.test))
    row["finite_weights"] = all(torch.isfinite(p).all().item() for p in model.parameters())
    if model.can_sample:
        q = sample_quality(model, ds, ds.test)
        row.update(sample_fd=q.get("sample_fd"), sample_recall=q.get("sample_recall"),
                   sample_precision=q.get("sample_precision"))
        spread = float(sample_images(model, 1000, seed=0).std(0).mean())
        row["sample_spread"] = spread
        row["collapsed"] = bool(q.get("sample_recall", 1.0) < 0.05 or spread < 0.1 * float(x.std(0).mean()))
    return row


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}"
    return str(v)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["vaegan", "acai"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--minutes", type=float, default=2.5)
    p.add_argument("--steps", type=int, default=None,
                   help="also stop each run at this many steps (equal steps; give --minutes room)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--out", default="bench/results/stability.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ds = aezoo.data.load(a.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            for seed in range(a.seeds):
                print(f"{name}, seed {seed}: training for {a.minutes} min", file=sys.stderr, flush=True)
                rows.append(one_run(name, seed, ds, a, Path(tmp)))
                print("  " + json.dumps(rows[-1]), file=sys.stderr, flush=True)
    cols = ["model", "seed", "diverged", "steps", "decoder_updated", "discriminator_updated", "dis_real_cost",
            "dis_fake_cost", "critic_loss", "critic_on_mix", "d_loss", "g_loss", "latent_mse", "recon_mse",
            "fd_recon", "sample_fd", "sample_recall", "sample_spread", "collapsed"]
    cols = [c for c in cols if any(c in r for r in rows)]
    budget = f"{a.minutes} min" + (f" or {a.steps} steps" if a.steps else "")
    print(f"\nStability on {a.data}: {budget} per run, each family's batch size, seeds 0..{a.seeds - 1}\n")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(fmt(r.get(c)) for c in cols) + " |")
    keys = [k for k in ("steps", "recon_mse", "fd_recon", "sample_fd", "sample_recall") if any(k in r for r in rows)]
    summary = {}
    print(f"\nMean ± s.d. over the runs that did not diverge\n")
    print("| model | runs | diverged | collapsed | " + " | ".join(keys) + " |")
    print("|---|---|---|---|" + "---|" * len(keys))
    for name in a.models:
        runs = [r for r in rows if r["model"] == name]
        ok = [r for r in runs if not r.get("diverged")]
        s = {"runs": len(runs), "diverged": len(runs) - len(ok), "collapsed": sum(bool(r.get("collapsed")) for r in ok)}
        cells = []
        for k in keys:
            vals = [r[k] for r in ok if r.get(k) is not None]
            s[k] = statistics.fmean(vals) if vals else None
            s[k + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
            cells.append("-" if not vals else fmt(s[k]) + ("" if s[k + "_sd"] is None else f" ± {fmt(s[k + '_sd'])}"))
        summary[name] = s
        print(f"| {name} | {s['runs']} | {s['diverged']} | {s['collapsed']} | " + " | ".join(cells) + " |")
    write_json(a.out, {"machine": machine_info(), "args": vars(a), "rows": rows, "summary": summary})
    return 0


if __name__ == "__main__":
    sys.exit(main())
