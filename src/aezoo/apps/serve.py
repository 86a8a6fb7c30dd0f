"""``aezoo serve INDEX_DIR``: a search service and web page over a hash index (FastAPI, uvicorn).

The index and the copy of its model are loaded once and are read-only while serving. Searches by text,
item or code take well under a millisecond, so they run on the event loop itself (an ``async`` endpoint:
no hand-off to a thread pool) and return JSON serialised once by ``json.dumps``; image uploads, which
decode a file, run in FastAPI's thread pool. All share the one model, which encodes a query in eval mode
under ``torch.no_grad`` and keeps no state between calls, so requests need no lock around it (torch and
FAISS use one thread each). The index guards the one piece of state its searches set (FAISS's flip count
for radius look-ups) with a lock. uvicorn uses uvloop and httptools when installed (the serve extra). Every bad input is a JSON
4xx with a message in ``detail``; thumbnails are the ones ``aezoo index build`` wrote into the index.
"""


import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from .._version import __version__
from ..errors import UserError
from ..hashing import HashIndex, pack_bits
from .index import MODEL_DIR, encode_codes, index_model, query_item

MAX_UPLOAD_BYTES = 5 * 2**20  # an uploaded query image, as stored
MAX_K = 1000  # nearest items per query
MAX_RADIUS = 8  # Hamming radius of a hash-table look-up (the buckets visited grow as C(bits, radius))
MAX_RESULTS = 1000  # items returned by a radius query, nearest first
MAP_POINTS = 5000  # items drawn on the page's map (evenly spaced through the index)
SNIPPET = 280  # characters of a document shown with a result
PAGE = Path(__file__).parent / "page" / "index.html"


def create_app(index_dir: str | Path):
    """The FastAPI application serving ``index_dir`` (its page at ``/``, its API under ``/api``, OpenAPI
    documentation at ``/docs``)."""
    try:
        from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
        from fastapi.responses import HTMLResponse, JSONResponse, Response
        from pydantic import BaseModel, Field
    except ImportError:
        raise UserError("aezoo serve needs FastAPI and uvicorn: pip install 'aezoo[serve]'") from None

    index = HashIndex.load(index_dir)
    model = index_model(index, index_dir) if (Path(index_dir) / MODEL_DIR).is_dir() else None
    data_kind = model.config.data_kind if model is not None else None
    lock_free_threads()

    class SearchRequest(BaseModel):
        text: str | None = Field(None, description="a text (indexes of text models)")
        item: str | None = Field(None, description="an indexed item's id")
        code: str | None = Field(None, description="a code: a string of 0s and 1s, one per bit")
        k: int = Field(10, ge=1, le=MAX_K, description="nearest items by Hamming distance")
        radius: int | None = Field(None, ge=0, le=MAX_RADIUS, description="instead of k: every item within it")
        rerank: bool = Field(False, description="order candidates by continuous codes (indexes built with --rerank)")

    app = FastAPI(title=f"aezoo search: {Path(index_dir).name}", version=__version__,
                  description="Semantic hashing: items found by looking up nearby binary codes.")

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError):
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def info() -> dict:
        return {"bits": index.bits, "kind": index.kind, "count": len(index), "model": model.name if model else None,
                "data_kind": data_kind, "labels": sorted({lab for lab in index.labels if lab is not None}),
                "shows": "thumbnails" if index.thumbs is not None else "texts" if index.texts is not None else None,
                "map": index.map is not None, "rerank": index.keep_continuous,
                "queries": [q for q, ok in (("item", True), ("code", True), ("text", data_kind == "text"),
                                            ("image", data_kind == "image")) if ok],
                "limits": {"k": MAX_K, "radius": MAX_RADIUS, "results": MAX_RESULTS, "upload_bytes": MAX_UPLOAD_BYTES}}

    facts = info()

    def entry(pos: int, hamming: int, rerank: float | None) -> dict:
        out = {"id": index.ids[pos], "label": index.labels[pos], "hamming": hamming}
        if rerank is not None:
            out["rerank_distance"] = rerank
        if index.texts is not None:
            text = index.texts[pos]
            out["snippet"] = text if len(text) <= SNIPPET else text[:SNIPPET].rsplit(" ", 1)[0] + " ..."
        if index.thumbs is not None:
            out["thumbnail"] = f"/api/items/{_quote(index.ids[pos])}/thumbnail.png"
        if index.map is not None:
            out["map"] = [round(float(v), 4) for v in index.map[pos]]
        return out

    def run(bits: np.ndarray, cont, k: int, radius: int | None, rerank: bool, query: dict) -> dict:
        t = time.perf_counter()
        if rerank and not index.keep_continuous:
            raise HTTPException(422, "this index keeps no continuous codes; rebuild it with --rerank to re-rank")
        cq = cont if rerank else None
        if radius is not None:
            res = index.radius_search(bits, radius, rerank=cq, limit=MAX_RESULTS)[0]
        else:
            res = index.search(bits, k, rerank=cq)[0]
        results = [entry(p, h, None if res.rerank_distance is None else res.rerank_distance[n])
                   for n, (p, h) in enumerate(zip(res.positions, res.hamming))]
        packed = bits if bits.dtype == np.uint8 else pack_bits(bits)
        out = {"query": query, "code": "".join("1" if b else "0" for b in np.unpackbits(
            packed[0], count=index.bits, bitorder="little")), "results": results,
            "took_ms": round(1000 * (time.perf_counter() - t), 3)}
        if index.map_axes is not None:
            out["map"] = [round(float(v), 4) for v in index.project(packed)[0]]
        return out

    def known(item_id: str) -> int:
        """The item's position in the index; an unknown id is a 404."""
        if item_id not in index:
            raise HTTPException(404, f"no item with id {item_id!r} in the index")
        return index.position(item_id)

    def encoded(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        b, c = encode_codes(model, x)
        return b.numpy(), c.numpy()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page():
        return HTMLResponse(PAGE.read_text())

    @app.get("/api/info", summary="What the index holds and what it can be asked")
    def get_info():
        return facts

    @app.get("/api/items/{item_id:path}/thumbnail.png", summary="An indexed image's thumbnail (PNG)",
             responses={200: {"content": {"image/png": {}}}})
    def thumbnail(item_id: str):
        pos = known(item_id)
        if index.thumbs is None:
            raise HTTPException(404, "this index keeps no thumbnails (it was built from text or vectors)")
        from PIL import Image

        im = index.thumbs[pos]
        buf = io.BytesIO()
        Image.fromarray(im.squeeze(-1) if im.shape[-1] == 1 else im).save(buf, format="PNG")
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/items/{item_id:path}", summary="An indexed item's record")
    def item(item_id: str):
        known(item_id)
        rec = index.record(item_id)
        if rec.pop("thumbnail"):
            rec["thumbnail"] = f"/api/items/{_quote(item_id)}/thumbnail.png"
        return rec

    @app.get("/api/map", summary="The 2-D map of the codes: up to `limit` items, evenly spaced")
    def code_map(limit: int = MAP_POINTS):
        if index.map is None:
            raise HTTPException(404, "this index has no map (built by an earlier aezoo); rebuild it")
        if not 1 <= limit <= 100_000:
            raise HTTPException(422, "limit must be between 1 and 100000")
        pos = np.unique(np.linspace(0, len(index) - 1, min(limit, len(index))).round().astype(int))
        return {"ids": [index.ids[p] for p in pos], "labels": [index.labels[p] for p in pos],
                "xy": np.round(index.map[pos], 4).tolist()}

    def as_json(out: dict) -> Response:
        return Response(json.dumps(out, separators=(",", ":")), media_type="application/json")

    @app.post("/api/search", summary="Search by text, by an indexed item, or by a code")
    async def search(req: SearchRequest):
        given = [name for name in ("text", "item", "code") if getattr(req, name) is not None]
        if len(given) != 1:
            raise HTTPException(422, "give exactly one of text, item or code (images: POST /api/search/image)")
        if req.item is not None:
            known(req.item)
            bits, cont = index.code_of(req.item)
            return as_json(run(bits, cont, req.k, req.radius, req.rerank, {"item": req.item}))
        if req.code is not None:
            code = req.code.strip()
            if len(code) != index.bits or set(code) - {"0", "1"}:
                raise HTTPException(422, f"a code is {index.bits} characters, each 0 or 1")
            if req.rerank:
                raise HTTPException(422, "a code query has no continuous code to re-rank with")
            bits = np.array([[c == "1" for c in code]])
            return as_json(run(bits, None, req.k, req.radius, False, {"code": code}))
        if not req.text.strip():
            raise HTTPException(422, "the text is empty")
        if data_kind != "text":
            raise HTTPException(422, f"this index holds {data_kind or 'unknown'} items: search it by item, code"
                                     + (" or image" if data_kind == "image" else ""))
        bits, cont = encoded(query_item(model, text=req.text))
        return as_json(run(bits, cont, req.k, req.radius, req.rerank, {"text": req.text[:200]}))

    @app.post("/api/search/image", summary="Search by an uploaded image")
    def search_image(request: Request, file: UploadFile = File(..., description="a PNG, JPEG, ... image"),
                     k: int = Form(10, ge=1, le=MAX_K), radius: int | None = Form(None, ge=0, le=MAX_RADIUS),
                     rerank: bool = Form(False)):
        if data_kind != "image":
            raise HTTPException(422, f"this index holds {data_kind or 'unknown'} items, not images")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_UPLOAD_BYTES + 64 * 1024:
            raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        data = file.file.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise HTTPException(413, f"the upload is larger than {MAX_UPLOAD_BYTES // 2**20} MB")
        if not data:
            raise HTTPException(422, "the upload is empty")
        try:
            x = query_item(model, image=data)
        except UserError as e:
            raise HTTPException(415, f"not an image this server can read ({str(e).split('(', 1)[-1].rstrip(')')})")
        bits, cont = encoded(x)
        return as_json(run(bits, cont, k, radius, rerank, {"image": file.filename or "upload"}))

    return app


def _quote(item_id: str) -> str:
    from urllib.parse import quote

    return quote(item_id, safe="")


def lock_free_threads() -> None:
    """One thread per request inside torch and FAISS: the server's thread pool gives the parallelism."""
    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        pass


INDEX_ENV = "AEZOO_SERVE_INDEX"  # how worker processes learn the index to load
TRUST_ENV = "AEZOO_SERVE_TRUST_CODE"  # ... and whether its model may import your own networks (--trust-code)


def app_from_env():
    """The app of the index named by $AEZOO_SERVE_INDEX: what each of several uvicorn workers builds."""
    import os

    from ..models.parts import trusting_code

    with trusting_code(os.environ.get(TRUST_ENV) == "1"):
        return create_app(os.environ[INDEX_ENV])


def serve(index_dir: str, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False, announce=None,
          workers: int = 1) -> None:
    """Serve ``index_dir`` until interrupted; ``announce()`` is called once the index is loaded. With several
    ``workers``, uvicorn starts that many processes on the port, each loading the index and model itself."""
    try:
        import uvicorn
    except ImportError:
        raise UserError("aezoo serve needs FastAPI and uvicorn: pip install 'aezoo[serve]'") from None
    import socket

    app = create_app(index_dir)
    try:  # a busy port is a user error before uvicorn starts
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    if announce is not None:
        announce()
    level = "warning" if quiet else "info"
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level=level)
        return
    import os

    from ..models.parts import trusted

    os.environ[INDEX_ENV] = str(Path(index_dir).resolve())
    os.environ[TRUST_ENV] = "1" if trusted() else "0"
    uvicorn.run("aezoo.apps.serve:app_from_env", factory=True, host=host, port=port, log_level=level,
                workers=workers)


__all__ = ["create_app", "serve"]
