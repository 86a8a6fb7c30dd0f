"""Text as bags of words: ``text:PATH``.

PATH is one of
- a JSON-lines file (``.jsonl``, ``.json``, optionally ``.gz``): one object per line with ``text`` and
  optional ``label`` and ``id`` fields (a repeated id gets a ``#2``, ``#3``, ... suffix);
- a folder of ``.txt`` files, one document each (files in sub-folders are labelled by the sub-folder);
- any other text file (optionally ``.gz``): one document per line, no labels.

Documents become word-count vectors over a vocabulary of the ``vocab`` most frequent words (default
2000, as in Salakhutdinov & Hinton's semantic hashing), fitted by scikit-learn's ``CountVectorizer`` on
the training documents only (English stop words removed, words of two or more letters). A model trained
on text keeps that vocabulary in its config, so later data is counted over the same words.
"""

from __future__ import annotations

import functools

import gzip
import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import Dataset, Split

VECTORIZER = dict(lowercase=True, stop_words="english", token_pattern=r"(?u)\b[^\W\d_]{2,}\b")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_documents(path: str) -> tuple[list[str], list[str | None], list[str]]:
    """(texts, labels, ids) of every document at ``path`` (see the module docstring)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{path}: no such file or folder")
    texts, labels, ids = [], [], []
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.txt") if f.is_file())
        if not files:
            raise UserError(f"{path}: no .txt files in this folder")
        for f in files:
            try:
                texts.append(f.read_text(encoding="utf-8", errors="replace"))
            except OSError as e:
                raise UserError(f"{f}: cannot read ({e.strerror})") from None
            rel = f.relative_to(p)
            labels.append(rel.parts[0] if len(rel.parts) > 1 else None)
            ids.append(str(rel))
        return texts, labels, ids
    stem_suffix = Path(p.stem).suffix if p.suffix == ".gz" else p.suffix
    try:
        with _open_text(p) as fh:
            if stem_suffix in (".jsonl", ".json"):
                for n, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise UserError(f"{path}: line {n} is not valid JSON ({e.msg})") from None
                    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                        raise UserError(f"{path}: line {n} has no string field 'text'")
                    texts.append(obj["text"])
                    label = obj.get("label")
                    labels.append(None if label is None else str(label))
                    ids.append(str(obj.get("id", len(ids))))
            else:
                for line in fh:
                    if line.strip():
                        texts.append(line.strip())
                        labels.append(None)
                        ids.append(str(len(ids)))
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read the text ({e})") from None
    if not texts:
        raise UserError(f"{path}: no documents")
    return texts, labels, unique(ids)


def unique(ids: list[str]) -> list[str]:
    """Ids made unique: a repeated id gets ``#2``, ``#3``, ... (search results name items by id)."""
    seen: dict[str, int] = {}
    out = []
    for i in ids:
        seen[i] = seen.get(i, 0) + 1
        out.append(i if seen[i] == 1 else f"{i}#{seen[i]}")
    return out


def vectorizer(vocabulary=None, max_features: int = 2000):
    from sklearn.feature_extraction.text import CountVectorizer

    if vocabulary is not None:
        return CountVectorizer(vocabulary=list(vocabulary), **VECTORIZER)
    return CountVectorizer(max_features=max_features, **VECTORIZER)


@functools.lru_cache(maxsize=8)
def _counter(vocabulary: tuple[str, ...]):
    """(the vectorizer's analyzer, word -> column) for a fixed vocabulary, built once."""
    vec = vectorizer(vocabulary)
    vec.fit([])  # checks the vocabulary
    return vec.build_analyzer(), vec.vocabulary_


def count_words(texts: list[str], vocabulary) -> np.ndarray:
    """Word counts (N, V) float32 of ``texts`` over a fixed vocabulary: the vectorizer's own analyzer, then a
    dictionary look-up per word (a sparse matrix per query cost more than the counting)."""
    analyze, column = _counter(tuple(vocabulary))
    out = np.zeros((len(texts), len(column)), np.float32)
    for row, text in enumerate(texts):
        cols = [c for c in map(column.get, analyze(text)) if c is not None]
        np.add.at(out[row], cols, 1)
    return out


def load_text(path: str, vocab: int = 2000, vocabulary=None, spec: str = "") -> Dataset:
    """Documents at ``path`` as word counts; 10% held out as the test split, 10% of the rest as
    validation (fixed seeds). ``vocabulary``: count over these words instead of fitting a new one."""
    import torch

    from .base import split_off

    texts, labels, ids = read_documents(path)
    known = [lab for lab in labels if lab is not None]
    if known and len(known) != len(labels):
        raise UserError(f"{path}: {len(labels) - len(known)} of {len(labels)} documents have no label; "
                        "label all or none")
    if len(texts) < 12:
        raise UserError(f"{path}: {len(texts)} documents; need at least 12 (10% test, 10% validation)")
    classes = sorted(set(known)) if known else None
    y = np.array([classes.index(lab) for lab in labels]) if classes else None
    index = np.arange(len(texts))
    rest, y_rest, test, y_test = split_off(index, y, 0.1, seed=1)
    train, y_train, val, y_val = split_off(rest, y_rest, 0.1, seed=0)
    if vocabulary is None:
        vec = vectorizer(max_features=vocab)
        try:
            vec.fit([texts[i] for i in train])
        except ValueError:
            raise UserError(f"{path}: the training documents contain no words") from None
        vocabulary = vec.get_feature_names_out().tolist()
    vec = vectorizer(vocabulary)

    def part(idx, yy):
        x = torch.from_numpy(vec.transform([texts[i] for i in idx]).astype(np.float32).toarray())
        return Split(x, None if yy is None else torch.from_numpy(yy.astype(np.int64)), [ids[i] for i in idx])

    return Dataset(spec=spec, kind="text", train=part(train, y_train), val=part(val, y_val),
                   test=part(test, y_test), classes=classes,
                   meta={"vocabulary": list(vocabulary), "texts": {"path": str(path)}})
