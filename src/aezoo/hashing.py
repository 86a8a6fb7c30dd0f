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
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError
from .io import atomic_path, make_dir, read_json, write_bytes, write_json

FORMAT = "aezoo-hash-index/1"
KINDS = ("hash", "multihash", "flat", "ivf")


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
        self._pos: dict[str, int] = {}
        self._index = None
        self._flat = None  # exact k-NN for the hash kinds, built on first use

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

    def add(self, bits, ids: list[str], labels: list | None = None, continuous=None) -> None:
        """Add items: ``bits`` (N, b) booleans (or packed (N, b/8) uint8), their ids (unique strings),
        labels, and continuous codes (N, b) when the index keeps them."""
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
            self.continuous = np.concatenate([self.continuous, cont.astype(np.float32)])
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
    def code_of(self, item_id: str) -> tuple[np.ndarray, np.ndarray | None]:
        """The packed code (1, b/8) of an indexed item and its continuous code (1, b) when kept."""
        if str(item_id) not in self._pos:
            raise UserError(f"no item with id {item_id!r} in the index")
        n = self._pos[str(item_id)]
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
            if self._flat is None:
                self._flat = _faiss().IndexBinaryFlat(self.bits)
                self._flat.add(self.codes)
            return self._flat.search(q, min(k, len(self)))
        return self._index.search(q, min(k, len(self)))

    def radius_raw(self, query, radius: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (distances, positions) of every item within Hamming distance ``radius``, nearest
        first. hash: looks up the buckets of every code within ``radius`` of the query."""
        if radius < 0:
            raise UserError("the radius must not be negative")
        q = self._prepare(query)
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
                      None if rd is None else [float(x) for x in rd])

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
        for name, arr in arrays.items():
            with atomic_path(d / name) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
            digests[name] = sha256(d / name)
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
        except (RuntimeError, ValueError, OSError) as e:
            raise UserError(f"{directory}: cannot read the index ({str(e).splitlines()[0]})") from None
        idx.ids, idx.labels = list(man["ids"]), list(man["labels"])
        idx._pos = {k: n for n, k in enumerate(idx.ids)}
        n = len(idx.ids)
        if idx._index.d != idx.bits or idx._index.ntotal != n or idx.codes.shape != (n, idx.bits // 8) or \
                len(idx.labels) != n or man.get("count") != n or \
                (idx.continuous is not None and idx.continuous.shape != (n, idx.bits)):
            raise UserError(f"{directory}: the index files disagree with the manifest (bits, counts); rebuild it")
        return idx


def _check_manifest(man: dict, where: Path) -> None:
    """Types and names of every manifest field :meth:`HashIndex.load` uses (the manifest may come from anyone)."""
    def is_int(v, low=0):
        return isinstance(v, int) and not isinstance(v, bool) and v >= low

    files = man.get("files")
    problems = []
    if not isinstance(files, dict) or not {"index.faiss", "codes.npy"} <= set(files) <= \
            {"index.faiss", "codes.npy", "continuous.npy"} or not all(isinstance(v, str) for v in files.values()):
        problems.append("files must map index.faiss, codes.npy (and continuous.npy) to their SHA-256")
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
