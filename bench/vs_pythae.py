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
4. VQ-VAE (always part of the full run): pythae's ``VQVAE`` with its MNIST ResNet benchmark networks (ours: the same
   layers inside aezoo's ``vqvae``; K = 128 codes of dimension 16 on a 4x4 grid, codebook learned by the
   loss, pythae's default: its PixelCNNSampler fails on a model with ``use_ema=True``), then a
   prior: pythae's ``PixelCNNSampler`` (its masked PixelCNN, 10 layers, kernel 5) and aezoo's gated
   ``pixelcnn``. Throughput of the VQ-VAE stage at equal epochs on the first ``--vq-items`` images;
   sample quality (Frechet distance, precision/recall of 5,000 samples) after both stages with aezoo
   given pythae's wall-clock time per stage.
5. VAE-GAN (``--vaegan`` adds it to the full run): pythae's ``VAEGAN`` against aezoo's ``vaegan``
   (Larsen et al. 2016) on the same networks: pythae is given the encoder, decoder and discriminator
   modules of an aezoo ``vaegan`` default built under ``--seed`` (so both start from the same weights)
   behind its BaseEncoder/BaseDecoder/BaseDiscriminator interfaces, its ``reconstruction_layer`` is our
   ``feature_layer`` (the 3rd convolution's output before its norm), and it is trained by its own pipeline
   (CoupledOptimizerAdversarialTrainer) with our optimizers: RMSprop, lr 3.125e-4, alpha 0.9, weight decay
   1e-5 for each network, batch 64, constant lr, fp32. pythae feeds images in [0, 1]; the wrappers run our
   own code on them (the encoder and the discriminator see 2x - 1, the decoder returns (tanh + 1) / 2), so
   each network computes exactly what it computes inside aezoo. What still differs is pythae's loss and
   trainer: its discriminator loss is -log D(x) - log(1 - D(x_p)) (equal weights, no x~ term; ours weighs
   x by 0.66 and x~, x_p share the rest); the decoder's GAN term comes through x_p alone (ours: x~ and
   x_p), weighed by ``adversarial_loss_scale``, set to 1 - gamma so the feature loss weighs gamma as in
   ours (pythae's default 0.5); its equilibrium rule compares the real and prior costs (ours: real and
   the mean over x~, x_p), margin set to ours, 0.35 (its default 0.4); its trainer adds the decoder
   loss's gradient to the encoder's (a gamma-weighted L_llike, negligible at gamma = 5e-6); it runs the
   discriminator four times per step (x to the feature layer and in full, x~ to the feature layer, x_p)
   and the decoder twice, so batch norm sees each kind of item apart (ours: one pass over x, x~, x_p
   together, one over z, z_p); its loss takes D(x) as a probability (the wrapper applies the sigmoid to
   our logit; log clamped at -100) where ours works on logits; KL and L_llike are the same sums in both.
   Throughput: one epoch on the first ``--vaegan-items`` images after an untimed 2-batch warm-up each,
   items/s over the whole call (pythae: its data checks, a copy of the best model, the final save; aezoo:
   a validation pass on 500 items) and over the training loop alone. Quality at equal wall-clock time:
   pythae's training loop runs for ``--vaegan-minutes`` on the whole training split (a callback stops it:
   pythae has no time budget), then aezoo's ``vaegan`` and aezoo's ``vae`` (conv, 4x4 stride-2 channels
   64-128-256, z = 64, ReLU, Bernoulli likelihood, its own Adam lr 1e-3, batch 64: 1.76M parameters, the
   vaegan's encoder and decoder 1.78M) train for as long as pythae's loop took. All three are scored by the
   same code on the last weights: Frechet distance (FMNIST-classifier features) of ``--vaegan-score-items``
   samples and of the reconstructions of as many test items, sample precision/recall, reconstruction pixel
   MSE over the test split; stability: non-finite weights, samples or training errors, and the per-pixel
   standard deviation of 1,000 samples (near 0 when the generator collapsed; the data's beside it).
   Targets: aezoo's throughput at least pythae's; ``vaegan`` below ``vae`` on both Frechet distances
   (the paper's thesis), its pixel error may be higher.
Prints tables and writes JSON (``--only-vqvae`` runs row 4 alone, into ``vs_pythae_vqvae.json``;
``--only-vaegan`` row 5 alone, into ``vs_pythae_vaegan.json``). Row 5 takes 3x ``--vaegan-minutes`` plus
about 4 minutes (throughput, pythae's data checks, scoring: ~40 s per model at 5,000 items).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time

import torch

import aezoo
from aezoo.eval.metrics import reconstruction_quality, sample_quality
from aezoo.config import to_dict
from aezoo.env import machine_info
from aezoo.eval import reconstruction_metrics
from aezoo.eval.likelihood import importance_nll
from aezoo.io import write_json
from aezoo.nn.distributions import DiagonalGaussian, standard_normal_log_prob
from aezoo.train.trainer import bf16_supported
from aezoo.losses import bernoulli_nll


class PythaeAdapter(torch.nn.Module):
    """pythae's VAE (or VAEGAN: the same encoder/decoder interface) seen through aezoo's evaluation protocol
    (encode/decode/sample/importance weights)."""

    def __init__(self, vae, latent_dim: int, name: str = "pythae-vae"):
        super().__init__()
        self.vae = vae
        self.name = name
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
    if conv:  # aezoo's vae with pythae's benchmark networks in place of its own
        model.encoder, model.decoder = conv_encoder(model.config.latent_dim), conv_decoder(model.config.latent_dim)
    return fit(model, ds, epochs, minutes, batch, seed, lr, precision)


def fit(model, ds, epochs, minutes, batch: int, seed: int, lr: float | None = None, precision="fp32"):
    """aezoo's Trainer on ``model``; ``lr`` None: what the model declares. Returns (model, seconds, result)."""
    # pythae is given no validation data; aezoo validates once per epoch on 500 items (~1% of the time)
    ds = dataclasses.replace(ds, val=ds.val.head(500))
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
    for key, label, better in (("sample_fd", "Frechet distance of samples, FMNIST-classifier features", "lower"),
                               ("sample_precision", "sample precision", "higher"),
                               ("sample_recall", "sample recall", "higher")):
        print(f"| {label} (equal time: {r['pythae_vq_s']:.0f} s + {r['pythae_prior_s']:.0f} s prior) | "
              f"{q['pythae'][key]:.3f} | {q['aezoo'][key]:.3f} | {better} is better |")


# --- row 5: VAE-GAN --------------------------------------------------------------------------------------
# aezoo's vae beside the VAE-GANs: 1.76M parameters, about the 1.78M of the vaegan default's encoder and
# decoder (its discriminator adds 0.80M); trained with its own defaults (Adam, lr 1e-3)
VAE_BESIDE_VAEGAN = {"arch": "conv", "channels": [64, 128, 256], "latent_dim": 64, "activation": "relu",
                     "likelihood": "bernoulli"}


def pythae_vaegan(ours):
    """pythae's VAEGAN built around the encoder, decoder and discriminator modules of ``ours`` (an untrained
    aezoo ``vaegan``; shared, not copied), its loss settings set to ours where it has one."""
    from pythae.models import VAEGAN, VAEGANConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder

    from aezoo.models.vaegan import VAEGAN as Ours

    class Encoder(BaseEncoder):
        posterior = Ours.posterior  # our code on our module: x in [0, 1] -> 2x - 1 -> encoder -> (mean, logvar)

        def __init__(self):
            BaseEncoder.__init__(self)
            self.encoder = ours.encoder

        def forward(self, x):
            q = self.posterior(x)
            return ModelOutput(embedding=q.mean, log_covariance=q.logvar)

    class Decoder(BaseDecoder):
        generate, decode = Ours.generate, Ours.decode  # our code on our modules: (Dec(z) + 1) / 2, in [0, 1]

        def __init__(self):
            BaseDecoder.__init__(self)
            for name in ("decoder_input", "ups", "up_norms", "to_image", "start", "up_sizes"):
                setattr(self, name, getattr(ours, name))

        def forward(self, z):
            return ModelOutput(reconstruction=self.decode(z))

    class Discriminator(BaseDiscriminator):
        """Our Discriminator's layers under pythae's interface: level i <= #convs is the i-th convolution's
        output before its norm (our ``feature_layer`` counts the same way), the last level is D(x) = sigmoid of
        our logit (pythae's loss takes probabilities). Like pythae's own discriminators it stops at the
        deepest level asked for."""

        def __init__(self):
            BaseDiscriminator.__init__(self)
            self.net = ours.discriminator
            self.depth = len(self.net.convs) + 1  # the convolutions, then the head

        def forward(self, x, output_layer_levels=None):
            levels = output_layer_levels or []
            deepest = self.depth if not levels or -1 in levels else max(levels)
            out, h = ModelOutput(), 2 * x - 1  # [0, 1] -> [-1, 1], as our vaegan feeds it
            for i, (conv, norm) in enumerate(zip(self.net.convs, self.net.norms)):
                h = conv(h)
                if i + 1 in levels:
                    out[f"embedding_layer_{i + 1}"] = h
                if i + 1 == deepest:
                    return out
                h = torch.relu(norm(h))
            out["embedding"] = torch.sigmoid(self.net.head(h).squeeze(1))  # (B,)
            if self.depth in levels:
                out[f"embedding_layer_{self.depth}"] = out["embedding"]
            return out

    c = ours.config
    # adversarial_loss_scale s: pythae's decoder loss is (1 - s) L_llike - s L_GAN; ours gamma L_llike - (1 - gamma)
    # L_GAN, so s = 1 - gamma (pythae's default 0.5 would weigh the feature loss 1e5 times more)
    cfg = VAEGANConfig(input_dim=tuple(c.input_shape), latent_dim=c.latent_dim, adversarial_loss_scale=1 - c.gamma,
                       reconstruction_layer=c.feature_layer, equilibrium=c.equilibrium, margin=c.margin)
    return VAEGAN(cfg, encoder=Encoder(), decoder=Decoder(), discriminator=Discriminator())


def train_pythae_vaegan(model, ours, x, batch: int, seed: int, epochs: int | None = None,
                        seconds: float | None = None) -> dict:
    """pythae's TrainingPipeline (it picks the CoupledOptimizerAdversarialTrainer for a VAEGAN) on ``x`` with the
    optimizers ``ours`` declares (RMSprop, lr, alpha, weight decay per network), for ``epochs`` epochs or until
    ``seconds`` of its training loop have passed: pythae has no time budget, so a callback ends the run after
    the step that crosses it. Returns the seconds of the whole call (``call_s``: with pythae's data checks,
    trainer set-up, end-of-epoch copy of the best model and final save) and of its training loop alone
    (``train_s``: first step to last), the steps, and the error pythae raised (None if none)."""
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import CoupledOptimizerAdversarialTrainerConfig
    from pythae.trainers.training_callbacks import TrainingCallback

    class OutOfTime(Exception):
        pass

    class Clock(TrainingCallback):
        steps, start, last = 0, None, None

        def on_train_begin(self, training_config, **kwargs):
            self.start = self.last = time.perf_counter()

        def on_train_step_end(self, training_config, **kwargs):
            self.steps += 1
            self.last = time.perf_counter()
            if seconds is not None and self.last - self.start >= seconds:
                raise OutOfTime

    optim = {}
    for part, spec in ours.optimizers().items():  # encoder, decoder, discriminator: pythae's names too
        assert spec.kind == "rmsprop", spec.kind
        optim.update({f"{part}_optimizer_cls": "RMSprop", f"{part}_learning_rate": spec.lr,
                      f"{part}_optimizer_params": {"alpha": spec.alpha, "weight_decay": spec.weight_decay}})
    clock, error = Clock(), None
    with tempfile.TemporaryDirectory() as out:
        cfg = CoupledOptimizerAdversarialTrainerConfig(output_dir=out, num_epochs=epochs or 10**6,
                                                       per_device_train_batch_size=batch, no_cuda=True, seed=seed,
                                                       **optim)
        t0 = time.perf_counter()
        try:
            TrainingPipeline(training_config=cfg, model=model)(train_data=x, callbacks=[clock])
        except OutOfTime:
            pass
        except RuntimeError as e:  # e.g. its binary cross-entropy refuses a NaN probability
            error = f"{type(e).__name__}: {e}"
        call_s = time.perf_counter() - t0
    train_s = clock.last - clock.start if clock.start is not None else None
    return {"call_s": call_s, "train_s": train_s, "steps": clock.steps, "error": error}


def fit_or_diverge(model, ds, minutes: float, batch: int, seed: int) -> dict:
    """``fit`` for a wall-clock budget (``max_minutes`` counts aezoo's training loop), recording a divergence
    instead of raising: aezoo's Trainer stops at a non-finite loss before applying that step, so the model
    keeps the weights of its last finite step. Seconds of the whole call and of the loop, steps, error."""
    from aezoo.errors import TrainingDiverged

    t = time.perf_counter()
    try:
        _, _, res = fit(model, ds, None, minutes, batch, seed)
        out = {"train_s": res.elapsed_s, "steps": res.step, "error": None}
    except TrainingDiverged as e:
        model.eval()
        out = {"train_s": None, "steps": None, "error": str(e)}
    return {"call_s": time.perf_counter() - t, **out}


@torch.no_grad()
def stability(model, real: torch.Tensor, n: int = 1000) -> dict:
    """Signs of a failed adversarial run: non-finite weights or samples, and the spread of ``n`` samples (the
    per-pixel standard deviation over samples, averaged over pixels: near 0 for a collapsed generator; the
    same of ``n`` real items beside it)."""
    from aezoo.eval.generate import sample_images

    finite = all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
    s = sample_images(model, n, seed=0)
    return {"finite_weights": finite, "finite_samples": bool(torch.isfinite(s).all()),
            "sample_pixel_std": float(s.std(0).mean()), "data_pixel_std": float(real[:n].std(0).mean())}


def vaegan_scores(model, ds, n: int) -> dict:
    """The same measurements for every model of row 5: Frechet distances of ``n`` samples and of the
    reconstructions of the first ``n`` test items (FMNIST-classifier features), sample precision/recall,
    pixel error of reconstructing the whole test split, and ``stability``."""
    out = stability(model, ds.test.x)
    if not (out["finite_weights"] and out["finite_samples"]):
        return out  # nothing meaningful to score
    with torch.no_grad():
        out.update(reconstruction_metrics(model, ds.test.x))
        out.update(reconstruction_quality(model, ds, ds.test, n))
        out.update(sample_quality(model, ds, ds.test, n))
    return out


def vaegan_rows(a) -> dict:
    """Row 5: pythae's VAEGAN against aezoo's vaegan on the same networks, and aezoo's vae beside them."""
    full = aezoo.data.load("fashion-mnist")
    small = aezoo.data.load(f"fashion-mnist?limit={a.vaegan_items}")
    batch = a.batch_size

    def ours():  # the vaegan default, weights initialised under --seed: both libraries start from these
        return aezoo.create("vaegan", input_shape=full.shape, seed=a.seed)

    def pythae_epoch(x):
        m = ours()
        return train_pythae_vaegan(pythae_vaegan(m), m, x, batch, a.seed, epochs=1)

    def aezoo_epoch(n):
        t = time.perf_counter()
        _, _, res = fit(ours(), dataclasses.replace(small, train=small.train.head(n)), 1, None, batch, a.seed)
        return {"call_s": time.perf_counter() - t, "train_s": res.elapsed_s, "steps": res.step}

    # throughput: one epoch on the first --vaegan-items images, each library after an untimed 2-batch warm-up
    # (a process's first steps pay for oneDNN's kernel set-up)
    pythae_epoch(small.train.x[: 2 * batch])
    aezoo_epoch(2 * batch)
    n = len(small.train)
    timing = {"pythae": pythae_epoch(small.train.x), "aezoo": aezoo_epoch(n)}
    items = {"pythae": n, "aezoo": n // batch * batch}  # aezoo drops the last partial batch
    speed = {k: items[k] / timing[k]["call_s"] for k in timing}
    loop_speed = {k: items[k] / timing[k]["train_s"] for k in timing}
    print(f"vaegan throughput: pythae {speed['pythae']:,.0f}/s, aezoo {speed['aezoo']:,.0f}/s (training loops alone: "
          f"pythae {loop_speed['pythae']:,.0f}/s, aezoo {loop_speed['aezoo']:,.0f}/s)", file=sys.stderr, flush=True)

    # quality at equal wall-clock time: pythae's training loop runs for --vaegan-minutes on the whole training
    # split, then each aezoo model's (max_minutes counts its loop too) for as long as pythae's took
    m = ours()
    pm = pythae_vaegan(m)
    runs = {"pythae-vaegan": train_pythae_vaegan(pm, m, full.train.x, batch, a.seed, seconds=60 * a.vaegan_minutes)}
    budget = runs["pythae-vaegan"]["train_s"] or 60 * a.vaegan_minutes  # None: pythae failed before a step
    models = {"pythae-vaegan": PythaeAdapter(pm.eval(), m.config.latent_dim, name="pythae-vaegan"),
              "aezoo-vaegan": ours(),
              "aezoo-vae": aezoo.create("vae", input_shape=full.shape, seed=a.seed, **VAE_BESIDE_VAEGAN)}
    for name in ("aezoo-vaegan", "aezoo-vae"):
        runs[name] = fit_or_diverge(models[name], full, budget / 60, batch, a.seed)
    for name, r in runs.items():
        print(f"{name}: {r['call_s']:.0f} s, {r['steps']} steps{', ' + r['error'] if r['error'] else ''}",
              file=sys.stderr, flush=True)
    q = {name: vaegan_scores(model, full, a.vaegan_score_items) for name, model in models.items()}
    return {"throughput": speed, "throughput_loop": loop_speed, "throughput_timing": timing, "throughput_items": n,
            "equal_time": runs, "quality": q, "vaegan_config": to_dict(models["aezoo-vaegan"].config),
            "pythae_config": dataclasses.asdict(pm.model_config),
            "vae_config": to_dict(models["aezoo-vae"].config)}


def print_vaegan(r: dict, a) -> None:
    s, q, runs = r["throughput"], r["quality"], r["equal_time"]
    names = ("pythae-vaegan", "aezoo-vaegan", "aezoo-vae")
    print(f"\nVAE-GAN (the vaegan default networks in both libraries), Fashion-MNIST, batch {a.batch_size}, "
          f"{a.threads} threads\n")
    print("| | pythae VAEGAN | aezoo vaegan | aezoo vae (conv) | |")
    print("|---|---|---|---|---|")
    ls = r["throughput_loop"]
    print(f"| training throughput, items/s (1 epoch, {r['throughput_items']} images, whole call) | {s['pythae']:,.0f} | "
          f"{s['aezoo']:,.0f} | | {s['aezoo'] / s['pythae']:.2f}x (target >= 1) |")
    print(f"| the same, training loops alone | {ls['pythae']:,.0f} | {ls['aezoo']:,.0f} | | "
          f"{ls['aezoo'] / ls['pythae']:.2f}x |")
    print("| training loop, s (steps) | " + " | ".join(
        f"{runs[k]['train_s'] or runs[k]['call_s']:.0f} ({runs[k]['steps']})" for k in names) + " | equal wall-clock |")
    rows = (("sample_fd", f"Frechet distance of {a.vaegan_score_items} samples", "lower is better"),
            ("fd_recon", f"Frechet distance of reconstructions ({a.vaegan_score_items} test items)",
             "lower is better"),
            ("recon_mse", "reconstruction pixel MSE (test)", "lower is better"),
            ("sample_precision", "sample precision", "higher is better"),
            ("sample_recall", "sample recall", "higher is better"),
            ("sample_pixel_std", f"per-pixel std of samples (data: {q['aezoo-vae']['data_pixel_std']:.3f})",
             "near 0: collapsed"))
    for key, label, note in rows:
        cells = [f"{q[k][key]:.4f}" if key in q[k] else "n/a" for k in names]
        print(f"| {label} | {' | '.join(cells)} | {note} |")
    print("| finite weights and samples, no error | " + " | ".join(
        "yes" if q[k]["finite_weights"] and q[k]["finite_samples"] and not runs[k]["error"] else "NO" for k in names)
          + " | |")
    if all(k in q[n] for n in ("aezoo-vaegan", "aezoo-vae") for k in ("sample_fd", "fd_recon")):
        met = all(q["aezoo-vaegan"][k] < q["aezoo-vae"][k] for k in ("sample_fd", "fd_recon"))
        print(f"\nvaegan below vae on both Frechet distances (the paper's thesis): {'yes' if met else 'no'}")


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
    ap.add_argument("--vaegan-items", type=int, default=3200, help="row 5 throughput: one epoch on these images")
    ap.add_argument("--vaegan-minutes", type=float, default=5.0, help="row 5: pythae's training budget")
    ap.add_argument("--vaegan-score-items", type=int, default=5000, help="row 5: samples and test items scored")
    ap.add_argument("--vaegan", action="store_true", help="add row 5 to the full run")
    ap.add_argument("--only-vaegan", action="store_true", help="run row 5 alone")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/vs_pythae.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.only_vqvae or a.only_vaegan:
        for wanted, name, rows, show in ((a.only_vqvae, "vqvae", vqvae_rows, print_vqvae),
                                         (a.only_vaegan, "vaegan", vaegan_rows, print_vaegan)):
            if wanted:
                r = rows(a)
                show(r, a)
                write_json(a.out.replace(".json", f"_{name}.json"),
                           {"benchmark": f"vs_pythae_{name}", "settings": vars(a), **r, "machine": machine_info(),
                            "date": time.strftime("%Y-%m-%d")})
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
                               ("sample_fd", "Frechet distance, FMNIST-classifier features", "lower"),
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
    extra = {}
    if a.vaegan:
        extra["vaegan"] = vaegan_rows(a)
        print_vaegan(extra["vaegan"], a)
    write_json(a.out, {"benchmark": "vs_pythae", "settings": vars(a), "vqvae": vq, **extra, "throughput": speed, "throughput_rows": rows,
                       "skipped_rows": skipped,
                       "pythae_train_s": p_secs, "aezoo_train_s": a_secs, "equal_time_steps": eq_res.step,
                       "quality": q, "iwae": {str(k): v for k, v in iwae.items()}, "machine": machine_info(),
                       "date": time.strftime("%Y-%m-%d")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
