"""Photo restoration: the patches: source, the photo model (residual, noise map, colour, any size without
seams), the shipped models and the commands that use them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import run_cli, run_cli_many
from test_cli import one_line_error

from aezoo import data
from aezoo.apps.restore import impulse_mask, restore_image, shipped_model
from aezoo.errors import UserError
from aezoo.models.base import LossStep, load_model, make_config
from aezoo.models.photo import PhotoRestorer, estimate_sigma
from aezoo.outputs import Batch


def photo(h: int, w: int, seed: int = 0, grey: bool = False) -> np.ndarray:
    """A smooth picture with edges: gradients, a disc and stripes (uint8)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    a = 0.5 + 0.3 * np.sin(6 * x + rng.random() * 3) * np.cos(4 * y)
    a = a + 0.2 * ((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.05) - 0.15 * (np.sin(40 * x) > 0.6) * (y > 0.7)
    rgb = np.stack([a, np.roll(a, 7, 1) * 0.9, 1 - a * 0.8], -1)
    return (np.clip(a if grey else rgb, 0, 1) * 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(photo(300, 200, 0)).save(d / "a.jpg", quality=95)
    Image.fromarray(photo(90, 160, 1, grey=True)).save(d / "b.png")
    Image.fromarray(photo(120, 120, 2)).convert("P").save(d / "c.gif")
    (d / "sub").mkdir()
    Image.fromarray(photo(400, 500, 3)).save(d / "sub" / "d.webp")
    Image.fromarray(photo(64, 64, 4)).save(d / "e.bmp")
    Image.fromarray(photo(20, 20, 5)).save(d / "tiny.png")  # smaller than a crop: skipped
    return d


def tiny_model(task: str = "denoise", channels: int = 1) -> PhotoRestorer:
    torch.manual_seed(0)
    m = PhotoRestorer(make_config(PhotoRestorer, overrides={"input_shape": [channels, 32, 32], "depth": 4,
                                                            "width": 8, "task": task}))
    for p in m.parameters():  # a network that does something, not the zero-initialised last layer
        torch.nn.init.normal_(p, std=0.1)
    return m.eval()


# --- the patches: source ----------------------------------------------------------------------
def test_patches_are_seeded_crops_of_every_photograph(folder):
    a = data.load(f"patches:{folder}?size=32&n=200&val=20&max_side=256")
    b = data.load(f"patches:{folder}?size=32&n=200&val=20&max_side=256")
    c = data.load(f"patches:{folder}?size=32&n=200&val=20&max_side=256&seed=1")
    assert a.shape == (3, 32, 32) and len(a.train) == 200 and len(a.val) == len(a.test) == 20
    assert torch.equal(a.train.x[:50], b.train.x[:50]) and not torch.equal(a.train.x[:50], c.train.x[:50])
    assert torch.equal(a.train.x[7], a.train.x[7:8][0])  # an item is the same alone or in a batch
    table = a.train.x.table
    assert set(table[:, 0]) == set(range(5)) - {0} and a.meta["held_out"] == ["a.jpg"]  # five usable: one held out
    assert a.meta["skipped_small"] == ["tiny.png"]
    x = a.train.x[:]
    assert x.min() >= 0 and x.max() <= 1 and x.std() > 0.05
    grey = data.load(f"patches:{folder}?size=16&n=10&val=2&grey=true")
    assert grey.shape == (1, 16, 16)


def test_patches_shrink_photographs_and_bound_the_decoded_cache(folder):
    ds = data.load(f"patches:{folder}?size=16&n=300&val=4&max_side=100&memory=0")
    cache = ds.train.x.photos
    ds.train.x[:]  # every crop read once, photograph by photograph
    assert len(cache._held) == 1  # a budget of 0 MB keeps one decoded photograph at a time
    assert max(cache[4].shape[1:]) == 100  # d.webp, 500x400, shrunk to a longer side of 100
    top, left = ds.train.x.table[:, 1:3].max(0)
    assert top <= 100 - 16 and left <= 100 - 16


def test_patches_one_line_errors(folder, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    (tmp_path / "small").mkdir()
    Image.fromarray(photo(20, 20)).save(tmp_path / "small" / "s.png")
    cases = [(f"patches:{tmp_path / 'missing'}", "no such folder"),
             (f"patches:{tmp_path / 'empty'}", "no image files"),
             (f"patches:{tmp_path / 'bad'}", "cannot read the image"),
             (f"patches:{tmp_path / 'small'}?size=64", "smaller than a 64x64 crop"),
             (f"patches:{folder}?size=64&max_side=32", "max_side=32 is smaller"),
             (f"patches:{folder}?n=0", "at least 1"),
             (f"patches:{folder}?shape=3", "has no option 'shape'")]
    for spec, message in cases:
        with pytest.raises(UserError, match=message):
            data.load(spec)


# --- the model ---------------------------------------------------------------------------------
def test_noise_estimate_matches_the_added_noise():
    clean = torch.from_numpy(photo(256, 256, grey=True)).float()[None, None] / 255
    for sigma in (0.02, 0.1, 0.2):
        noisy = clean + sigma * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
        assert estimate_sigma(noisy).item() == pytest.approx(sigma, rel=0.1)


def test_residual_learning_starts_from_the_input():
    m = PhotoRestorer(make_config(PhotoRestorer, overrides={"input_shape": [1, 32, 32], "depth": 3, "width": 4}))
    x = torch.rand(2, 1, 33, 31)
    assert torch.equal(m.restore(x, sigma=0.1), x)  # the last layer starts at zero: no noise estimated yet
    c = torch.rand(1, 3, 20, 22)
    assert torch.allclose(m.restore(c, sigma=0.1), c, atol=1e-6)  # colour: the opponent transform inverts exactly


def test_the_noise_map_is_an_input():
    m, x = tiny_model(), torch.rand(1, 1, 32, 32)
    assert not torch.allclose(m.restore(x, sigma=0.05), m.restore(x, sigma=0.3))
    assert torch.allclose(m.restore(x), m.restore(x, sigma=estimate_sigma(x)))  # not told: estimated


def test_a_colour_network_is_ffdnets_colour_layout():
    cfg = make_config(PhotoRestorer, "zhang2018_colour", {"input_shape": [3, 32, 32]})
    assert (cfg.depth, cfg.width, round(cfg.sigma_max * 255)) == (12, 96, 75)  # Zhang et al. 2018, colour
    m = PhotoRestorer(cfg).eval()
    convs = [layer for layer in m.body if isinstance(layer, torch.nn.Conv2d)]
    assert len(convs) == 12 and convs[0].in_channels == 12 + 3 and convs[-1].out_channels == 12
    x = torch.rand(2, 3, 33, 31)
    assert torch.equal(m.restore(x, sigma=0.1), x)  # residual: the last layer starts at zero
    with pytest.raises(UserError, match="restores 3-channel pictures"):
        m.restore(x[:, :1])
    out = m.loss(Batch(torch.rand(4, 3, 32, 32)), LossStep())
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_the_colour_noise_map_has_a_level_per_channel():
    m, x = tiny_model(channels=3), torch.rand(1, 3, 32, 32)
    side = torch.full((1, 3, 32, 32), 0.1)
    one = side.clone()
    one[:, 2] = 0.3  # only the blue channel's level differs
    assert not torch.allclose(m._run(x, side), m._run(x, one))
    seen = []
    m.body[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0][:, 12:].detach()))
    m._run(x, one)  # the network reads each channel's own level, at half resolution
    assert torch.allclose(seen[0], torch.tensor([0.1, 0.1, 0.3]).view(1, 3, 1, 1).expand(1, 3, 16, 16))
    assert not torch.allclose(m.restore(x, sigma=0.05), m.restore(x, sigma=0.3))
    assert torch.allclose(m.restore(x), m.restore(x, sigma=m.noise_level(x)))  # not told: estimated


@pytest.mark.parametrize("channels", [1, 3])
def test_training_tells_the_network_the_noise_level_it_added(channels):
    m = tiny_model(channels=channels).train()
    x = torch.rand(6, channels, 64, 64)
    seen = []
    m.body[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    torch.manual_seed(3)
    m.loss(Batch(x), LossStep())
    torch.manual_seed(3)
    sigma = torch.rand(6) * m.config.sigma_max  # the step's first draw: one level per item
    inp = seen[0]
    levels = inp[:, 4 * channels:]  # the noise map: every channel, every position, the item's sigma
    assert levels.shape[1] == channels and torch.allclose(levels, sigma.view(6, 1, 1, 1).expand_as(levels))
    noise = F.pixel_shuffle(inp[:, : 4 * channels], 2) - x  # the corruption the network sees
    assert torch.allclose(noise.flatten(1).std(1), sigma, rtol=0.05, atol=1e-3)


@pytest.mark.parametrize("task,channels,net", [("denoise", 1, 1), ("denoise", 3, 1), ("inpaint", 1, 1),
                                               ("denoise", 3, 3), ("inpaint", 3, 3)])
def test_tiles_give_the_whole_picture_result(task, channels, net):
    m = tiny_model(task, net)  # net 1, pictures 3: colour through the greyscale network in opponent colours
    img = torch.from_numpy(photo(150, 133, grey=channels == 1)).float() / 255
    img = img[None] if channels == 1 else img.permute(2, 0, 1)
    img = (img + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    hole = (torch.rand(1, 150, 133, generator=torch.Generator().manual_seed(1)) < 0.1).float() if task == "inpaint" else None
    whole = restore_image(m, img, hole)
    tiled = restore_image(m, img, hole, tile=40)  # 4 x 4 tiles, odd edges
    assert whole.shape == img.shape and torch.allclose(whole, tiled, atol=1e-5)
    if hole is not None:
        assert torch.equal(whole[:, hole[0] == 0], img[:, hole[0] == 0])  # known pixels are kept exactly


def test_inpainting_training_holes_mix_boxes_strokes_and_pixels():
    preset = PhotoRestorer(make_config(PhotoRestorer, "inpaint", {"input_shape": [1, 32, 32]}))
    assert any(isinstance(layer, torch.nn.BatchNorm2d) for layer in preset.body)  # as the denoiser, DnCNN's layers
    m = tiny_model("inpaint")
    torch.manual_seed(0)
    holes = m._holes(torch.zeros(60, 1, 32, 32))
    share = holes.flatten(1).mean(1)
    assert holes.unique().tolist() == [0.0, 1.0] and 0 < share.mean() < 0.5 and share.std() > 0
    out = m.loss(Batch(torch.rand(4, 1, 32, 32)), LossStep())
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())


def test_impulse_mask_marks_pure_black_and_white():
    x = torch.full((3, 4, 4), 0.5)
    x[0, 0, 0], x[2, 1, 1] = 0.0, 1.0
    assert impulse_mask(x)[0].nonzero().tolist() == [[0, 0], [1, 1]]


# --- the shipped models and the commands -----------------------------------------------------------
def test_shipped_models_are_small_and_restore_a_photograph():
    from importlib.resources import files

    weights = files("aezoo") / "weights"
    for name in ("photo-inpaint", "photo-denoise", "photo-denoise-colour"):
        assert (weights / name / "model.safetensors").stat().st_size < 4 * 2**20
    den, inp = shipped_model(False), shipped_model(True)
    assert den.config.task == "denoise" and inp.inpaints
    colour = shipped_model(False, colour=True)
    assert colour.config.input_shape[0] == 3 and colour.config.task == "denoise"
    clean = torch.from_numpy(photo(160, 200)).float().permute(2, 0, 1) / 255
    noisy = clean + 25 / 255 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    psnr = lambda a: (-10 * torch.log10((a.clamp(0, 1) - clean).square().mean())).item()
    assert psnr(restore_image(den, noisy)) > psnr(noisy) + 6  # blind: sigma estimated
    assert psnr(restore_image(colour, noisy)) > psnr(noisy) + 6
    hole = (torch.rand(1, 160, 200, generator=torch.Generator().manual_seed(1)) < 0.2).float()
    filled = restore_image(inp, clean * (1 - hole), hole)
    assert psnr(filled) > psnr(clean * (1 - hole)) + 15


def test_denoise_and_inpaint_a_photograph_with_the_shipped_models(tmp_path):
    rng = np.random.default_rng(0)
    clean = photo(120, 90)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "noisy.png")
    sp = clean.copy()
    hit = rng.random(clean.shape[:2]) < 0.1
    sp[hit] = np.where(rng.random((hit.sum(), 1)) < 0.5, 0, 255)
    Image.fromarray(sp).save(tmp_path / "sp.png")
    rs = run_cli_many(("denoise", tmp_path / "noisy.png", "--out", tmp_path / "clean.png"),
                      ("denoise", tmp_path / "noisy.png", "--sigma", "20", "--out", tmp_path / "told.png"),
                      ("inpaint", tmp_path / "sp.png", "--impulses", "--out", tmp_path / "sp-clean.png"),
                      ("inpaint", tmp_path / "noisy.png", "--box", "10,10,30,20", "--out", tmp_path / "box.png"))
    for r in rs:
        assert r.returncode == 0, r.stderr
    err = lambda p: np.abs(np.asarray(Image.open(p), np.float32) - clean).mean()
    assert err(tmp_path / "clean.png") < 0.6 * err(tmp_path / "noisy.png")
    assert err(tmp_path / "told.png") < 0.6 * err(tmp_path / "noisy.png")
    assert err(tmp_path / "sp-clean.png") < 0.2 * err(tmp_path / "sp.png")
    assert Image.open(tmp_path / "box.png").size == (90, 120)


def test_train_a_photo_model_on_patches_and_use_it(folder, tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", "photo", "--data", f"patches:{folder}?size=32&n=64&val=8", "--out", run, "--epochs", "1",
                "--quiet", "--set", "depth=3", "--set", "width=8")
    assert r.returncode == 0, r.stderr
    assert load_model(run).body[0].in_channels == 12 + 3  # colour data: FFDNet's colour network
    Image.fromarray(photo(50, 70)).save(tmp_path / "p.png")
    r = run_cli("denoise", run, tmp_path / "p.png", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stderr
    assert Image.open(tmp_path / "o" / "p-denoised.png").size == (70, 50)


def test_photo_command_errors(tmp_path):
    Image.fromarray(photo(40, 40)).save(tmp_path / "p.png")
    cases = [(("denoise", tmp_path / "p.png", "--sigma", "300", "--out", tmp_path / "x.png"), "--sigma 300"),
             (("inpaint", tmp_path / "p.png", "--impulses", "--out", tmp_path / "x.png"), "no pure black or white"),
             (("inpaint", tmp_path / "p.png", "--impulses", "--box", "1,1,2,2", "--out", tmp_path / "x.png"), "one of them"),
             (("denoise", "--data", "digits", "--out", tmp_path / "d"), "needs a run directory")]
    for (argv, message), r in zip(cases, run_cli_many(*(argv for argv, _ in cases))):
        one_line_error(r, message)
        assert not (tmp_path / "x.png").exists()
