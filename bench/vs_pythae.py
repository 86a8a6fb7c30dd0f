"""aezoo against pythae, side by side in one run, on the same architecture, data, batch size and threads.

    .venv/bin/python -m pip install pythae==0.1.2      # the bench extra; this script installs nothing
    .venv/bin/python bench/vs_pythae.py [--epochs 10] [--batch-size 64] [--threads 2]

Rows:
1. Throughput: pythae's default MLP VAE (784-512-z, ReLU, sigmoid output, BCE loss, z = 10) trained by
   pythae's TrainingPipeline for ``--epochs`` epochs, against aezoo's ``vae`` with the same layers trained
   by aezoo's Trainer for the same epochs. Samples/s = items seen / wall-clock time of the whole call.
   The same at batch 256, and for pythae's MNIST convolutional benchmark networks (encoder 4 stride-2
   convolutions 128-256-512-1024 with batch norm, decoder a linear layer and 3 transposed convolutions
   1024-512-256-1), one epoch on the first ``--conv-items`` training images; aezoo in fp32 and bf16 (the
   bf16 row is skipped, with a note in the output and the JSON, on a CPU without native bf16).
2. Quality at equal wall-clock time: aezoo trains for as long as pythae took; both are then scored by
   the same code: test NLL (importance sampling, k = 500, 1,000 test items), Frechet distance and
   precision/recall of 5,000 samples in Fashion-MNIST classifier features, reconstruction error.
3. The IWAE paper's ordering on binarised Fashion-MNIST (pixels > 0.5): aezoo ``vae`` preset ``iwae``
   (784-200-200-50, tanh) trained with k = 1 and with k = 50 for the same number of epochs; test NLL
   (k = 1000) of the k = 50 model should be the lower.
4. VQ-VAE (``--vqvae``): pythae's ``VQVAE`` with its MNIST ResNet benchmark networks (ours: the same
   layers inside aezoo's ``vqvae``; K = 128 codes of dimension 16 on a 4x4 grid, codebook learned by the
   loss, pythae's default: its PixelCNNSampler fails on a model with ``use_ema=True``), then a
   prior: pythae's ``PixelCNNSampler`` (its masked PixelCNN, 10 layers, kernel 5) and aezoo's gated
   ``pixelcnn``. Throughput of the VQ-VAE stage at equal epochs on the first ``--vq-items`` images;
   sample quality (Frechet distance, precision/recall of 5,000 samples) after both stages with aezoo
   given pythae's wall-clock time per stage.
Prints tables and writes JSON (``--only-vqvae`` runs row 4 alone, into ``vs_pythae_vqvae.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time

import torch

import aezoo
from aezoo.apps.runs import sample_quality
from aezoo.env import machine_info
from aezoo.eval import reconstruction_metrics
from aezoo.eval.likelihood import importance_nll
from aezoo.io import write_json
from aezoo.nn.distributions import DiagonalGaussian, standard_normal_log_prob
from aezoo.train.trainer import bf16_supported
from aezoo.losses import bernoulli_nll


class PythaeAdapter(torch.nn.Module):
    """pythae's VAE seen through aezoo's evaluation protocol (encode/decode/sample/importance weights)."""

    name = "pythae-vae"

    def __init__(self, vae, latent_dim: int):
        super().__init__()
        self.vae = vae
        self.config = type("C", (), {"latent_dim": latent_dim, "input_shape": (1, 28, 28)})()

    @property
    def device(self):
        return next(self.vae.parameters()).device

    def posterior(self, x):
        out = self.vae.encoder(x)
        return DiagonalGaussian(out.embedding, out.log_covariance)

    def encode(self, x):
        from aezoo.outputs import Encoded

        q = self.posterior(x)
        return Encoded(q.mode(), q)

    def decode(self, z):
        return self.vae.decoder(z).reconstruction.view(-1, 1, 28, 28)

    def forward(self, x):
        return self.decode(self.encode(x).z)

    def sample(self, n, temperature=1.0):
        return self.decode(temperature * torch.randn(n, self.config.latent_dim, device=self.device))

    def log_importance_weights(self, x, k):
        q = self.posterior(x)
        z = q.sample(k)
        b = x.shape[0]
        p = self.decode(z.reshape(k * b, -1)).clamp(1e-6, 1 - 1e-6)
        logits = torch.log(p) - torch.log1p(-p)
        xk = x.unsqueeze(0).expand(k, *x.shape).reshape(k * b, *x.shape[1:])
        log_px = -bernoulli_nll(logits, xk).view(k, b)
        return log_px + standard_normal_log_prob(z) - q.log_prob(z)


def conv_encoder(latent: int) -> torch.nn.Module:
    """The layers of pythae's Encoder_Conv_VAE_MNIST; mean and log-variance heads as one linear layer."""
    nn = torch.nn
    layers, c = [], 1
    for ch in (128, 256, 512, 1024):
        layers += [nn.Conv2d(c, ch, 4, 2, padding=1), nn.BatchNorm2d(ch), nn.ReLU()]
        c = ch
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(1024, 2 * latent))


def conv_decoder(latent: int) -> torch.nn.Module:
    """The layers of pythae's Decoder_Conv_AE_MNIST, emitting logits (pythae: sigmoid, then BCE)."""
    nn = torch.nn
    return nn.Sequential(
        nn.Linear(latent, 1024 * 16), nn.Unflatten(1, (1024, 4, 4)),
        nn.ConvTranspose2d(1024, 512, 3, 2, padding=1), nn.BatchNorm2d(512), nn.ReLU(),
        nn.ConvTranspose2d(512, 256, 3, 2, padding=1, output_padding=1), nn.BatchNorm2d(256), nn.ReLU(),
        nn.ConvTranspose2d(256, 1, 3, 2, padding=1, output_padding=1))


def train_pythae(x: torch.Tensor, latent: int, epochs: int, batch: int, lr: float, seed: int, conv=False):
    from pythae.models import VAE, VAEConfig
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import BaseTrainerConfig

    torch.manual_seed(seed)
    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=latent, reconstruction_loss="bce")
    nets = {}
    if conv:
        from pythae.models.nn.benchmarks.mnist import Decoder_Conv_AE_MNIST, Encoder_Conv_VAE_MNIST

        nets = {"encoder": Encoder_Conv_VAE_MNIST(cfg), "decoder": Decoder_Conv_AE_MNIST(cfg)}
    model = VAE(cfg, **nets)
    with tempfile.TemporaryDirectory() as out:
        cfg = BaseTrainerConfig(output_dir=out, num_epochs=epochs, per_device_train_batch_size=batch,
                                learning_rate=lr, no_cuda=True, seed=seed)
        t = time.perf_counter()
        TrainingPipeline(training_config=cfg, model=model)(train_data=x)
        secs = time.perf_counter() - t
    return PythaeAdapter(model.eval(), latent), secs


def train_aezoo(ds, overrides: dict, epochs, minutes, batch: int, lr: float, seed: int, conv=False,
                precision="fp32"):
    model = aezoo.create("vae", input_shape=ds.shape, **overrides)
    # pythae is given no validation data; aezoo validates once per epoch on 500 items (~1% of the time)
    ds = dataclasses.replace(ds, val=ds.val.head(500))
    if conv:  # aezoo's vae with pythae's benchmark networks in place of its own
        model.encoder, model.decoder = conv_encoder(model.config.latent_dim), conv_decoder(model.config.latent_dim)
    cfg = aezoo.TrainConfig(epochs=epochs, max_minutes=minutes, batch_size=batch, lr=lr, seed=seed,
                            checkpoint_every=0, progress=sys.stderr.isatty(), precision=precision)
    t = time.perf_counter()
    res = aezoo.Trainer(model, ds, cfg, run_dir=None).fit()
    return model.eval(), time.perf_counter() - t, res


def vq_encoder(latent: int) -> torch.nn.Module:
    """The layers of pythae's Encoder_ResNet_VQVAE_MNIST (28x28 -> a 4x4 grid of ``latent`` channels)."""
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 64, 4, 2, padding=1), nn.Conv2d(64, 128, 4, 2, padding=1),
                         nn.Conv2d(128, 128, 3, 2, padding=1), ResBlock(128, 32), ResBlock(128, 32),
                         nn.Conv2d(128, latent, 1, 1))


def vq_decoder(latent: int) -> torch.nn.Module:
    """The layers of pythae's Decoder_ResNet_VQVAE_MNIST (sigmoid output: both train on squared error)."""
    nn = torch.nn
    return nn.Sequential(nn.ConvTranspose2d(latent, 128, 1, 1), nn.ConvTranspose2d(128, 128, 3, 2, padding=1),
                         ResBlock(128, 32), ResBlock(128, 32), nn.ReLU(),
                         nn.ConvTranspose2d(128, 64, 3, 2, padding=1, output_padding=1), nn.ReLU(),
                         nn.ConvTranspose2d(64, 1, 3, 2, padding=1, output_padding=1), nn.Sigmoid())


class ResBlock(torch.nn.Module):
    def __init__(self, ch: int, inner: int):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(ch, inner, 3, padding=1), nn.ReLU(), nn.Conv2d(inner, ch, 1))

    def forward(self, x):
        return x + self.body(x)


class PythaeVQSampler(torch.nn.Module):
    """pythae's fitted PixelCNNSampler seen through aezoo's ``sample`` (for sample_quality)."""

    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler
        self.config = type("C", (), {"input_shape": (1, 28, 28)})()
        self.device = torch.device("cpu")

    def eval(self):
        return self

    def sample(self, n, temperature=1.0):
        return self.sampler.sample(num_samples=n, batch_size=min(n, 500)).view(-1, 1, 28, 28)


def vqvae_rows(a) -> dict:
    """Row 4: pythae VQVAE + PixelCNNSampler against aezoo vqvae + pixelcnn."""
    from pythae.models import VQVAE, VQVAEConfig
    from pythae.models.nn.benchmarks.mnist import Decoder_ResNet_VQVAE_MNIST, Encoder_ResNet_VQVAE_MNIST
    from pythae.pipelines import TrainingPipeline
    from pythae.samplers import PixelCNNSampler, PixelCNNSamplerConfig
    from pythae.trainers import BaseTrainerConfig

    ds = aezoo.data.load(f"fashion-mnist?limit={a.vq_items}")
    ds = dataclasses.replace(ds, val=ds.val.head(500))
    full = aezoo.data.load("fashion-mnist")
    latent, k, batch = 16, 128, a.batch_size
    torch.manual_seed(a.seed)
    cfg = VQVAEConfig(input_dim=(1, 28, 28), latent_dim=latent, num_embeddings=k, use_ema=False)
    pv = VQVAE(cfg, encoder=Encoder_ResNet_VQVAE_MNIST(cfg), decoder=Decoder_ResNet_VQVAE_MNIST(cfg))
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        TrainingPipeline(training_config=BaseTrainerConfig(output_dir=out, num_epochs=a.vq_epochs,
                                                           per_device_train_batch_size=batch, no_cuda=True,
                                                           seed=a.seed), model=pv)(train_data=ds.train.x)
        p_vq_s = time.perf_counter() - t
        sampler = PixelCNNSampler(pv.eval(), PixelCNNSamplerConfig())
        t = time.perf_counter()
        sampler.fit(ds.train.x, training_config=BaseTrainerConfig(output_dir=out, num_epochs=a.vq_epochs,
                                                                   per_device_train_batch_size=batch,
                                                                   no_cuda=True, seed=a.seed))
        p_prior_s = time.perf_counter() - t

    def ours(minutes_vq, epochs_vq, minutes_prior):
        from aezoo.models.codes import codes_of

        m = aezoo.create("vqvae", input_shape=ds.shape, num_codes=k, code_dim=latent, hidden=128, ema=False)
        m.encoder, m.decoder = vq_encoder(latent), vq_decoder(latent)
        tc = aezoo.TrainConfig(epochs=epochs_vq, max_minutes=minutes_vq, batch_size=batch, seed=a.seed,
                               checkpoint_every=0, progress=sys.stderr.isatty())
        t = time.perf_counter()
        aezoo.Trainer(m, ds, tc, run_dir=None).fit()
        vq_s = time.perf_counter() - t
        if minutes_prior is None:
            return m, vq_s, None
        m.eval()
        codes = codes_of(m, ds)
        prior = aezoo.create("pixelcnn", input_shape=codes.shape, data_kind="codes", num_codes=k)
        tc = aezoo.TrainConfig(epochs=None, max_minutes=minutes_prior, batch_size=batch, seed=a.seed,
                               checkpoint_every=0, progress=sys.stderr.isatty())
        aezoo.Trainer(prior, codes, tc, run_dir=None).fit()
        m._prior = [(prior.eval(), None)]  # pythae's grid (4x4) is not the default 7x7: attach directly
        return m, vq_s, prior

    _, a_vq_s, _ = ours(None, a.vq_epochs, None)
    n = len(ds.train)
    speed = {"pythae": a.vq_epochs * n / p_vq_s, "aezoo": a.vq_epochs * (n // batch * batch) / a_vq_s}
    print(f"vqvae throughput: pythae {speed['pythae']:,.0f}/s, aezoo {speed['aezoo']:,.0f}/s", file=sys.stderr, flush=True)
    model, _, _ = ours(p_vq_s / 60, None, p_prior_s / 60)
    q = {"pythae": sample_quality(PythaeVQSampler(sampler), full, full.test),
         "aezoo": sample_quality(model.eval(), full, full.test)}
    return {"throughput": speed, "pythae_vq_s": p_vq_s, "pythae_prior_s": p_prior_s, "quality": q}


def print_vqvae(r: dict, a) -> None:
    s, q = r["throughput"], r["quality"]
    print(f"\nVQ-VAE (pythae MNIST ResNet networks, K=128, D=16, codebook learned by the loss), batch {a.batch_size}, {a.threads} threads, "
          f"{a.vq_items} training images\n")
    print("| | pythae | aezoo | |")
    print("|---|---|---|---|")
    print(f"| VQ-VAE training throughput, samples/s ({a.vq_epochs} epochs) | {s['pythae']:,.0f} | {s['aezoo']:,.0f} | "
          f"{s['aezoo'] / s['pythae']:.2f}x |")
    for key, label, better in (("fd_fmnist", "Frechet distance of samples, FMNIST-classifier features", "lower"),
                               ("sample_precision", "sample precision", "higher"),
                               ("sample_recall", "sample recall", "higher")):
        print(f"| {label} (equal time: {r['pythae_vq_s']:.0f} s + {r['pythae_prior_s']:.0f} s prior) | "
              f"{q['pythae'][key]:.3f} | {q['aezoo'][key]:.3f} | {better} is better |")


def quality(model, ds) -> dict:
    with torch.no_grad():
        out = importance_nll(model, ds.test.x[:1000], k=500)
        out["recon_sse_per_item"] = reconstruction_metrics(model, ds.test.x)["recon_sse_per_item"]
        out.update(sample_quality(model, ds, ds.test))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--latent", type=int, default=10)
    ap.add_argument("--iwae-epochs", type=int, default=5)
    ap.add_argument("--conv-items", type=int, default=3200)
    ap.add_argument("--vq-items", type=int, default=10000)
    ap.add_argument("--vq-epochs", type=int, default=2)
    ap.add_argument("--only-vqvae", action="store_true", help="run row 4 alone")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/vs_pythae.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.only_vqvae:
        r = vqvae_rows(a)
        print_vqvae(r, a)
        write_json(a.out.replace(".json", "_vqvae.json"), {"benchmark": "vs_pythae_vqvae", "settings": vars(a), **r,
                                                             "machine": machine_info(), "date": time.strftime("%Y-%m-%d")})
        return 0
    ds = aezoo.data.load("fashion-mnist")
    same = dict(widths=[512], latent_dim=a.latent, activation="relu", likelihood="bernoulli")
    n = len(ds.train)

    p_model, p_secs = train_pythae(ds.train.x, a.latent, a.epochs, a.batch_size, a.lr, a.seed)
    a_model, a_secs, _ = train_aezoo(ds, same, a.epochs, None, a.batch_size, a.lr, a.seed)
    speed = {"pythae": a.epochs * n / p_secs, "aezoo": a.epochs * n / a_secs}
    print(f"throughput: pythae {speed['pythae']:,.0f}/s, aezoo {speed['aezoo']:,.0f}/s", file=sys.stderr, flush=True)
    rows = [(f"default MLP, batch {a.batch_size}, fp32", speed["pythae"], speed["aezoo"])]
    _, s256 = train_pythae(ds.train.x, a.latent, a.epochs, 256, a.lr, a.seed)
    _, a256, _ = train_aezoo(ds, same, a.epochs, None, 256, a.lr, a.seed)
    rows.append(("default MLP, batch 256, fp32", a.epochs * n / s256, a.epochs * n / a256))
    small = aezoo.data.load(f"fashion-mnist?limit={a.conv_items}")
    conv = dict(arch="conv", latent_dim=16, likelihood="bernoulli")
    _, pc = train_pythae(small.train.x, 16, 1, a.batch_size, a.lr, a.seed, conv=True)
    m = len(small.train) // a.batch_size * a.batch_size
    skipped = []
    for prec in ("fp32", "bf16"):
        if prec == "bf16" and not bf16_supported(torch.device("cpu")):
            skipped.append({"row": f"MNIST conv benchmark nets (z=16), batch {a.batch_size}, aezoo bf16",
                            "reason": "this CPU has no native bf16, and the Trainer refuses precision=bf16 on it"})
            print(f"skipped: {skipped[-1]['row']}: {skipped[-1]['reason']}", file=sys.stderr, flush=True)
            continue
        _, ac, _ = train_aezoo(small, conv, 1, None, a.batch_size, a.lr, a.seed, conv=True, precision=prec)
        rows.append((f"MNIST conv benchmark nets (z=16), batch {a.batch_size}, aezoo {prec}", len(small.train) / pc, m / ac))
        print(f"conv {prec}: pythae {rows[-1][1]:,.0f}/s, aezoo {rows[-1][2]:,.0f}/s", file=sys.stderr, flush=True)
    eq_model, eq_secs, eq_res = train_aezoo(ds, same, None, p_secs / 60, a.batch_size, a.lr, a.seed)
    q = {"pythae": quality(p_model, ds), "aezoo": quality(eq_model, ds)}

    bin_ds = aezoo.data.load("fashion-mnist?binarize=0.5")
    iwae = {}
    for k in (1, 50):
        m, secs, _ = train_aezoo(bin_ds, {"widths": [200, 200], "latent_dim": 50, "activation": "tanh",
                                          "iw_samples": k}, a.iwae_epochs, None, 100, a.lr, a.seed)
        iwae[k] = {"train_s": secs, **importance_nll(m, bin_ds.test.x[:1000], k=1000)}
        print(f"iwae k={k}: NLL {iwae[k]['nll_nats']:.2f} nats", file=sys.stderr, flush=True)

    print(f"\nSame architecture (pythae default MLP VAE, z={a.latent}), batch {a.batch_size}, {a.threads} threads\n")
    print("| training throughput, samples/s | pythae | aezoo | aezoo / pythae |")
    print("|---|---|---|---|")
    for label, ps, az in rows:
        print(f"| {label} | {ps:,.0f} | {az:,.0f} | {az / ps:.2f}x |")
    for s in skipped:
        print(f"\nSkipped: {s['row']} ({s['reason']}).")
    print("\n| quality at equal wall-clock time (default MLP) | pythae | aezoo | |")
    print("|---|---|---|---|")
    for key, label, better in (("nll_nats", "test NLL, nats (IS, k=500)", "lower"),
                               ("fd_fmnist", "Frechet distance, FMNIST-classifier features", "lower"),
                               ("sample_precision", "sample precision", "higher"),
                               ("sample_recall", "sample recall", "higher"),
                               ("recon_sse_per_item", "test reconstruction SSE per image", "lower")):
        if key in q["pythae"]:
            print(f"| {label} at equal time ({p_secs:.0f} s) | {q['pythae'][key]:.3f} | {q['aezoo'][key]:.3f} | "
                  f"{better} is better |")
    print(f"\nIWAE ordering on binarised Fashion-MNIST ({a.iwae_epochs} epochs each, test NLL with k=1000):\n")
    print("| training objective | test NLL, nats | train time |")
    print("|---|---|---|")
    for k, r in iwae.items():
        print(f"| {'ELBO (k=1)' if k == 1 else f'IWAE bound, k={k}'} | {r['nll_nats']:.2f} | {r['train_s']:.0f} s |")
    vq = vqvae_rows(a)
    print_vqvae(vq, a)
    write_json(a.out, {"benchmark": "vs_pythae", "settings": vars(a), "vqvae": vq, "throughput": speed, "throughput_rows": rows,
                       "skipped_rows": skipped,
                       "pythae_train_s": p_secs, "aezoo_train_s": a_secs, "equal_time_steps": eq_res.step,
                       "quality": q, "iwae": {str(k): v for k, v in iwae.items()}, "machine": machine_info(),
                       "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
