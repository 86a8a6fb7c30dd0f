"""Corruption processes, the denoising/inpainting model, patch-wise restoration of large pictures."""

import numpy as np
import pytest
import torch
from PIL import Image

import aezoo
from aezoo import corrupt
from aezoo.apps.restore import restore_image
from aezoo.errors import UserError
from aezoo.models.base import Autoencoder, LossStep, ModelConfig, Restorer
from aezoo.outputs import Encoded


def test_noise_processes_have_the_stated_statistics():
    torch.manual_seed(0)
    x = torch.full((200, 1, 16, 16), 0.5)
    noisy, hole = corrupt.parse("gaussian:0.1")(x)
    assert hole is None and (noisy - x).std().item() == pytest.approx(0.1, rel=0.03)
    sp, _ = corrupt.parse("salt-pepper:0.2")(x)
    changed = sp != 0.5
    assert changed.float().mean().item() == pytest.approx(0.2, abs=0.01)
    assert set(sp[changed].unique().tolist()) == {0.0, 1.0}
    assert (sp[changed] == 1).float().mean().item() == pytest.approx(0.5, abs=0.03)
    m, _ = corrupt.parse("masking:0.3")(x)
    assert (m == 0).float().mean().item() == pytest.approx(0.3, abs=0.01) and set(m.unique().tolist()) == {0.0, 0.5}


def test_mask_processes():
    torch.manual_seed(1)
    x = torch.rand(64, 3, 20, 24)
    boxed, hole = corrupt.parse("boxes:0.25")(x)
    assert hole.shape == (64, 1, 20, 24)
    area = hole.mean((1, 2, 3))
    assert (area > 0).all() and (area <= 0.25 + 1e-6).all()
    assert torch.equal(boxed, x * (1 - hole))
    for b in range(4):  # each hole is one rectangle: its bounding box is full
        ys, xs = torch.nonzero(hole[b, 0], as_tuple=True)
        assert hole[b, 0, ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
    _, strokes = corrupt.parse("strokes:3")(x)
    assert 0 < strokes.mean() < 0.6 and set(strokes.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("spec,msg", [("blur:1", "unknown corruption"), ("gaussian", "needs a number"),
                                      ("salt-pepper:1.5", "amount must be"), ("strokes:2.5", "whole")])
def test_bad_corruption_specs(spec, msg):
    with pytest.raises(UserError, match=msg):
        corrupt.parse(spec)


def test_box_and_image_masks(tmp_path):
    m = corrupt.box_mask(10, 12, (2, 3, 4, 5))
    assert m.sum() == 20 and m[0, 0, 3, 2] == 1 and m[0, 0, 2, 2] == 0
    with pytest.raises(UserError, match="does not fit"):
        corrupt.box_mask(10, 12, (10, 0, 4, 4))
    a = np.zeros((10, 12), np.uint8)
    a[1:3, 4:8] = 255
    Image.fromarray(a).save(tmp_path / "m.png")
    assert corrupt.mask_from_image(tmp_path / "m.png", 10, 12).sum() == 8
    with pytest.raises(UserError, match="must match"):
        corrupt.mask_from_image(tmp_path / "m.png", 12, 12)


class Identity(Autoencoder, Restorer):
    """restore() returns its input: patch-wise restoration must then give back the picture exactly."""

    inpaints = False

    def __init__(self, shape=(1, 8, 8)):
        super().__init__(ModelConfig(input_shape=shape))
        self.p = torch.nn.Parameter(torch.zeros(1))

    def encode(self, x):
        return Encoded(x)

    def decode(self, z):
        return z

    def restore(self, x, hole=None, sigma=None):
        return x + 0 * self.p


@pytest.mark.parametrize("size", [(8, 8), (37, 53), (100, 9), (5, 5)])
def test_patchwise_restoration_reassembles_exactly(size):
    img = torch.rand(1, *size)
    assert torch.allclose(restore_image(Identity(), img), img, atol=1e-6)


def test_patchwise_colour_picture_with_a_grey_model():
    img = torch.rand(3, 30, 41)
    assert torch.allclose(restore_image(Identity(), img), img, atol=1e-6)


def first_conv(m):
    return m.net.down[0][0] if m.config.arch == "skip" else m.encoder.features[0]


def last_layer(m):
    return m.net.out if m.config.arch == "skip" else m.decoder


@pytest.mark.parametrize("arch", ["fullconv", "skip"])
def test_inpainting_keeps_known_pixels_and_uses_the_mask_channel(arch):
    torch.manual_seed(0)
    m = aezoo.create("dae", input_shape=(1, 8, 8), arch=arch, channels=[4, 8], latent_dim=4, corruption="boxes:0.3").eval()
    assert first_conv(m).in_channels == 2  # image + mask
    x = torch.rand(3, 1, 8, 8)
    hole = torch.zeros(3, 1, 8, 8)
    hole[:, :, 2:5, 2:5] = 1
    out = m.restore(x, hole)
    assert torch.equal(out[hole.expand_as(out) == 0], x[hole == 0])
    big = torch.rand(1, 30, 30)
    h = torch.zeros(1, 30, 30)
    h[:, 10:20, 5:9] = 1
    filled = restore_image(m, big, h)
    assert torch.equal(filled[h == 0], big[h == 0])
    # the mask changes the answer: the model is told where the holes are
    assert not torch.allclose(m.restore(x * (1 - hole), hole), m.restore(x * (1 - hole), torch.zeros_like(hole)))


@pytest.mark.parametrize("arch", ["fullconv", "skip"])
def test_inpainting_loss_counts_only_the_holes(monkeypatch, arch):
    from aezoo.corrupt import Corruption
    from aezoo.models.dae import DAE
    from aezoo.outputs import Batch

    torch.manual_seed(0)
    m = aezoo.create("dae", input_shape=(1, 8, 8), arch=arch, channels=[4, 8], latent_dim=4, corruption="boxes:0.3")
    hole = torch.zeros(4, 1, 8, 8)
    hole[:, :, 1:4, 2:6] = 1

    class FixedHole(Corruption):
        def __call__(self, x):
            return x * (1 - hole), hole

    monkeypatch.setattr(DAE, "corruption", property(lambda self: FixedHole("boxes", 0.3)))
    x = torch.rand(4, 1, 8, 8)
    base = m.loss(Batch(x), LossStep()).loss.item()
    for region, should_change in ((1 - hole, False), (hole, True)):
        handle = last_layer(m).register_forward_hook(lambda mod, inp, out: out + 5.0 * region.view(4, 1, 8, 8))
        changed = m.loss(Batch(x), LossStep()).loss.item()
        handle.remove()
        assert (abs(changed - base) > 1e-3) == should_change


def test_dae_learns_to_denoise(digits, tmp_path):
    m = aezoo.create("dae", input_shape=(1, 8, 8), arch="mlp", widths=[128], latent_dim=32, corruption="gaussian:0.2")
    aezoo.Trainer(m, digits, aezoo.TrainConfig(epochs=40, batch_size=64, progress=False), tmp_path / "r").fit()
    from aezoo.eval import restoration_metrics

    r = restoration_metrics(m, digits.test.x, m.corruption)
    assert r["psnr_restored"] > r["psnr_corrupted"] + 3


def test_the_holes_of_a_picture_are_marked_by_exactly_one_of_mask_box_or_impulses(tmp_path):
    """apps.restore.hole_of: what 'aezoo inpaint' fills, read from the one mark given."""
    from aezoo.apps.restore import hole_of, parse_box

    img = torch.full((1, 6, 8), 0.5)
    hole = hole_of(img, "pic.png", box="2,1,3,2")  # X, Y, W, H from the top-left
    want = torch.zeros(1, 6, 8)
    want[:, 1:3, 2:5] = 1
    assert torch.equal(hole, want)
    img[0, 4, 7], img[0, 0, 0] = 1.0, 0.0
    assert hole_of(img, "pic.png", impulses=True).nonzero().tolist() == [[0, 0, 0], [0, 4, 7]]
    Image.fromarray((want[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "mask.png")
    assert torch.equal(hole_of(img, "pic.png", mask=str(tmp_path / "mask.png")), want)
    with pytest.raises(UserError, match="one of them"):
        hole_of(img, "pic.png", box="2,1,3,2", impulses=True)
    with pytest.raises(UserError, match="no pure black or white pixels"):
        hole_of(torch.full((1, 6, 8), 0.5), "pic.png", impulses=True)
    with pytest.raises(UserError, match="four whole numbers"):
        parse_box("2,1,3")
