"""A hash-table index of binary codes, on FAISS's binary indexes (``faiss-cpu``).

Semantic hashing (Salakhutdinov & Hinton 2009) stores each item under its b-bit code and answers a
query by looking up the buckets of every code within a small Hamming distance of the query's: the work
depends on b and the radius, not on the collection's size. :class:`HashIndex` offers that and the usual
alternatives, all on the same packed codes:

=============  ===============================================================================
``hash``        ``IndexBinaryHash``: one hash table keyed by the whole code; radius search visits the
                sum_{i<=r} C(b, i) buckets within radius r of the query (b <= 64; the default)
``multihash``   ``IndexBinaryMultiHash``: the code cut into ``nhash`` substrings, one table each; by
                the pigeonhole principle any code within radius r agrees with the query within
                floor(r / nhash) bits on some substring (for long codes: 128 bits)
``flat``        ``IndexBinaryFlat``: exact Hamming k-NN by a linear scan (popcount), the reference
``ivf``         ``IndexBinaryIVF``: a coarse k-means over codes, a few lists scanned per query (very
                large collections; approximate)
=============  ===============================================================================

k-NN search (``search``, exact by a popcount scan except for ``ivf``) and radius search
(``radius_search``, the hash-table lookup) work on every kind; re-ranking orders
the candidates by the Euclidean distance between the model's continuous codes when the index keeps them
(``keep_continuous=True``). An index directory holds ``index.faiss`` (FAISS's own format), ``codes.npy``
(the packed codes, for look-ups by id and rebuilding), optionally ``continuous.npy``, and
``manifest.json``: ids, labels, the kind and its settings, the model's run directory and the SHA-256 of
its weights and of every file, so a corrupt or mismatched index is refused on load.

What a page shows of the items can live in the index too (:meth:`HashIndex.set_records`): small uint8
thumbnails (``thumbs.npy``) or the documents' texts (``texts.json``), and a 2-D map of the codes
(``map.npy``: the codes as +-1, projected on their first two principal axes, kept in ``map_axes.npy`` so
that items added later land on the same map). ``add`` and ``remove`` keep them aligned with the codes.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .io import atomic_path, make_dir, read_json, write_bytes, write_json

FORMAT = "aezoo-hash-index/1"
KINDS = ("hash", "multihash", "flat", "ivf")
FILES = ("index.faiss", "codes.npy", "continuous.npy", "thumbs.npy", "texts.json", "map.npy", "map_axes.npy")
TEXT_CHARS = 4000  # texts kept per item (a page shows a snippet; the full document stays with the data)


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise UserError("the index needs FAISS: pip install faiss-cpu") from None
    return faiss


def pack_bits(bits) -> np.ndarray:
    """(N, b) booleans (numpy or torch) -> (N, b/8) uint8 in FAISS's bit order (bit i of the code is bit
    i % 8 of byte i // 8)."""
    if hasattr(bits, "numpy"):
        bits = bits.detach().cpu().numpy()
    bits = np.asarray(bits).astype(bool)
    if bits.ndim != 2 or bits.shape[1] % 8:
        raise UserError(f"codes must be (N, b) with b a multiple of 8, got shape {bits.shape}")
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    return np.unpackbits(packed, axis=1, count=bits, bitorder="little").astype(bool)


@dataclass
class Result:
    """One query's answer, nearest first: ids, labels (or None), Hamming distances and, after re-ranking,
    continuous-code distances."""

    ids: list[str]
    labels: list[str | None]
    hamming: list[int]
    rerank_distance: list[float] | None = None
    positions: list[int] | None = None  # the items' places in the index (its ids, labels, records)


class HashIndex:
    """Binary codes of a collection, searchable by Hamming k-NN and by hash-table radius lookup."""

    def __init__(self, bits: int, kind: str = "hash", *, nhash: int | None = None, nlist: int | None = None,
                 nprobe: int = 8, model: dict | None = None, keep_continuous: bool = False):
        if kind not in KINDS:
            raise UserError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")
        if bits % 8 or not 8 <= bits <= 1024:
            raise UserError(f"codes of {bits} bits: need a multiple of 8 between 8 and 1024")
        if kind == "hash" and bits > 64:
            raise UserError(f"kind=hash keys a table by the whole code, at most 64 bits (got {bits}); use multihash")
        self.bits, self.kind = bits, kind
        self.nhash = nhash or max(1, math.ceil(bits / 32))
        if kind == "multihash" and (bits // self.nhash) > 64:
            raise UserError(f"multihash: {bits} bits in {self.nhash} tables gives substrings over 64 bits")
        self.nlist, self.nprobe = nlist, nprobe
        self.model = model or {}
        self.keep_continuous = keep_continuous
        self.codes = np.zeros((0, bits // 8), np.uint8)
        self.continuous = np.zeros((0, bits), np.float32) if keep_continuous else None
        self.ids: list[str] = []
        self.labels: list[str | None] = []
        self.thumbs: np.ndarray | None = None  # (N, h, w, c) uint8, when the index shows images
        self.texts: list[str] | None = None  # when it shows documents
        self.map: np.ndarray | None = None  # (N, 2) float32: where each item sits on the 2-D map
        self.map_axes: np.ndarray | None = None  # (3, b): the mean of the +-1 codes and two principal axes
        self._pos: dict[str, int] = {}
        self._index = None
        self._flat = None  # exact k-NN for the hash kinds, built on first use
        self._lock = threading.Lock()  # searches from several threads: the lazy build and FAISS's nflip

    def __len__(self) -> int:
        return len(self.ids)

    # --- building ---------------------------------------------------------------------------------
    def _new_faiss(self, train: np.ndarray | None = None):
        faiss = _faiss()
        if self.kind == "flat":
            return faiss.IndexBinaryFlat(self.bits)
        if self.kind == "hash":
            return faiss.IndexBinaryHash(self.bits, self.bits)
        if self.kind == "multihash":
            return faiss.IndexBinaryMultiHash(self.bits, self.nhash, self.bits // self.nhash)
        nlist = self.nlist or max(1, min(4096, int(4 * math.sqrt(max(len(train), 1)))))
        self.nlist = nlist
        if len(train) < nlist:
            raise UserError(f"kind=ivf needs at least nlist={nlist} items to train its coarse quantiser")
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(self.bits), self.bits, nlist)
        index.train(train)
        return index

    def add(self, bits, ids: list[str], labels: list | None = None, continuous=None, thumbs=None,
            texts: list[str] | None = None) -> None:
        """Add items: ``bits`` (N, b) booleans (or packed (N, b/8) uint8), their ids (unique strings),
        labels, continuous codes (N, b) when the index keeps them, and thumbnails or texts when it shows
        them (:meth:`set_records`); their place on the map follows from their codes."""
        packed = bits if (isinstance(bits, np.ndarray) and bits.dtype == np.uint8 and bits.shape[-1] == self.bits // 8) \
            else pack_bits(bits)
        ids = [str(i) for i in ids]
        if len(ids) != len(packed):
            raise UserError(f"{len(packed)} codes but {len(ids)} ids")
        if packed.shape[1] != self.bits // 8:
            raise UserError(f"codes of {packed.shape[1] * 8} bits added to a {self.bits}-bit index")
        seen = set(self._pos)
        for i in ids:
            if i in seen:
                raise UserError(f"id {i!r} is already in the index (ids must be unique)")
            seen.add(i)
        labels = [None if lab is None else str(lab) for lab in labels] if labels is not None else [None] * len(ids)
        if self.keep_continuous:
            if continuous is None:
                raise UserError("this index keeps continuous codes for re-ranking: pass continuous=")
            cont = continuous.detach().cpu().numpy() if hasattr(continuous, "detach") else np.asarray(continuous)
        if self._records_given(thumbs, texts, len(ids)):
            if self.thumbs is not None:
                self.thumbs = np.concatenate([self.thumbs, _thumbs(thumbs, self.thumbs.shape[1:])])
            if self.texts is not None:
                self.texts += [str(t)[:TEXT_CHARS] for t in texts]
        if self.keep_continuous:
            self.continuous = np.concatenate([self.continuous, cont.astype(np.float32)])
        if self.map_axes is not None:
            self.map = np.concatenate([self.map, self.project(packed)])
        start = len(self.ids)
        self.codes = np.concatenate([self.codes, packed])
        self.ids += ids
        self.labels += labels
        self._pos.update((k, start + n) for n, k in enumerate(ids))
        self._flat = None
        if self._index is None:
            self._index = self._new_faiss(self.codes)
            self._index.add(self.codes)
        else:
            self._index.add(packed)

    def _records_given(self, thumbs, texts, n: int) -> bool:
        """Whether records come with new items, checked against what the index shows."""
        if self.thumbs is not None and (thumbs is None or len(thumbs) != n):
            raise UserError(f"this index shows thumbnails: pass thumbs= with one per item ({n})")
        if self.texts is not None and (texts is None or len(texts) != n):
            raise UserError(f"this index shows texts: pass texts= with one per item ({n})")
        return self.thumbs is not None or self.texts is not None

    def set_records(self, thumbs=None, texts: list[str] | None = None, map_: bool = True) -> None:
        """What a page shows of every item, in index order: ``thumbs`` (N, C, H, W) floats in [0, 1] or
        (N, h, w, c) uint8, shrunk to at most 64 pixels a side; or ``texts``; and (``map_``) the 2-D map."""
        n = len(self)
        if thumbs is not None:
            if len(thumbs) != n:
                raise UserError(f"{len(thumbs)} thumbnails for {n} items")
            self.thumbs = _thumbs(thumbs)
        if texts is not None:
            if len(texts) != n:
                raise UserError(f"{len(texts)} texts for {n} items")
            self.texts = [str(t)[:TEXT_CHARS] for t in texts]
        if map_ and n:
            signs = unpack_bits(self.codes, self.bits).astype(np.float32) * 2 - 1
            mean = signs.mean(0)
            # principal axes of the codes: the two leading right singular vectors of the centred codes
            _, _, vt = np.linalg.svd(signs[: 20000] - mean, full_matrices=False)
            axes = np.zeros((2, self.bits), np.float32)
            axes[: len(vt[:2])] = vt[:2]
            self.map_axes = np.concatenate([mean[None], axes]).astype(np.float32)
            self.map = self.project(self.codes)

    def project(self, packed: np.ndarray) -> np.ndarray:
        """Places on the map (N, 2) of packed codes (N, b/8)."""
        signs = unpack_bits(packed, self.bits).astype(np.float32) * 2 - 1
        return ((signs - self.map_axes[0]) @ self.map_axes[1:].T).astype(np.float32)

    def record(self, item_id: str) -> dict:
        """What the index knows of an item: id, label, text (when it shows texts), map position."""
        n = self.position(item_id)
        out = {"id": self.ids[n], "label": self.labels[n], "thumbnail": self.thumbs is not None}
        if self.texts is not None:
            out["text"] = self.texts[n]
        if self.map is not None:
            out["map"] = [float(v) for v in self.map[n]]
        return out

    def remove(self, ids: list[str]) -> int:
        """Remove items by id; returns how many were removed. The hash tables have no deletion, so the
        FAISS index is rebuilt from the kept codes (linear in the collection's size)."""
        gone = {str(i) for i in ids}
        unknown = [i for i in gone if i not in self._pos]
        if unknown:
            raise UserError(f"id {sorted(unknown)[0]!r} is not in the index")
        keep = np.array([i not in gone for i in self.ids], bool)
        self.codes = self.codes[keep]
        if self.continuous is not None:
            self.continuous = self.continuous[keep]
        if self.thumbs is not None:
            self.thumbs = self.thumbs[keep]
        if self.texts is not None:
            self.texts = [t for t, k in zip(self.texts, keep) if k]
        if self.map is not None:
            self.map = self.map[keep]
        self.ids = [i for i, k in zip(self.ids, keep) if k]
        self.labels = [lab for lab, k in zip(self.labels, keep) if k]
        self._pos = {k: n for n, k in enumerate(self.ids)}
        self._flat = None
        if self.kind == "ivf" and self._index is not None:
            self._index.reset()  # keep the trained quantiser
        else:
            self._index = self._new_faiss(self.codes) if len(self.codes) else None
        if self._index is not None and len(self.codes):
            self._index.add(self.codes)
        return len(gone)

    # --- searching --------------------------------------------------------------------------------
    def __contains__(self, item_id) -> bool:
        return str(item_id) in self._pos

    def position(self, item_id: str) -> int:
        """Where an indexed item sits (its row in codes, ids, labels and records)."""
        if str(item_id) not in self._pos:
            raise UserError(f"no item with id {item_id!r} in the index")
        return self._pos[str(item_id)]

    def code_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The packed code (1, b/8) of an indexed item and its continuous code (1, b) when kept."""
        n = self.position(item_id)
        return self.codes[n : n + 1], None if self.continuous is None else self.continuous[n : n + 1]

    def _prepare(self, query) -> np.ndarray:
        if self._index is None or not len(self):
            raise UserError("the index is empty")
        q = query if (isinstance(query, np.ndarray) and query.dtype == np.uint8) else pack_bits(query)
        if q.shape[1] != self.bits // 8:
            raise UserError(f"a {q.shape[1] * 8}-bit query against a {self.bits}-bit index")
        if self.kind == "ivf":
            self._index.nprobe = min(self.nprobe, self.nlist)
        return np.ascontiguousarray(q)

    def search_raw(self, query, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances (Q, k), positions (Q, k)); position -1 where fewer than k items exist. Exact
        Hamming k-NN (a popcount scan over the packed codes) except for ``ivf``, which scans ``nprobe``
        lists. The hash tables answer radius queries; a k-NN query may need items beyond any radius."""
        q = self._prepare(query)
        if self.kind in ("hash", "multihash"):
            with self._lock:
                if self._flat is None:
                    flat = _faiss().IndexBinaryFlat(self.bits)
                    flat.add(self.codes)
                    self._flat = flat
            return self._flat.search(q, min(k, len(self)))
        return self._index.search(q, min(k, len(self)))

    def radius_raw(self, query, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (distances, positions) of every item within Hamming distance ``radius``, nearest
        first. hash: looks up the buckets of every code within ``radius`` of the query."""
        if radius < 0:
            raise UserError("the radius must not be negative")
        q = self._prepare(query)
        with self._lock:  # nflip is the index's state: set and used under one lock
            if self.kind == "hash":
                self._index.nflip = radius
            elif self.kind == "multihash":
                self._index.nflip = radius // self.nhash
            lims, dist, pos = self._index.range_search(q, radius + 1)  # FAISS: distances strictly below
        # Nearest first, ties by position: sort one integer key, distance * n + position, per query (4x
        # faster than a lexsort of the pair when a query finds thousands of items), then split it again.
        n = len(self)
        key = dist.astype(np.int64) * n + pos
        out = []
        for i in range(len(q)):
            k = np.sort(key[lims[i]:lims[i + 1]])
            d = k // n
            out.append((d, k - d * n))
        return out

    def search(self, query, k: int = 10, rerank=None) -> list[Result]:
        """The k nearest items by Hamming distance. ``rerank``: the queries' continuous codes (Q, b); the
        candidates (4k by Hamming) are then ordered by Euclidean distance between continuous codes."""
        if k < 1:
            raise UserError("k must be at least 1")
        dist, pos = self.search_raw(query, 4 * k if rerank is not None else k)
        return [self._result(d[p >= 0], p[p >= 0], None if rerank is None else rerank[i], k)
                for i, (d, p) in enumerate(zip(dist, pos))]

    def radius_search(self, query, radius: int = 2, rerank=None, limit: int | None = None) -> list[Result]:
        """Every item within Hamming distance ``radius`` (at most ``limit``, nearest first)."""
        return [self._result(d, p, None if rerank is None else rerank[i], limit)
                for i, (d, p) in enumerate(self.radius_raw(query, radius))]

    def _result(self, dist, pos, cont_query, limit) -> Result:
        rd = None
        if cont_query is not None:
            if self.continuous is None:
                raise UserError("this index keeps no continuous codes; rebuild it with re-ranking on")
            cq = cont_query.detach().cpu().numpy() if hasattr(cont_query, "detach") else np.asarray(cont_query)
            e = np.linalg.norm(self.continuous[pos] - cq.reshape(1, -1), axis=1)
            order = np.lexsort((dist, e))
            dist, pos, rd = dist[order], pos[order], e[order]
        if limit is not None:
            dist, pos = dist[:limit], pos[:limit]
            rd = None if rd is None else rd[:limit]
        return Result([self.ids[p] for p in pos], [self.labels[p] for p in pos], [int(d) for d in dist],
                      None if rd is None else [float(x) for x in rd], [int(p) for p in pos])

    def memory_bytes(self) -> int:
        """Bytes of the FAISS index as serialised (its in-memory size, to within a few headers)."""
        faiss = _faiss()
        return int(faiss.serialize_index_binary(self._index).nbytes) if self._index is not None else 0

    # --- saving and loading -----------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index into ``directory`` (created; files replaced atomically, the manifest last)."""
        faiss = _faiss()
        d = make_dir(directory)
        digests = {}
        # serialised in memory, written by Python: a failing write is an OSError, not a FAISS RuntimeError
        write_bytes(d / "index.faiss", faiss.serialize_index_binary(self._index).tobytes())
        digests["index.faiss"] = sha256(d / "index.faiss")
        arrays = {"codes.npy": self.codes}
        if self.continuous is not None:
            arrays["continuous.npy"] = self.continuous
        if self.thumbs is not None:
            arrays["thumbs.npy"] = self.thumbs
        if self.map is not None:
            arrays["map.npy"], arrays["map_axes.npy"] = self.map, self.map_axes
        for name, arr in arrays.items():
            with atomic_path(d / name) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
            digests[name] = sha256(d / name)
        if self.texts is not None:
            write_json(d / "texts.json", {"texts": self.texts})
            digests["texts.json"] = sha256(d / "texts.json")
        write_json(d / "manifest.json", {
            "format": FORMAT, "bits": self.bits, "kind": self.kind, "nhash": self.nhash, "nlist": self.nlist,
            "nprobe": self.nprobe, "count": len(self), "model": self.model, "files": digests,
            "ids": self.ids, "labels": self.labels})
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "HashIndex":
        """Read an index written by :meth:`save`; refuse one whose files do not match its manifest."""
        faiss = _faiss()
        d = Path(directory)
        man_path = d / "manifest.json"
        if not man_path.is_file():
            raise UserError(f"{directory}: not an aezoo index (no manifest.json)")
        man = read_json(man_path)
        if not isinstance(man, dict) or man.get("format") != FORMAT:
            raise UserError(f"{man_path}: not an aezoo index manifest (format {FORMAT} expected)")
        _check_manifest(man, man_path)
        for name, digest in man["files"].items():  # names are the fixed ones: nothing outside d is read
            if not (d / name).is_file():
                raise UserError(f"{d / name}: missing; the index is incomplete")
            if sha256(d / name) != digest:
                raise UserError(f"{d / name}: corrupt (its SHA-256 does not match the manifest); rebuild the index")
        idx = cls(man["bits"], man["kind"], nhash=man.get("nhash"), nlist=man.get("nlist"),
                  nprobe=man.get("nprobe", 8), model=man.get("model"),
                  keep_continuous="continuous.npy" in man["files"])
        try:
            idx._index = faiss.read_index_binary(str(d / "index.faiss"))
            idx.codes = np.load(d / "codes.npy", allow_pickle=False)
            if idx.keep_continuous:
                idx.continuous = np.load(d / "continuous.npy", allow_pickle=False)
            if "thumbs.npy" in man["files"]:
                idx.thumbs = np.load(d / "thumbs.npy", allow_pickle=False)
            if "map.npy" in man["files"]:
                idx.map = np.load(d / "map.npy", allow_pickle=False)
                idx.map_axes = np.load(d / "map_axes.npy", allow_pickle=False)
            if "texts.json" in man["files"]:
                idx.texts = read_json(d / "texts.json").get("texts")
        except (RuntimeError, ValueError, OSError) as e:
            raise UserError(f"{directory}: cannot read the index ({str(e).splitlines()[0]})") from None
        idx.ids, idx.labels = list(man["ids"]), list(man["labels"])
        idx._pos = {k: n for n, k in enumerate(idx.ids)}
        n = len(idx.ids)
        if idx._index.d != idx.bits or idx._index.ntotal != n or idx.codes.shape != (n, idx.bits // 8) or \
                len(idx.labels) != n or man.get("count") != n or \
                (idx.continuous is not None and idx.continuous.shape != (n, idx.bits)) or \
                (idx.thumbs is not None and (idx.thumbs.dtype != np.uint8 or idx.thumbs.ndim != 4 or
                                             len(idx.thumbs) != n or idx.thumbs.shape[-1] not in (1, 3))) or \
                (idx.texts is not None and (not isinstance(idx.texts, list) or len(idx.texts) != n or
                                            not all(isinstance(t, str) for t in idx.texts))) or \
                (idx.map is not None and (idx.map.shape != (n, 2) or idx.map_axes.shape != (3, idx.bits)
                                          or idx.map.dtype != np.float32 or idx.map_axes.dtype != np.float32)):
            raise UserError(f"{directory}: the index files disagree with the manifest (bits, counts); rebuild it")
        return idx


def _check_manifest(man: dict, where: Path) -> None:
    """Types and names of every manifest field :meth:`HashIndex.load` uses (the manifest may come from anyone)."""
    def is_int(v, low=0):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    files = man.get("files")
    problems = []
    if not isinstance(files, dict) or not {"index.faiss", "codes.npy"} <= set(files) <= set(FILES) or \
            ("map.npy" in files) != ("map_axes.npy" in files) or not all(isinstance(v, str) for v in files.values()):
        problems.append(f"files must map index.faiss, codes.npy (and {', '.join(FILES[2:])}) to their SHA-256")
    if not is_int(man.get("bits")) or not isinstance(man.get("kind"), str):
        problems.append("bits must be an integer and kind a string")
    if not all(man.get(k) is None or is_int(man.get(k), 1) for k in ("nhash", "nlist")) or \
            not is_int(man.get("nprobe", 8), 1) or not is_int(man.get("count")):
        problems.append("nhash, nlist and nprobe must be positive integers (or absent), count an integer")
    if not (man.get("model") is None or isinstance(man.get("model"), dict)):
        problems.append("model must be an object")
    ids, labels = man.get("ids"), man.get("labels")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or not isinstance(labels, list) or \
            not all(label is None or isinstance(label, str) for label in labels):
        problems.append("ids must be a list of strings and labels a list of strings or nulls")
    if problems:
        raise UserError(f"{where}: not a valid index manifest ({problems[0]}); rebuild the index")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _thumbs(x, shape: tuple | None = None) -> np.ndarray:
    """Thumbnails (N, h, w, c) uint8, at most 64 pixels a side, from (N, C, H, W) floats in [0, 1] or
    (N, h, w, c) uint8; ``shape`` (h, w, c): what an index's thumbnails already are."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype != np.uint8:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"thumbnails must be (N, C, H, W) images with 1 or 3 channels, got {x.shape}")
        x = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(0, 2, 3, 1)
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise UserError(f"thumbnails must be (N, h, w, 1 or 3) uint8, got {x.shape}")
    h, w = x.shape[1:3]
    target = shape[:2] if shape is not None else ((h, w) if max(h, w) <= 64 else
                                                 (max(1, round(h * 64 / max(h, w))), max(1, round(w * 64 / max(h, w)))))
    if (h, w) != tuple(target):
        from PIL import Image

        x = np.stack([np.asarray(Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im).resize(
            (target[1], target[0]), Image.BILINEAR)).reshape(target[0], target[1], -1) for im in x])
    if shape is not None and x.shape[1:] != tuple(shape):
        raise UserError(f"thumbnails of shape {x.shape[1:]} added to an index of {tuple(shape)}")
    return np.ascontiguousarray(x)
