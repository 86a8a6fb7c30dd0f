"""Datasets named by spec strings, parsed here and nowhere else.

A spec is ``KIND``, ``KIND:PATH`` or either followed by ``?option=value&option=value``:

==================  =========================================================================
``fashion-mnist``    Fashion-MNIST IDX files (see :mod:`aezoo.data.idx` for where they are found)
``mnist``            MNIST IDX files
``digits``           scikit-learn's 8x8 digits
``lines``            ACAI's synthetic lines; options ``n`` (train+val items), ``test``, ``size``, ``seed``
``folder:PATH``      images below PATH; options ``size`` (``32`` or ``HxW``), ``grey`` (true/false), ``lazy``
                     (true/false: decode training images per batch; default: when they would not fit in half
                     the free memory), ``cache`` (an .npy file: decode them once into it, then read it per batch)
``patches:PATH``     random square crops of the photographs below PATH (:mod:`aezoo.data.patches`); options
                     ``size`` (64), ``n`` (training crops, 100000), ``val`` (validation and test crops, 1000
                     each), ``grey`` (default: when every photograph is greyscale), ``max_side`` (photographs shrunk to this longer side, 1024),
                     ``memory`` (MB of decoded photographs kept, 512), ``seed``
``npy:PATH``         one array of items; options ``kind`` (image/vector), ``mmap`` (true/false: training items
                     read from disk per batch; default: when they would not fit in half the free memory)
``npz:PATH``         arrays x [, y, x_test, y_test]; option ``kind``
``csv:PATH``         numeric table; options ``label`` (column name or number), ``header`` (auto/yes/no)
``text:PATH``        documents as word counts (:mod:`aezoo.data.text`); option ``vocab`` (words kept)
``codes:RUN_DIR``    the code grids of a trained VQ-VAE on its training data (a PixelCNN prior's data)
==================  =========================================================================

Every spec also takes ``limit=N``: keep the first N items of each split (quick experiments, tests), and
image specs take ``binarize=T``: values above T become 1, the others 0 (fixed binarisation, e.g. for
Bernoulli likelihoods measured on binary data as in the IWAE paper), or ``binarize=dynamic``: training
items are drawn afresh as Bernoulli(grey value) each time they are batched, validation and test items
once, from fixed seeds (dynamic binarisation, as in the IWAE and NVAE papers).

How a source registers: ``register_source(kind, about, load, needs_path=..., options=...)`` makes
``KIND[:PATH][?options]`` load with ``load(spec, data_dir, progress, vocabulary) -> Dataset``, where
``spec`` is the parsed :class:`Spec`. The sources above are registered at the end of this module, except
``codes:``, which needs a trained model: :mod:`aezoo.models.codes` registers it when the models package
is imported, so this package never imports a layer above it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

from ..errors import UserError
from .base import Dataset, Split, batches, bernoulli, num_batches
from .mapped import MappedItems


@dataclass(frozen=True)
class Spec:
    kind: str
    path: str | None
    options: dict


@dataclass(frozen=True)
class Source:
    """How specs of one kind load (see the module docstring)."""

    about: str  # one line, shown by 'aezoo list'
    load: Callable[[Spec, str | None, bool, object], Dataset]  # (spec, data_dir, progress, vocabulary)
    needs_path: bool  # KIND:PATH, else KIND alone
    options: frozenset[str]  # besides limit and binarize


_SOURCES: dict[str, Source] = {}
KINDS: dict[str, str] = {}  # kind -> its one-line description, in registration order


def register_source(kind: str, about: str, load: Callable, *, needs_path: bool = False, options=()) -> None:
    """Make specs of ``kind`` load with ``load(spec, data_dir, progress, vocabulary)``."""
    old = _SOURCES.get(kind)
    if old is not None and old.load.__module__ != load.__module__:
        raise ValueError(f"dataset kind {kind!r} registered twice")
    _SOURCES[kind] = Source(about, load, needs_path, frozenset(options))
    KINDS[kind] = about


def parse_spec(spec: str) -> Spec:
    head, _, query = spec.partition("?")
    kind, sep, path = head.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        hint = difflib.get_close_matches(kind, KINDS, n=1)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise UserError(f"unknown dataset {spec!r}{extra}; known kinds: {', '.join(KINDS)}")
    source = _SOURCES[kind]
    if source.needs_path and not path:
        raise UserError(f"dataset {kind!r} needs a path: {kind}:PATH")
    if not source.needs_path and sep:
        raise UserError(f"dataset {kind!r} takes no path (got {spec!r})")
    options = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq:
            raise UserError(f"dataset option {part!r} in {spec!r} needs a value: {part}=VALUE")
        allowed = source.options | {"limit", "binarize"}
        if key not in allowed:
            raise UserError(f"dataset {kind!r} has no option {key!r}; options: {', '.join(sorted(allowed))}")
        options[key] = value
    return Spec(kind, path or None, options)


def _int(options: dict, key: str, default: int, low: int = 1) -> int:
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"dataset option {key}={raw!r} must be an integer") from None
    if value < low:
        raise UserError(f"dataset option {key}={value} must be at least {low}")
    return value


def _size(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    try:
        parts = [int(p) for p in raw.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) < 1:
        raise UserError(f"dataset option size={raw!r} must be N or HxW, e.g. 32 or 64x48")
    return parts[0], parts[1]


def _bool(raw: str | None) -> bool | None:
    if raw is None:
        return None
    table = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    if raw.lower() not in table:
        raise UserError(f"dataset option value {raw!r} must be true or false")
    return table[raw.lower()]


def _choice(raw: str | None, choices: tuple[str, ...], key: str) -> str | None:
    if raw is not None and raw not in choices:
        raise UserError(f"dataset option {key}={raw!r} must be one of {', '.join(choices)}")
    return raw


def load(spec: str, data_dir: str | None = None, progress: bool = True, vocabulary=None) -> Dataset:
    """Load the dataset named by ``spec`` (see the module docstring). ``vocabulary``: for text, count
    over these words (a trained model's) instead of fitting a vocabulary to the data."""
    s = parse_spec(spec)
    o = s.options
    ds = _SOURCES[s.kind].load(s, data_dir, progress, vocabulary)
    if "limit" in o:
        n = _int(o, "limit", 0)
        for name in ("train", "val", "test"):
            setattr(ds, name, getattr(ds, name).head(n))
    if "binarize" in o:
        _binarize(ds, o["binarize"])
    ds.spec = spec
    return ds


def _binarize(ds: Dataset, raw: str) -> None:
    """Apply ``binarize=T`` or ``binarize=dynamic`` to ``ds`` in place."""
    bad = UserError(f"dataset option binarize={raw!r} must be a threshold in [0, 1) or dynamic")
    threshold = None
    if raw != "dynamic":
        try:
            threshold = float(raw)
        except ValueError:
            raise bad from None
        if not 0 <= threshold < 1:
            raise bad
    if ds.kind != "image":
        raise UserError(f"dataset option binarize={raw} needs image data; this dataset has {ds.kind} items")
    if threshold is not None:
        for name in ("train", "val", "test"):
            sp = getattr(ds, name)
            x = sp.x.binarized(threshold) if isinstance(sp.x, MappedItems) else (sp.x > threshold).float()
            setattr(ds, name, Split(x, sp.y, sp.ids))
        return
    ds.train = Split(ds.train.x, ds.train.y, ds.train.ids, dynamic_binarize=True)
    for name, seed in (("val", 1), ("test", 2)):  # fixed draws: every load, every model sees the same
        sp = getattr(ds, name)
        setattr(ds, name, Split(bernoulli(sp.x, seed), sp.y, sp.ids))


# --- the sources of this package (``codes:`` is registered by aezoo.models.codes) ------------------
def _idx(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .idx import load_idx_dataset

    return load_idx_dataset(s.kind, data_dir, progress)


def _digits(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .synthetic import load_digits

    return load_digits()


def _lines(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .synthetic import load_lines

    o = s.options
    n, test, size = _int(o, "n", 50000, 2), _int(o, "test", 5000), _int(o, "size", 32, 4)
    if (n + test) * size * size > 2**31:  # 8 GB of float32 pixels: a typo, not a dataset
        raise UserError(f"lines with n={n}, test={test} and size={size} would need {(n + test) * size * size * 4 / 2**30:.0f} "
                        "GB; use fewer or smaller images")
    return load_lines(n, test, size, _int(o, "seed", 0, 0))


def _folder(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .files import load_folder

    o = s.options
    return load_folder(s.path, _size(o.get("size")), _bool(o.get("grey")), _bool(o.get("lazy")), o.get("cache"))


def _patches(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .patches import load_patches

    o = s.options
    return load_patches(s.path, _int(o, "size", 64, 8), _int(o, "n", 100_000), _int(o, "val", 1000),
                        _bool(o.get("grey")), _int(o, "max_side", 1024, 8), _int(o, "memory", 512, 0),
                        _int(o, "seed", 0, 0))


def _array(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from . import files

    kind = _choice(s.options.get("kind"), ("image", "vector"), "kind")
    if s.kind == "npy":
        return files.load_npy(s.path, kind, _bool(s.options.get("mmap")))
    return files.load_npz(s.path, kind)


def _csv(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .files import load_csv

    header = _choice(s.options.get("header"), ("auto", "yes", "no"), "header") or "auto"
    return load_csv(s.path, s.options.get("label"), header)


def _text(s: Spec, data_dir, progress, vocabulary) -> Dataset:
    from .text import load_text

    return load_text(s.path, _int(s.options, "vocab", 2000), vocabulary)


register_source("fashion-mnist", "Fashion-MNIST (IDX files; Debian package dataset-fashion-mnist)", _idx)
register_source("mnist", "MNIST digits (IDX files)", _idx)
register_source("digits", "scikit-learn's 8x8 digits", _digits)
register_source("lines", "ACAI's synthetic 32x32 lines (generated, seeded)", _lines,
                options={"n", "test", "size", "seed"})
register_source("folder", "folder:PATH, image files (sub-folders give labels)", _folder, needs_path=True,
                options={"size", "grey", "lazy", "cache"})
register_source("patches", "patches:PATH, random crops of the photographs in a folder (any sizes)", _patches,
                needs_path=True, options={"size", "n", "val", "grey", "max_side", "memory", "seed"})
register_source("npy", "npy:PATH, an array of items", _array, needs_path=True, options={"kind", "mmap"})
register_source("npz", "npz:PATH, arrays x, y, x_test, y_test", _array, needs_path=True, options={"kind"})
register_source("csv", "csv:PATH, a numeric table", _csv, needs_path=True, options={"label", "header"})
register_source("text", "text:PATH, documents (JSON lines, .txt folder or one per line) as word counts", _text,
                needs_path=True, options={"vocab"})

__all__ = ["Dataset", "Split", "Spec", "batches", "num_batches", "load", "parse_spec", "register_source", "KINDS"]
