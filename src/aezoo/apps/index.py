"""``aezoo index build`` and ``aezoo index search``: a trained ``hash`` model's codes in a
:class:`~aezoo.hashing.HashIndex`, and queries against it by item id, image file or text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..hashing import HashIndex, sha256
from ..io import atomic_dir, check_output_dir, one_writer
from ..models.base import Autoencoder, copy_model, load_model
from ..models.run import open_run

MODEL_DIR = "model"  # in an index folder: a copy of the model that built it


def encode_codes(model, x: torch.Tensor, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(bits (N, b) bool, continuous codes (N, b)) of ``x``, in batches, on the model's device."""
    if not _has_binary_codes(model):
        raise UserError(f"model {model.name!r} has no binary codes; train a 'hash' model for an index")
    model.eval()
    bits, cont = [], []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            b, c = model.codes(x[i : i + batch_size].to(model.device))
            bits.append(b.cpu())
            cont.append(c.cpu())
    return torch.cat(bits), torch.cat(cont)


def _has_binary_codes(model) -> bool:
    return isinstance(model, Autoencoder) and model.binary_codes  # a Prior (another model's codes) has none


def model_reference(run_dir: str) -> dict:
    weights = Path(run_dir) / "model.safetensors"
    return {"run_dir": str(Path(run_dir).resolve()), "weights_sha256": sha256(weights)}


def build_index(run_dir: str, data_spec: str | None, out: str, split: str = "train", kind: str | None = None,
                rerank: bool = False, overwrite: bool = False, data_dir: str | None = None,
                progress: bool = True) -> HashIndex:
    out_dir = Path(out)
    check_output_dir(out_dir)
    with one_writer(out_dir):  # one process per index directory
        if out_dir.exists() and any(out_dir.iterdir()):
            if not overwrite:
                raise UserError(f"{out}: exists and is not empty; choose another --out or pass --overwrite")
            if not (out_dir / "manifest.json").is_file():
                raise UserError(f"{out}: not an aezoo index; --overwrite only replaces index directories")
        model, dataset = open_run(run_dir, data_spec, data_dir, progress)
        if not _has_binary_codes(model):
            raise UserError(f"{run_dir}: a {model.name!r} model has no binary codes; train a 'hash' model")
        bits = model.config.bits
        kind = kind or ("hash" if bits <= 64 else "multihash")
        names = ["train", "val", "test"] if split == "all" else [split]
        index = HashIndex(bits, kind, model=model_reference(run_dir), keep_continuous=rerank)
        for name in names:
            part = dataset.split(name)
            b, c = encode_codes(model, part.x)
            labels = None if part.y is None else [dataset.classes[i] if dataset.classes else str(i) for i in part.y.tolist()]
            ids = part.item_ids(name)
            index.add(b, ids, labels, c if rerank else None)
        # what a page shows of each item (aezoo serve): thumbnails or texts, and the map of the codes
        if dataset.kind == "image" and dataset.shape[0] in (1, 3):
            index.set_records(thumbs=torch.cat([dataset.split(name).x[:] for name in names]))
        elif dataset.kind == "text" and "texts" in dataset.meta:
            from ..data.text import read_documents

            texts, _, doc_ids = read_documents(dataset.meta["texts"]["path"])
            by_id = dict(zip(doc_ids, texts))
            index.set_records(texts=[by_id.get(i, "") for i in index.ids])
        else:
            index.set_records()
        # written beside the target, then renamed: a crash never leaves a half-written index in --out; the
        # index keeps a copy of its model, so that it reads nothing outside itself
        with atomic_dir(out_dir) as tmp:
            index.save(tmp)
            copy_model(run_dir, tmp / MODEL_DIR)
        return index


def search_index(index_dir: str, *, item: str | None = None, image: str | None = None, text: str | None = None,
                 k: int = 10, radius: int | None = None, rerank: bool = False) -> list:
    """Results for one query (see :meth:`HashIndex.search` and :meth:`HashIndex.radius_search`)."""
    index = HashIndex.load(index_dir)
    if sum(q is not None for q in (item, image, text)) != 1:
        raise UserError("give exactly one query: --item ID, --image FILE or --text TEXT")
    if item is not None:
        bits, cont = index.code_of(item)
        if rerank and cont is None:
            raise UserError("this index keeps no continuous codes; rebuild it with --rerank")
    else:
        model = index_model(index, index_dir)
        x = query_item(model, image=image, text=text)
        b, c = encode_codes(model, x)
        bits, cont = b.numpy(), c.numpy()
    cq = cont if rerank else None
    if radius is not None:
        return index.radius_search(bits, radius, rerank=cq)[0]
    return index.search(bits, k, rerank=cq)[0]


def index_model(index: HashIndex, index_dir: str | Path):
    """The copy of the model that built ``index``, kept in the index folder, after checking its weights."""
    d = Path(index_dir) / MODEL_DIR
    if not (d / "model.safetensors").is_file():
        raise UserError(f"{index_dir}: holds no copy of its model (an index of an earlier aezoo); rebuild it to "
                        "query by image or text (--item queries work)")
    if sha256(d / "model.safetensors") != (index.model or {}).get("weights_sha256"):
        raise UserError(f"{d}: the model's weights are not the ones the index was built with; rebuild the index")
    model = load_model(d)
    if not _has_binary_codes(model) or model.config.bits != index.bits:
        raise UserError(f"{d}: not the {index.bits}-bit hash model of this index; rebuild the index")
    return model


def query_item(model, image: str | bytes | None = None, text: str | None = None) -> torch.Tensor:
    """One query as the model's input: an image (a file's path, or its bytes) resized to the model's
    input, or a text."""
    c = model.config
    if text is not None:
        if c.data_kind != "text":
            raise UserError("--text needs an index of a model trained on text")
        from ..data.text import count_words

        x = count_words([text], c.vocabulary)
        if x.sum() == 0:
            raise UserError("none of the query's words is in the model's vocabulary")
        return torch.from_numpy(x)
    if c.data_kind != "image":
        raise UserError("--image needs an index of a model trained on images")
    from ..data.files import read_image

    ch, h, w = c.input_shape
    if isinstance(image, bytes):
        import io

        arr = read_image(io.BytesIO(image), (h, w), grey=ch == 1, name="the upload")
    else:
        path = Path(image)
        if not path.is_file():
            raise UserError(f"{image}: no such file")
        arr = read_image(path, (h, w), grey=ch == 1)
    return torch.from_numpy(np.ascontiguousarray(arr))[None]
