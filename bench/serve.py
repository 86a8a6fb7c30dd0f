"""aezoo serve under load: requests/s and latency at 1, 8 and 64 concurrent clients, against the library
called directly (issue 19).

    apt-get install wrk   # the load generator (else Python threads, which cost the server's cores more)
    .venv/bin/python bench/serve.py [--seconds 10] [--clients 1,8,64] [--workers 1,2] [--train-minutes 1]

Two indexes, each built from a ``hash`` model trained for ``--train-minutes`` (32 bits, defaults
otherwise): Fashion-MNIST (the 60,000 training images) and the Debian package descriptions of
``../shared/data`` (text). Each is served by ``aezoo serve --workers W`` (uvicorn; W processes), and a
load generator keeps N clients busy for ``--seconds`` each, every client with its own keep-alive
connection: wrk (Debian's package, a C program) when installed, after 20 answers are checked through
httpx; else N Python threads with httpx. The queries ask for k = 10: text queries (the first 8 words of
held-out documents, those with at least one word of the model's vocabulary) on the text index, item
queries on the image index. Reported per level: requests/s, p50 and p99 latency, errors (non-2xx
answers, socket errors). "library" is the same queries through :mod:`aezoo.apps.index` in one thread (encode, then search)
with no HTTP. The load generator shares the machine's 2 cores with the server, as a client on the same
host would. Writes ``bench/results/serve.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ROOT.parent / "shared" / "data" / "debian_descriptions.jsonl.gz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_and_index(spec: str, root: Path, name: str, minutes: float) -> Path:
    run, index = root / f"{name}-run", root / name
    cli = [sys.executable, "-m", "aezoo"]
    subprocess.run([*cli, "train", "hash", "--data", spec, "--out", str(run), "--max-minutes", str(minutes),
                    "--set", "bits=32", "--quiet"], check=True, capture_output=True)
    subprocess.run([*cli, "index", "build", str(run), "--out", str(index), "--quiet"], check=True, capture_output=True)
    return index


def load(port: int, bodies: list[dict], clients: int, seconds: float) -> dict:
    import httpx

    lat: list[float] = []
    errors = 0
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def client(c: int) -> None:
        nonlocal errors
        mine, bad, n = [], 0, c
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as h:
            while time.perf_counter() < stop:
                body = bodies[n % len(bodies)]
                n += clients
                t = time.perf_counter()
                try:
                    r = h.post("/api/search", json=body)
                    ok = r.status_code == 200 and len(r.json()["results"]) == body["k"]
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - t)
                bad += not ok
        with lock:
            lat.extend(mine)
            errors += bad

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"clients": clients, "requests": len(lat), "rps": len(lat) / wall, "errors": errors,
            "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))]}


WRK_SCRIPT = """
local bodies = %s
local i = 0
function init(args) i = tonumber(args[1]) or 0 end
function request()
  i = i + 1
  return wrk.format("POST", "/api/search", {["Content-Type"] = "application/json"}, bodies[(i %% #bodies) + 1])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    e.status + e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def load_wrk(port: int, bodies: list[dict], clients: int, seconds: float) -> dict:
    """The same load from wrk: ``clients`` keep-alive connections on up to 2 threads; a non-2xx answer or a
    socket error is an error."""
    import httpx

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as h:  # answers checked, then timed
        for body in bodies[:20]:
            r = h.post("/api/search", json=body)
            assert r.status_code == 200 and len(r.json()["results"]) == body["k"], r.text[:200]
    lua = "{" + ",".join(json.dumps(json.dumps(b)) for b in bodies) + "}"
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_SCRIPT % lua)
    try:
        r = subprocess.run(["wrk", f"-t{min(2, clients)}", f"-c{clients}", f"-d{max(1, round(seconds))}s", "-s", f.name,
                            f"http://127.0.0.1:{port}/api/search"], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if r.returncode != 0 or "RESULT" not in r.stdout:
        raise RuntimeError(f"wrk failed: {r.stderr.strip() or r.stdout.strip()}")
    n, us, errors, p50, p99 = map(int, next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT")).split()[1:])
    return {"clients": clients, "requests": n, "rps": n / (us / 1e6), "errors": errors, "p50_ms": p50 / 1000,
            "p99_ms": p99 / 1000, "load": "wrk"}


def library_rate(index_dir: Path, bodies: list[dict], seconds: float) -> float:
    import torch

    from aezoo.apps.index import encode_codes, index_model, query_item
    from aezoo.hashing import HashIndex

    torch.set_num_threads(1)
    index = HashIndex.load(index_dir)
    model = index_model(index, index_dir)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        body = bodies[n % len(bodies)]
        if "text" in body:
            bits, _ = encode_codes(model, query_item(model, text=body["text"]))
        else:
            bits, _ = index.code_of(body["item"])
        index.search(bits if not hasattr(bits, "numpy") else bits.numpy(), body["k"])
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10.0, help="per concurrency level")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--train-minutes", type=float, default=1.0)
    ap.add_argument("--workers", default="1,2", help="server processes (aezoo serve --workers), each level run")
    ap.add_argument("--client", choices=["wrk", "python"], default="wrk" if shutil.which("wrk") else "python",
                    help="load generator (default: wrk when installed)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    a = ap.parse_args()
    from aezoo.env import machine_info

    docs = [json.loads(line) for line in gzip.open(TEXTS, "rt")]
    text_bodies = [{"text": " ".join(d["text"].split()[:8]), "k": 10} for d in docs[-500:]]
    image_bodies = [{"item": f"train/{i}", "k": 10} for i in range(0, 50000, 97)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name, spec, bodies in (("text", f"text:{TEXTS}", text_bodies), ("fmnist", "fashion-mnist", image_bodies)):
            print(f"{name}: training and indexing", file=sys.stderr, flush=True)
            index = train_and_index(spec, root, name, a.train_minutes)
            if name == "text":  # queries with no word of the model's vocabulary are bad requests (422): left out
                from aezoo.apps.index import index_model
                from aezoo.data.text import count_words
                from aezoo.hashing import HashIndex

                vocab = index_model(HashIndex.load(index), index).config.vocabulary
                bodies = [b for b in bodies if count_words([b["text"]], vocab).sum() > 0]
            for workers in map(int, a.workers.split(",")):
                port = free_port()
                server = subprocess.Popen([sys.executable, "-m", "aezoo", "serve", str(index), "--port", str(port),
                                           "--quiet", "--workers", str(workers)],
                                          stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
                try:
                    server.stderr.readline()
                    for _ in range(300):
                        with socket.socket() as s:
                            if s.connect_ex(("127.0.0.1", port)) == 0:
                                break
                        time.sleep(0.1)
                    time.sleep(1.0 * (workers > 1))  # every worker up
                    gen = load_wrk if a.client == "wrk" else load
                    gen(port, bodies, 4, 2.0)  # warm-up
                    for clients in map(int, a.clients.split(",")):
                        row = {"index": name, "workers": workers, **gen(port, bodies, clients, a.seconds)}
                        rows.append(row)
                        print(json.dumps(row), file=sys.stderr, flush=True)
                finally:
                    server.terminate()
                    server.wait()
            rate = library_rate(index, bodies, a.seconds)
            rows.append({"index": name, "clients": "library", "rps": rate})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print("| index | workers | clients | requests/s | p50 ms | p99 ms | errors | server / library |")
    print("|---|---|---|---|---|---|---|---|")
    for name in ("text", "fmnist"):
        lib = next(r["rps"] for r in rows if r["index"] == name and r["clients"] == "library")
        for r in rows:
            if r["index"] != name:
                continue
            if r["clients"] == "library":
                print(f"| {name} | - | library, 1 thread | {r['rps']:,.0f} | - | - | - | 1.00 |")
            else:
                print(f"| {name} | {r['workers']} | {r['clients']} | {r['rps']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
                      f"{r['errors']} | {r['rps'] / lib:.2f} |")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps({"args": vars(a), "machine": machine_info(), "rows": rows,
                                   "median_p99_ms": statistics.median(r["p99_ms"] for r in rows if "p99_ms" in r)},
                                  indent=1))
    tmp_out.replace(out)


if __name__ == "__main__":
    main()
