"""Property tests (Hypothesis) for every parser of outside input: generated inputs either load or raise
aezoo's UserError, never another exception; nothing is written beside the input. Each property runs a
fixed number of examples, derandomised, so the suite's time and result are stable."""

from __future__ import annotations

import io
import json
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aezoo
from aezoo.config import apply_overrides
from aezoo.data import parse_spec
from aezoo.data.files import load_csv, load_folder, load_npy, load_npz
from aezoo.data.idx import read_idx
from aezoo.data.text import load_text
from aezoo.errors import UserError
from aezoo.hashing import HashIndex
from aezoo.models.base import load_model
from aezoo.train import TrainConfig
from aezoo.train.checkpoint import read_checkpoint

PROPERTY = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def loads_or_refuses(fn, *args, **kw):
    """``fn`` returns, or raises UserError; anything else fails the property."""
    try:
        return fn(*args, **kw)
    except UserError:
        return None


def files_of(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*")}


def in_fresh_folder(write, load):
    """Write the input into a new folder, load it, and check that loading wrote nothing there."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write(folder)
        before = files_of(folder)
        out = loads_or_refuses(load, path)
        assert files_of(folder) == before
        return out


# --- data specs and --set values ------------------------------------------------------------------
SPEC_PARTS = st.sampled_from(["digits", "lines", "fashion-mnist", "mnist", "folder", "npy", "csv", "text", "idx",
                              "codes", "DIGITS", "", ":", "?", "&", "=", "limit", "binarize", "size", "grey", "10",
                              "-1", "0", "dynamic", "static", "x", "n", "1e9", "/nonexistent", "../", "%", "\x00"])
SPECS = st.one_of(st.text(max_size=40), st.lists(SPEC_PARTS, max_size=8).map("".join))


@PROPERTY
@given(SPECS)
def test_data_specs_parse_or_are_refused(spec):
    loads_or_refuses(parse_spec, spec)


@PROPERTY
@given(st.sampled_from(["digits", "lines"]),
       st.lists(st.tuples(st.sampled_from(["limit", "binarize", "n", "size", "seed", "x"]),
                          st.one_of(st.text(max_size=6), st.integers(-3, 3000).map(str),  # (large n: minutes of rendering)
                                    st.sampled_from(["dynamic", "static", "0.5", "1", "nan", "inf"]))), max_size=3))
def test_cheap_data_specs_load_or_are_refused(kind, options):
    spec = kind + ("?" + "&".join(f"{k}={v}" for k, v in options) if options else "")
    ds = loads_or_refuses(aezoo.data.load, spec, progress=False)
    if ds is not None:
        assert len(ds.train.x) > 0 and torch.isfinite(ds.train.x).all()


SET_KEYS = st.sampled_from(["widths", "latent_dim", "arch", "likelihood", "train.lr", "train.epochs", "train.batch_size",
                            "train.schedule", "train.max_minutes", "train.nonexistent", "a.b.c", "", "=", "kl_warmup_steps"])
SET_VALUES = st.one_of(st.text(max_size=12), st.integers(-5, 10**9).map(str),
                       st.sampled_from(["[]", "[0]", "[16, -1]", "null", "true", "1e400", "NaN", "-Infinity", '"conv"',
                                        "{}", "[[1]]", "0.5", "-0.0"]))


@PROPERTY
@given(st.lists(st.tuples(SET_KEYS, SET_VALUES), min_size=1, max_size=3))
def test_set_values_apply_or_are_refused(items):
    from aezoo.models.base import make_config
    from aezoo.registry import get

    sets = [f"{k}={v}" for k, v in items]
    model_sets = [s for s in sets if not s.startswith("train.")]
    train_sets = [s[len("train."):] for s in sets if s.startswith("train.")]
    cfg = loads_or_refuses(make_config, get("vae"), None, {"input_shape": [1, 8, 8]}, model_sets)
    if cfg is not None:
        loads_or_refuses(cfg.validate)
    tcfg = loads_or_refuses(apply_overrides, TrainConfig(), train_sets)
    if tcfg is not None:
        loads_or_refuses(tcfg.validate)


# --- files ---------------------------------------------------------------------------------------------
def idx_bytes(dims: list[int], code: int, body: bytes) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + body


IDX_FILES = st.one_of(
    st.binary(max_size=64),
    st.builds(idx_bytes, st.lists(st.integers(0, 40), max_size=4), st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x01]),
              st.binary(max_size=200)),
)


@PROPERTY
@given(IDX_FILES, st.booleans())
def test_idx_files_read_or_are_refused(data, gz):
    import gzip

    def write(folder):
        path = folder / ("x.idx.gz" if gz else "x.idx")
        path.write_bytes(gzip.compress(data) if gz else data)
        return path

    out = in_fresh_folder(write, read_idx)
    if out is not None:
        assert isinstance(out, np.ndarray)


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def full(shape, dtype, fill):
    with np.errstate(invalid="ignore"):  # NaN or inf cast to integers: any value will do
        return np.full(shape, fill).astype(dtype)


ARRAYS = st.builds(full,
                   st.lists(st.integers(0, 5), max_size=4).map(tuple),
                   st.sampled_from(["float32", "float64", "int64", "uint8", "bool", "complex64", "U3"]),
                   st.sampled_from([0, 1, 0.5, -3, float("nan"), float("inf")]))
MUTATIONS = st.tuples(st.integers(0, 200), st.binary(min_size=1, max_size=4))


def mutate(data: bytes, where_what) -> bytes:
    i, b = where_what
    i = min(i, len(data))
    return data[:i] + b + data[i + len(b):]


@PROPERTY
@given(ARRAYS, st.one_of(st.none(), MUTATIONS), st.sampled_from([None, "image", "vector"]))
def test_npy_files_load_or_are_refused(arr, mutation, kind):
    data = npy_bytes(arr)
    data = mutate(data, mutation) if mutation else data

    def write(folder):
        (folder / "a.npy").write_bytes(data)
        return folder / "a.npy"

    ds = in_fresh_folder(write, lambda p: load_npy(str(p), kind))
    if ds is not None:
        assert torch.isfinite(ds.train.x).all()


def test_npy_with_pickled_objects_is_refused_without_running_them(tmp_path):
    path = tmp_path / "evil.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(UserError):
        load_npy(str(path))


@PROPERTY
@given(st.dictionaries(st.sampled_from(["x", "y", "x_train", "y_train", "x_test", "y_test", "images", "labels", "z"]),
                       ARRAYS, max_size=4), st.one_of(st.none(), MUTATIONS))
def test_npz_files_load_or_are_refused(arrays, mutation):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = mutate(buf.getvalue(), mutation) if mutation else buf.getvalue()

    def write(folder):
        (folder / "a.npz").write_bytes(data)
        return folder / "a.npz"

    in_fresh_folder(write, lambda p: load_npz(str(p)))


CSV_TEXT = st.one_of(
    st.text(max_size=80),
    st.lists(st.lists(st.sampled_from(["1", "0.5", "-2", "nan", "inf", "", "a", "label", "x", '"', "1e999", " "]),
                      min_size=1, max_size=4).map(",".join), max_size=6).map("\n".join),
)


@PROPERTY
@given(CSV_TEXT, st.sampled_from([None, "label", "0", "-1", "99"]), st.sampled_from(["auto", "yes", "no", "maybe"]))
def test_csv_files_load_or_are_refused(text, label, header):
    def write(folder):
        (folder / "a.csv").write_bytes(text.encode("utf-8", "surrogatepass"))
        return folder / "a.csv"

    ds = in_fresh_folder(write, lambda p: load_csv(str(p), label, header))
    if ds is not None:
        assert torch.isfinite(ds.train.x).all()


def png_bytes(w: int, h: int, mode: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, (w, h)).save(buf, format="PNG")
    return buf.getvalue()


IMAGES = st.one_of(st.binary(max_size=100),
                   st.builds(png_bytes, st.integers(1, 12), st.integers(1, 12), st.sampled_from(["L", "RGB", "RGBA", "P", "1", "I;16"])))


@PROPERTY
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), IMAGES, st.sampled_from([None, (1, b"\x00"), (20, b"\xff\xff"), (40, b"\x00")])),
                max_size=4),
       st.sampled_from([None, (8, 8), (0, 3)]), st.sampled_from([None, True, False]))
def test_image_folders_load_or_are_refused(files, size, grey):
    def write(folder):
        root = folder / "imgs"
        root.mkdir()
        for i, (label, data, bad) in enumerate(files):
            (root / label).mkdir(exist_ok=True)
            (root / label / f"{i}.png").write_bytes(mutate(data, bad) if bad else data)
        return root

    in_fresh_folder(write, lambda p: load_folder(str(p), size, grey))


TEXT_LINES = st.one_of(
    st.text(max_size=120),
    st.lists(st.one_of(st.builds(lambda t, l: json.dumps({"text": t, "label": l}), st.text(max_size=20),
                                 st.one_of(st.none(), st.text(max_size=5), st.integers())),
                       st.sampled_from(["{}", "[]", "null", '{"text": 3}', '{"label": "x"}', "not json"])),
             max_size=6).map("\n".join),
)


@PROPERTY
@given(TEXT_LINES, st.sampled_from(["docs.jsonl", "docs.txt"]), st.integers(1, 50))
def test_text_files_load_or_are_refused(text, name, vocab):
    def write(folder):
        (folder / name).write_bytes(text.encode("utf-8", "surrogatepass"))
        return folder / name

    in_fresh_folder(write, lambda p: load_text(str(p), vocab=vocab))


# --- run directories, checkpoints, index manifests ------------------------------------------------------------
@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    data = aezoo.data.load("digits?limit=64")
    model = aezoo.create("ae", seed=0, input_shape=list(data.shape), widths=[8], latent_dim=2)
    aezoo.Trainer(model, data, TrainConfig(epochs=1, batch_size=32, progress=False), run).fit()
    return run


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.floats(allow_nan=False),
                                     st.text(max_size=8)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                           max_leaves=8)


def edited(obj: dict, path: list, value):
    """A deep copy of obj with obj[path] set to value (or removed when value is ...)."""
    obj = json.loads(json.dumps(obj))
    cur = obj
    for k in path[:-1]:
        cur = cur.setdefault(k, {}) if isinstance(cur, dict) else {}
    if isinstance(cur, dict):
        if value is ...:
            cur.pop(path[-1], None)
        else:
            cur[path[-1]] = value
    return obj


CONFIG_PATHS = st.sampled_from([["model"], ["format"], ["config"], ["config", "widths"], ["config", "latent_dim"],
                                ["config", "input_shape"], ["config", "data_kind"], ["config", "nonexistent"],
                                ["config", "arch"]])


@PROPERTY
@given(CONFIG_PATHS, st.one_of(st.just(...), JSON_VALUES))
def test_model_configs_load_or_are_refused(saved_run, path, value):
    import shutil

    meta = json.loads((saved_run / "config.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(saved_run, run)
        (run / "config.json").write_text(json.dumps(edited(meta, path, value)))
        before = files_of(run)
        loads_or_refuses(load_model, run)
        assert files_of(run) == before


@PROPERTY
@given(st.sampled_from(["state", "optimizers", "format"]), st.one_of(st.just(...), JSON_VALUES.map(json.dumps),
                                                                     st.text(max_size=10)))
def test_checkpoint_metadata_reads_or_is_refused(saved_run, key, value):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(saved_run / "checkpoint.safetensors"), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(saved_run / "checkpoint.safetensors")
    if value is ...:
        meta.pop(key)
    else:
        meta[key] = value
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.safetensors"
        save_file(tensors, path, metadata=meta)
        loads_or_refuses(read_checkpoint, path)


@PROPERTY
@given(st.sampled_from(["format", "bits", "kind", "files", "ids", "labels", "nhash", "nlist", "nprobe", "model"]),
       st.one_of(st.just(...), JSON_VALUES,
                 st.sampled_from([{"../../outside.npy": "0" * 64}, {"/etc/hostname": "0" * 64}, -1, 0, 10**9, "hash",
                                  "multihash", "ivf"])))
def test_index_manifests_load_or_are_refused(tmp_path_factory, key, value):
    base = tmp_path_factory.getbasetemp() / "index0"
    if not base.exists():
        idx = HashIndex(16)
        idx.add(np.random.default_rng(0).integers(0, 2, (20, 16)), [f"i{i}" for i in range(20)], None)
        idx.save(base)
    import shutil

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "index"
        shutil.copytree(base, d)
        man = json.loads((d / "manifest.json").read_text())
        (d / "manifest.json").write_text(json.dumps(edited(man, [key], value)))
        before = files_of(d)
        loads_or_refuses(HashIndex.load, d)
        assert files_of(d) == before
