"""denoise, inpaint, report and demo through the command line."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli, run_cli_many
from test_cli import one_line_error

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("apps")
    out = {}
    for name, corruption in (("denoise", "gaussian:0.2"), ("inpaint", "boxes:0.25")):
        r = run_cli("train", "dae", "--data", "digits", "--out", root / name, "--epochs", "3", "--quiet",
                    "--set", f"corruption={corruption}", "--set", "channels=[8,16]", "--set", "latent_dim=16")
        assert r.returncode == 0, r.stderr
        out[name] = root / name
    r = run_cli("train", "ae", "--data", "digits", "--out", root / "ae", "--epochs", "1", "--quiet",
                "--set", "widths=[16]", "--set", "latent_dim=2")
    assert r.returncode == 0, r.stderr
    out["ae"] = root / "ae"
    return out


def test_denoise_user_pictures_of_any_size(runs, tmp_path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 53, 3), dtype=np.uint8)).save(tmp_path / "colour.png")
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "grey.jpg")
    r = run_cli("denoise", runs["denoise"], tmp_path / "colour.png", tmp_path / "grey.jpg", "--out", tmp_path / "o",
                "--noise", "gaussian:0.1")
    assert r.returncode == 0, r.stderr
    out = Image.open(tmp_path / "o" / "colour-denoised.png")
    assert out.size == (53, 40) and out.mode == "RGB"
    assert Image.open(tmp_path / "o" / "grey-denoised.png").size == (64, 64)
    assert (tmp_path / "o" / "grey-noisy.png").exists()


def test_denoise_a_dataset_split(runs, tmp_path):
    r = run_cli("denoise", runs["denoise"], "--data", "digits", "--noise", "salt-pepper:0.1", "--out", tmp_path / "d")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["corruption"] == "salt-pepper:0.1" and m["psnr_restored"] > 0
    assert json.loads((tmp_path / "d" / "denoise.json").read_text()) == m
    assert Image.open(tmp_path / "d" / "denoise.png").height > Image.open(tmp_path / "d" / "denoise.png").width / 10


def test_inpaint_with_box_and_mask(runs, tmp_path):
    rng = np.random.default_rng(1)
    pic = rng.integers(0, 255, (30, 40), dtype=np.uint8)
    Image.fromarray(pic).save(tmp_path / "p.png")
    r = run_cli("inpaint", runs["inpaint"], tmp_path / "p.png", "--box", "5,6,10,8", "--out", tmp_path / "f.png")
    assert r.returncode == 0, r.stderr
    filled = np.asarray(Image.open(tmp_path / "f.png"))
    keep = np.ones_like(pic, bool)
    keep[6:14, 5:15] = False
    assert np.array_equal(filled[keep], pic[keep])  # known pixels exactly kept
    mask = np.zeros_like(pic)
    mask[20:25, 30:38] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    r = run_cli("inpaint", runs["inpaint"], tmp_path / "p.png", "--mask", tmp_path / "m.png", "--out", tmp_path / "g.png")
    assert r.returncode == 0, r.stderr
    r = run_cli("inpaint", runs["inpaint"], "--data", "digits", "--out", tmp_path / "grid.png")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["corruption"] == "boxes:0.25" and (tmp_path / "grid.png").is_file()


def test_restoration_user_errors(runs, tmp_path):
    Image.new("L", (20, 20)).save(tmp_path / "p.png")
    p, o, x = tmp_path / "p.png", tmp_path / "o", tmp_path / "x.png"
    cases = [
        (("denoise", runs["ae"], p, "--out", o), "not a restoration model"),
        (("denoise", runs["inpaint"], p, "--out", o), "aezoo inpaint"),
        (("inpaint", runs["denoise"], p, "--box", "1,1,2,2", "--out", x), "trained to denoise"),
        (("inpaint", runs["inpaint"], p, "--out", x), "--mask"),
        (("inpaint", runs["inpaint"], p, "--box", "15,15,10,10", "--out", x), "does not fit"),
        (("denoise", runs["denoise"], tmp_path / "missing.png", "--out", o), "no such file"),
        (("denoise", runs["denoise"], "--out", o), "give image files"),
        (("denoise", runs["denoise"], p, "--noise", "fog:1", "--out", o), "unknown corruption"),
        (("eval", runs["denoise"], "--refine-steps", "5"), "applies to ae models"),
        (("interpolate", runs["denoise"], "--out", x), "cannot decode a code alone"),
    ]
    for r, (_, pattern) in zip(run_cli_many(*(argv for argv, _ in cases)), cases):
        one_line_error(r, pattern)
    assert not o.exists() and not x.exists()


def test_report_sections(runs):
    for name in ("denoise", "ae"):
        html = (runs[name] / "report.html").read_text()
        for section in ("Training", "Reconstructions", "Codes", "Model card", "Test metrics"):
            assert f"<h2>{section}</h2>" in html or f"<h3>{section}</h3>" in html
        assert ("Restoration (gaussian:0.2)" in html) == (name == "denoise")
        assert ("<h2>Interpolations</h2>" in html) == (name == "ae")  # a skip-connected dae cannot decode codes
        assert "src=\"http" not in html and "<script" not in html  # self-contained


def _render(html_path, tmp_path):
    """Load the page in headless Chromium with a checker appended; returns the page title it sets."""
    checker = """<script>
    window.__errors = [];
    window.addEventListener('error', e => { document.title = 'ERROR ' + (e.message || e.target.src || ''); }, true);
    window.addEventListener('load', () => {
      if (document.title.startsWith('ERROR')) return;
      const imgs = [...document.images];
      const bad = imgs.filter(i => !(i.complete && i.naturalWidth > 0));
      document.title = bad.length ? 'BAD ' + bad.length + ' of ' + imgs.length : 'OK ' + imgs.length;
    });
    </script>"""
    page = html_path.read_text().replace("<head>", "<head>" + checker, 1)
    test_page = tmp_path / "check.html"
    test_page.write_text(page)
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom", test_page.as_uri()]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    m = re.search(r"<title>(.*?)</title>", r.stdout)
    return m.group(1) if m else f"no title (exit {r.returncode}): {r.stderr[-300:]}"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (make test installs it where apt is usable)")
def test_report_renders_in_headless_chromium(runs, tmp_path):
    title = _render(runs["denoise"] / "report.html", tmp_path)
    assert re.fullmatch(r"OK \d+", title), title
    assert int(title.split()[1]) >= 4  # curves, reconstructions, restoration, code map
    # and the checker does catch a broken image
    broken = tmp_path / "broken.html"
    broken.write_text((runs["ae"] / "report.html").read_text().replace("base64,", "base64,AAAA", 1))
    assert _render(broken, tmp_path).startswith(("BAD", "ERROR"))


def test_demo_writes_the_combined_report(tmp_path):
    r = run_cli("demo", "--data", "digits", "--out", tmp_path / "demo", "--minutes", "0.3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert "Warning" not in r.stderr, r.stderr  # nothing of ours (or reached through us) warns the user
    html = (tmp_path / "demo" / "report.html").read_text()
    assert "against PCA" in html and "Denoising" in html and "Inpainting" in html
    assert "Variational autoencoder" in html and "VQ-VAE" in html and html.count("<h2>Samples</h2>") == 2
    assert "--prior-of" in html and "prior_bits_per_code" in html
    for run in ("ae", "denoise", "inpaint", "vae", "vqvae"):
        assert (tmp_path / "demo" / run / "report.html").is_file()
    # running it again replaces the demo; a folder that is not a demo is refused
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    one_line_error(run_cli("demo", "--data", "digits", "--out", tmp_path / "mine", "--minutes", "0.7"), "not an aezoo demo")
