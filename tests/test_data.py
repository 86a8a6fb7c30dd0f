import gzip
import hashlib
import math

import numpy as np
import pytest
import torch
from PIL import Image

from aezoo import data
from aezoo.data import idx
from aezoo.errors import UserError

from conftest import FMNIST_DIR, needs_fmnist


def idx_bytes(a: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C, np.float32: 0x0D}[a.dtype.type]
    header = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    return header + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write_idx_set(folder, n_train=20, n_test=10, gz=True, rng=np.random.default_rng(0)):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, a in arrays.items():
        raw = idx_bytes(a)
        (folder / (stem + (".gz" if gz else ""))).write_bytes(gzip.compress(raw) if gz else raw)
    return arrays


@needs_fmnist
def test_fashion_mnist_real_files():
    ds = data.load("fashion-mnist")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    assert ds.shape == (1, 28, 28) and ds.kind == "image"
    assert ds.train.x.dtype == torch.float32 and 0 <= ds.train.x.min() and ds.train.x.max() == 1
    assert sorted(ds.test.y.unique().tolist()) == list(range(10))
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10  # the official test split is balanced
    assert ds.classes[9] == "Ankle boot"


@needs_fmnist
def test_fashion_mnist_checksums_match_the_installed_files():
    for stem, want in idx.SOURCES["fashion-mnist"].sha256.items():
        raw = gzip.decompress((FMNIST_DIR / f"{stem}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == want


def test_read_idx_round_trip_gzipped_and_plain(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(a)))
    assert np.array_equal(idx.read_idx(tmp_path / "a.idx"), a)
    assert np.array_equal(idx.read_idx(tmp_path / "a.idx.gz"), a)


@pytest.mark.parametrize("mangle,message", [
    (lambda b: b[:-7], "truncated"),
    (lambda b: b + b"\x00", "longer than its header"),
    (lambda b: b"\x12\x34" + b[2:], "wrong magic"),
    (lambda b: b[:6], "truncated"),
    (lambda b: b"", "wrong magic"),
])
def test_read_idx_rejects_malformed_files(tmp_path, mangle, message):
    raw = idx_bytes(np.zeros((3, 28, 28), np.uint8))
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(mangle(raw))
    with pytest.raises(UserError, match=message) as e:
        idx.read_idx(p)
    assert str(p) in str(e.value)


def test_read_idx_rejects_truncated_gzip(tmp_path):
    p = tmp_path / "x.gz"
    p.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:-20])
    with pytest.raises(UserError, match="x.gz"):
        idx.read_idx(p)


def test_data_dir_and_env_are_searched_first(tmp_path, monkeypatch):
    arrays = write_idx_set(tmp_path / "mine" / "mnist", gz=False)
    ds = data.load("mnist", data_dir=str(tmp_path / "mine"))
    assert len(ds.train) + len(ds.val) == 20 and len(ds.test) == 10
    assert torch.equal(ds.test.y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)))
    monkeypatch.setenv("AEZOO_DATA", str(tmp_path / "mine"))
    assert len(data.load("mnist").test) == 10


def test_download_verifies_checksums_and_caches(tmp_path, monkeypatch):
    """The download path against a local 'server' (file:// URLs): good files land in the cache,
    a file with the wrong checksum is rejected and nothing is left behind."""
    served = tmp_path / "server"
    arrays = write_idx_set(served)
    sums = {stem: hashlib.sha256(idx_bytes(a)).hexdigest() for stem, a in arrays.items()}
    src = idx.IdxSource("mnist", (served.as_uri() + "/",), sums, tuple("0123456789"))
    monkeypatch.setattr(idx, "SOURCES", {"mnist": src, "fashion-mnist": src})
    monkeypatch.setattr(idx, "search_dirs", lambda name, d: [tmp_path / "nowhere"])
    ds = data.load("mnist", progress=False)
    assert len(ds.test) == 10
    cached = sorted(p.name for p in (idx.cache_dir() / "mnist").iterdir())
    assert cached == sorted(f"{s}.gz" for s in idx.FILES)

    bad = dict(sums, **{"t10k-labels-idx1-ubyte": "0" * 64})
    monkeypatch.setattr(idx, "SOURCES", {"mnist": idx.IdxSource("mnist", src.urls, bad, src.classes)})
    (idx.cache_dir() / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="checksum mismatch"):
        idx.download(idx.SOURCES["mnist"], idx.cache_dir() / "mnist", progress=False)
    assert not (idx.cache_dir() / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in (idx.cache_dir() / "mnist").iterdir() if p.name.startswith(".")]


def test_unreachable_download_says_how_to_install(tmp_path, monkeypatch):
    src = idx.IdxSource("fashion-mnist", ((tmp_path / "void").as_uri() + "/",), {s: "0" * 64 for s in idx.FILES}, ())
    monkeypatch.setattr(idx, "SOURCES", {"fashion-mnist": src})
    monkeypatch.setattr(idx, "search_dirs", lambda name, d: [])
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion-mnist", progress=False)


def test_lines_are_seeded_lines_from_the_centre():
    a = data.load("lines?n=200&test=20&seed=3")
    b = data.load("lines?n=200&test=20&seed=3")
    c = data.load("lines?n=200&test=20&seed=4")
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.train.x, c.train.x)
    assert a.shape == (1, 32, 32) and 0 <= a.train.x.min() and a.train.x.max() == 1
    # angle 0 points right (row 16 bright from the centre to the edge, dark on the left)
    img = data.synthetic.render_lines(np.array([0.0]))[0, 0]
    assert img[15:17, 17:30].min() == 1.0 and img[15:17, :14].max() == 0.0
    # angle pi/2 points up (image rows grow downwards)
    img = data.synthetic.render_lines(np.array([math.pi / 2]))[0, 0]
    assert img[3:14, 15:17].min() > 0.999 and img[18:, :].max() == 0.0
    assert set(a.train.y.tolist()) <= set(range(10))


def test_digits():
    ds = data.load("digits")
    assert ds.shape == (1, 8, 8) and len(ds.train) + len(ds.val) + len(ds.test) == 1797
    assert ds.train.x.max() == 1.0


def _png(path, size=(10, 12), mode="L", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode == "L" else (value, 0, 0)).save(path)


def test_folder_labels_from_subfolders_and_resize(tmp_path):
    for i in range(12):
        _png(tmp_path / ("cats" if i % 2 else "dogs") / f"{i}.png", value=20 * i)
    ds = data.load(f"folder:{tmp_path}")
    assert ds.shape == (1, 12, 10) and ds.classes == ["cats", "dogs"]
    assert len(ds.train) + len(ds.val) + len(ds.test) == 12
    ds = data.load(f"folder:{tmp_path}?size=8x6&grey=false")
    assert ds.shape == (3, 8, 6)


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no image files"):
        data.load(f"folder:{tmp_path / 'empty'}")
    _png(tmp_path / "mixed" / "a.png", (10, 10))
    _png(tmp_path / "mixed" / "b.png", (12, 10))
    with pytest.raises(UserError, match="mixed image sizes.*size=HxW"):
        data.load(f"folder:{tmp_path / 'mixed'}")
    _png(tmp_path / "broken" / "a.png")
    (tmp_path / "broken" / "b.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(UserError, match="b.png"):
        data.load(f"folder:{tmp_path / 'broken'}")
    with pytest.raises(UserError, match="no such folder"):
        data.load(f"folder:{tmp_path / 'missing'}")


def test_npy_images_and_vectors(tmp_path):
    np.save(tmp_path / "imgs.npy", np.full((30, 5, 6, 3), 255, np.uint8))
    ds = data.load(f"npy:{tmp_path / 'imgs.npy'}")
    assert ds.kind == "image" and ds.shape == (3, 5, 6) and ds.train.x.max() == 1.0
    np.save(tmp_path / "vec.npy", np.random.default_rng(0).normal(size=(40, 7)))
    ds = data.load(f"npy:{tmp_path / 'vec.npy'}")
    assert ds.kind == "vector" and ds.shape == (7,)
    bad = np.zeros((10, 3))
    bad[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(UserError, match="NaN or infinite"):
        data.load(f"npy:{tmp_path / 'nan.npy'}")
    np.save(tmp_path / "obj.npy", np.array([1.0, 2.0]))
    with pytest.raises(UserError, match="array of items"):
        data.load(f"npy:{tmp_path / 'obj.npy'}")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(UserError, match="junk.npy"):
        data.load(f"npy:{tmp_path / 'junk.npy'}")


def test_npz_with_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((50, 4)), y=rng.integers(0, 3, 50), x_test=rng.random((9, 4)),
             y_test=rng.integers(0, 3, 9))
    ds = data.load(f"npz:{tmp_path / 'd.npz'}")
    assert len(ds.test) == 9 and len(ds.train) + len(ds.val) == 50 and ds.has_labels
    np.savez(tmp_path / "e.npz", q=np.zeros((5, 2)))
    with pytest.raises(UserError, match="no array named"):
        data.load(f"npz:{tmp_path / 'e.npz'}")


def test_csv(tmp_path):
    rows = ["a,b,species"] + [f"{i},{i * 0.5},{i % 3}" for i in range(30)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    ds = data.load(f"csv:{tmp_path / 't.csv'}?label=species")
    assert ds.kind == "vector" and ds.shape == (2,) and ds.has_labels
    ds = data.load(f"csv:{tmp_path / 't.csv'}")
    assert ds.shape == (3,) and not ds.has_labels
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,hello\n")
    with pytest.raises(UserError, match=r"bad.csv:3: column 'b' holds 'hello'"):
        data.load(f"csv:{tmp_path / 'bad.csv'}")
    (tmp_path / "ragged.csv").write_text("1,2\n3\n")
    with pytest.raises(UserError, match="ragged.csv:2: 1 columns"):
        data.load(f"csv:{tmp_path / 'ragged.csv'}")
    with pytest.raises(UserError, match="no column 'nope'"):
        data.load(f"csv:{tmp_path / 't.csv'}?label=nope")


@pytest.mark.parametrize("spec,message", [
    ("fashoin-mnist", "did you mean 'fashion-mnist'"),
    ("csv", "needs a path"),
    ("digits:foo", "takes no path"),
    ("lines?bogus=1", "no option 'bogus'"),
    ("lines?n=abc", "must be an integer"),
    ("lines?n", "needs a value"),
])
def test_spec_errors(spec, message):
    with pytest.raises(UserError, match=message):
        data.load(spec)


def test_binarize_option():
    ds = __import__("aezoo").data.load("digits?binarize=0.5")
    assert set(ds.train.x.unique().tolist()) == {0.0, 1.0}
    raw = __import__("aezoo").data.load("digits")
    assert torch.equal(ds.test.x, (raw.test.x > 0.5).float())
    with pytest.raises(UserError, match="binarize"):
        __import__("aezoo").data.load("digits?binarize=2")


@pytest.fixture(scope="module")
def dyn():
    return data.load("digits?binarize=dynamic")


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def test_dynamic_binarize_draws_binary_batches_around_the_grey_values(dyn):
    assert dyn.train.dynamic_binarize and not is_binary(dyn.train.x)  # grey values kept
    assert all(is_binary(b.x) for b in data.batches(dyn.train, 256, shuffle=True, seed=3))
    part = dyn.train.head(16)
    draws = torch.stack([next(data.batches(part, 16, epoch=e)).x for e in range(1000)])  # (1000, 16, 1, 8, 8)
    assert (draws.mean(0) - part.x).abs().max() < 0.08  # 5 standard deviations of a mean of 1000 draws
    assert not torch.equal(draws[0], draws[1])


def test_dynamic_binarize_depends_on_seed_and_epoch_only(dyn):
    def epoch(seed, e, start=0):
        return [b.x for b in data.batches(dyn.train, 64, shuffle=True, seed=seed, epoch=e, start=start,
                                          drop_last=True)]

    full = epoch(2, 1)
    assert all(torch.equal(a, b) for a, b in zip(full, epoch(2, 1)))
    assert not torch.equal(full[0], epoch(2, 2)[0]) and not torch.equal(full[0], epoch(3, 1)[0])
    tail = epoch(2, 1, start=5)  # a run resumed at batch 5 sees the same binary batches
    assert len(tail) == len(full) - 5 and all(torch.equal(a, b) for a, b in zip(full[5:], tail))


def test_dynamic_binarize_fixes_val_and_test_and_spares_the_global_rng(dyn):
    raw = data.load("digits")
    state = torch.get_rng_state()
    again = data.load("digits?binarize=dynamic")
    for _ in data.batches(again.train, 64, shuffle=True, seed=1):
        pass
    assert torch.equal(state, torch.get_rng_state())
    for name in ("val", "test"):
        a, b = getattr(dyn, name), getattr(again, name)
        assert not a.dynamic_binarize and is_binary(a.x) and torch.equal(a.x, b.x)
        assert not torch.equal(a.x, (getattr(raw, name).x > 0.5).float())  # drawn, not thresholded
        assert abs(a.x.mean() - getattr(raw, name).x.mean()) < 0.02


def test_dynamic_binarize_survives_head(dyn):
    assert dyn.train.head(10).dynamic_binarize
    assert not data.load("digits?binarize=0.5").train.head(10).dynamic_binarize


@pytest.mark.parametrize("value", ["dynamc", "1", "-0.1", "nan"])
def test_binarize_value_errors(value):
    with pytest.raises(UserError, match=r"binarize=.* must be a threshold in \[0, 1\) or dynamic"):
        data.load(f"digits?binarize={value}")


def test_dynamic_binarize_needs_images(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).random((40, 5), dtype=np.float32))
    with pytest.raises(UserError, match="binarize=dynamic needs image data"):
        data.load(f"npy:{tmp_path / 'v.npy'}?kind=vector&binarize=dynamic")


def test_limit_option(digits):
    ds = data.load("digits?limit=50")
    assert len(ds.train) == 50 and len(ds.test) == 50


def test_batches_resume_matches_full_epoch(digits):
    full = list(data.batches(digits.train, 64, shuffle=True, seed=2, epoch=1, drop_last=True))
    tail = list(data.batches(digits.train, 64, shuffle=True, seed=2, epoch=1, start=5, drop_last=True))
    assert len(full) == len(digits.train) // 64
    assert all(torch.equal(a.x, b.x) for a, b in zip(full[5:], tail))
    other = next(data.batches(digits.train, 64, shuffle=True, seed=2, epoch=2))
    assert not torch.equal(full[0].x, other.x)
    seen = torch.cat([b.y for b in data.batches(digits.train, 100)])
    assert torch.equal(seen, digits.train.y)  # unshuffled: every item once, in order
