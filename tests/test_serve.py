"""aezoo serve: the API through FastAPI's test client, every bad input, concurrency, and the page in a
real headless Chromium."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import aezoo
from aezoo.apps.index import build_index
from aezoo.hashing import HashIndex

fastapi = pytest.importorskip("fastapi", reason="aezoo serve needs FastAPI (make installs it)")
from fastapi.testclient import TestClient  # noqa: E402

from aezoo.apps.serve import MAX_UPLOAD_BYTES, create_app  # noqa: E402

SLICE = Path(__file__).parent / "data" / "debian_slice.jsonl.gz"


def train(spec: str, out: Path, bits: int, **extra) -> Path:
    data = aezoo.data.load(spec)
    model = aezoo.create("hash", seed=0, input_shape=list(data.shape), data_kind=data.kind,
                         vocabulary=list(data.meta.get("vocabulary", ())), bits=bits, **extra)
    aezoo.Trainer(model, data, aezoo.TrainConfig(epochs=3, batch_size=64, threads=1, progress=False), out).fit()
    return out


@pytest.fixture(scope="module")
def indexes(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    image_run = train("digits", root / "image-run", 16, widths=[32])
    build_index(str(image_run), None, str(root / "image"), split="all", rerank=True, progress=False)
    text_run = train(f"text:{SLICE}?vocab=300", root / "text-run", 16)
    build_index(str(text_run), None, str(root / "text"), progress=False)
    return root


@pytest.fixture(scope="module")
def image_client(indexes):
    return TestClient(create_app(indexes / "image"), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def text_client(indexes):
    return TestClient(create_app(indexes / "text"), raise_server_exceptions=False)


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_image_index_info_items_thumbnails_and_searches(image_client, indexes):
    c = image_client
    info = c.get("/api/info").json()
    assert info["bits"] == 16 and info["count"] == 1797 and info["data_kind"] == "image"
    assert info["shows"] == "thumbnails" and info["map"] and info["rerank"] and "image" in info["queries"]
    r = c.post("/api/search", json={"item": "train/7", "k": 5}).json()
    assert len(r["results"]) == 5 and r["results"][0]["hamming"] == 0 and len(r["code"]) == 16
    assert [x["hamming"] for x in r["results"]] == sorted(x["hamming"] for x in r["results"])
    assert "train/7" in [x["id"] for x in r["results"] if x["hamming"] == 0]
    assert len(r["map"]) == 2 and all(len(x["map"]) == 2 for x in r["results"])
    # the thumbnail is the item itself (8x8 digits are kept at full size)
    thumb = c.get(r["results"][0]["thumbnail"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/png"
    digits = aezoo.data.load("digits")
    got = np.asarray(Image.open(io.BytesIO(c.get("/api/items/train%2F7/thumbnail.png").content)))
    np.testing.assert_allclose(got / 255, digits.train.x[7, 0].numpy(), atol=1 / 255 + 1e-6)
    rec = c.get("/api/items/train/7").json()  # a raw slash in the id works too
    assert rec["id"] == "train/7" and rec["label"] == str(int(digits.train.y[7])) and rec["thumbnail"]
    # an uploaded picture of an indexed item finds it at distance 0
    up = c.post("/api/search/image", files={"file": ("q.png", png_of(got), "image/png")}, data={"k": "3"}).json()
    assert up["results"][0]["hamming"] == 0 and up["code"] == r["code"]
    # radius: everything within it, nearest first; a code query; re-ranking
    rad = c.post("/api/search", json={"code": r["code"], "radius": 1}).json()
    assert rad["results"] and all(x["hamming"] <= 1 for x in rad["results"])
    ids_r0 = {x["id"] for x in c.post("/api/search", json={"code": r["code"], "radius": 0}).json()["results"]}
    assert ids_r0 == {x["id"] for x in rad["results"] if x["hamming"] == 0}
    rr = c.post("/api/search", json={"item": "train/7", "k": 5, "rerank": True}).json()
    assert rr["results"][0]["id"] == "train/7" and rr["results"][0]["rerank_distance"] == 0
    m = c.get("/api/map?limit=100").json()
    assert len(m["ids"]) == len(m["xy"]) == 100 and len(m["labels"]) == 100
    assert c.get("/docs").status_code == 200 and "/api/search" in c.get("/openapi.json").json()["paths"]
    assert "aezoo search" in c.get("/").text


def test_text_index_searches_by_text_and_shows_snippets(text_client):
    c = text_client
    info = c.get("/api/info").json()
    assert info["data_kind"] == "text" and info["shows"] == "texts" and info["queries"] == ["item", "code", "text"]
    r = c.post("/api/search", json={"text": "python library bindings module", "k": 10}).json()
    assert len(r["results"]) == 10 and all(x["snippet"] for x in r["results"])
    first = r["results"][0]
    rec = c.get(f"/api/items/{first['id']}").json()
    assert rec["text"].startswith(first["snippet"].removesuffix(" ...")) and "thumbnail" not in rec
    again = c.post("/api/search", json={"item": first["id"], "k": 3}).json()
    assert again["results"][0]["hamming"] == 0


BAD = [  # (method, path, request keyword arguments, status, words in the message)
    ("get", "/api/items/nope", {}, 404, "no item with id 'nope'"),
    ("get", "/api/items/nope/thumbnail.png", {}, 404, "no item"),
    ("post", "/api/search", {"json": {"item": "nope"}}, 404, "no item"),
    ("post", "/api/search", {"json": {"text": "   "}}, 422, None),
    ("post", "/api/search", {"json": {}}, 422, "exactly one"),
    ("post", "/api/search", {"json": {"item": "train/1", "code": "0" * 16}}, 422, "exactly one"),
    ("post", "/api/search", {"json": {"item": "train/1", "k": 0}}, 422, "k"),
    ("post", "/api/search", {"json": {"item": "train/1", "k": 5000}}, 422, "k"),
    ("post", "/api/search", {"json": {"item": "train/1", "radius": -1}}, 422, "radius"),
    ("post", "/api/search", {"json": {"item": "train/1", "radius": 99}}, 422, "radius"),
    ("post", "/api/search", {"json": {"item": "train/1", "k": "many"}}, 422, "k"),
    ("post", "/api/search", {"json": {"code": "01"}}, 422, "16 characters"),
    ("post", "/api/search", {"json": {"code": "2" * 16}}, 422, "0 or 1"),
    ("post", "/api/search", {"json": {"code": "0" * 16, "rerank": True}}, 422, "re-rank"),
    ("post", "/api/search", {"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, None),
    ("post", "/api/search/image", {"files": {"file": ("x.png", b"not an image", "image/png")}}, 415, "not an image"),
    ("post", "/api/search/image", {"files": {"file": ("x.png", b"", "image/png")}}, 422, "empty"),
    ("post", "/api/search/image", {"files": {"file": ("x.png", b"\x89PNG" + b"0" * MAX_UPLOAD_BYTES, "image/png")}},
     413, "larger than"),
    ("post", "/api/search/image", {}, 422, "file"),
    ("post", "/api/search/image", {"files": {"file": ("x.png", png_of(np.zeros((8, 8), np.uint8)), "image/png")},
                                   "data": {"k": "-3"}}, 422, "k"),
    ("get", "/api/map?limit=0", {}, 422, "limit"),
    ("get", "/api/map?limit=x", {}, 422, "limit"),
]
TEXT_BAD = [
    ("post", "/api/search", {"json": {"text": "zzzqqq xxyyzz"}}, 422, "vocabulary"),
    ("post", "/api/search", {"json": {"text": "python", "rerank": True}}, 422, "--rerank"),
    ("post", "/api/search/image", {"files": {"file": ("x.png", png_of(np.zeros((8, 8), np.uint8)), "image/png")}},
     422, "not images"),
]


@pytest.mark.parametrize("case", range(len(BAD) + len(TEXT_BAD)))
def test_bad_requests_are_json_4xx_with_a_message_never_500(case, image_client, text_client):
    client, (method, path, kwargs, status, words) = ((image_client, BAD[case]) if case < len(BAD) else
                                                     (text_client, TEXT_BAD[case - len(BAD)]))
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    text = detail if isinstance(detail, str) else json.dumps(detail)
    assert words is None or words in text, text


def test_many_simultaneous_requests_get_the_answers_one_at_a_time_gets(image_client):
    c = image_client
    ids = [f"train/{i}" for i in range(48)]
    one_by_one = [c.post("/api/search", json={"item": i, "k": 7}).json()["results"] for i in ids]
    digits = aezoo.data.load("digits")
    pics = [png_of((digits.train.x[i, 0].numpy() * 255).astype(np.uint8)) for i in range(8)]

    def ask(n):
        if n % 6 == 5:
            r = c.post("/api/search/image", files={"file": ("q.png", pics[n % 8], "image/png")}, data={"k": "3"})
            return n, r.status_code, r.json()["results"][0]["hamming"]
        r = c.post("/api/search", json={"item": ids[n], "k": 7, "radius": None})
        return n, r.status_code, r.json()["results"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(len(ids))))
    for n, status, got in answers:
        assert status == 200
        assert got == (0 if n % 6 == 5 else one_by_one[n]), n


def test_added_and_removed_items_keep_their_records_aligned(indexes, tmp_path):
    idx = HashIndex.load(indexes / "image")
    rng = np.random.default_rng(0)
    thumbs = rng.integers(0, 256, (3, 8, 8, 1), dtype=np.uint8)
    idx.add(rng.random((3, 16)) < 0.5, ["new/0", "new/1", "new/2"], ["x", "y", "z"],
            continuous=rng.normal(size=(3, 16)).astype(np.float32), thumbs=thumbs)
    idx.remove(["train/0", "new/1"])
    idx.save(tmp_path / "ix")
    back = HashIndex.load(tmp_path / "ix")
    n = len(back)
    assert back.thumbs.shape == (n, 8, 8, 1) and back.map.shape == (n, 2)
    for name, k in (("new/0", 0), ("new/2", 2)):
        pos = back.position(name)
        assert np.array_equal(back.thumbs[pos], thumbs[k]) and back.record(name)["label"] == "xyz"[k]
        np.testing.assert_allclose(back.map[pos], back.project(back.codes[pos:pos + 1])[0], rtol=1e-5)
    assert "train/0" not in back and "new/1" not in back
    with pytest.raises(aezoo.errors.UserError, match="pass thumbs="):
        back.add(rng.random((1, 16)) < 0.5, ["new/9"], continuous=np.zeros((1, 16), np.float32))
    text = HashIndex.load(indexes / "text")
    text.add(rng.random((1, 16)) < 0.5, ["doc-new"], ["l"], texts=["a new document"])
    assert text.record("doc-new")["text"] == "a new document"


# --- the page in a real browser -----------------------------------------------------------------------
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="Chromium or chromedriver is not installed (make test installs them where apt is usable)")
def test_the_page_in_headless_chromium_types_uploads_and_clicks(indexes, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "aezoo", "serve", str(indexes / "image"), "--port", str(port),
                               "--quiet"], stderr=subprocess.PIPE, text=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
                 f"--user-data-dir={tmp_path / 'profile'}", "--disable-background-networking", "--no-first-run"):
        opts.add_argument(flag)
    driver = None
    try:
        assert "serving" in server.stderr.readline()  # the index is loaded; uvicorn binds next
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
        wait = WebDriverWait(driver, 60)
        driver.get(f"http://127.0.0.1:{port}/")
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "ready"))
        assert "1,797 items" in driver.find_element(By.ID, "facts").text
        # type a query (an item's id on an image index), see results
        driver.find_element(By.ID, "q").send_keys("train/7\n")
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "for item train/7"))
        results = driver.find_elements(By.CSS_SELECTOR, "#results .result")
        assert len(results) == 24
        thumb = results[0].find_element(By.TAG_NAME, "img")  # loaded by the browser after the text is shown
        wait.until(lambda _: thumb.get_property("complete") and thumb.get_property("naturalWidth") > 0)
        # upload an image, see results
        digit = (aezoo.data.load("digits").train.x[3, 0].numpy() * 255).astype(np.uint8)
        Image.fromarray(digit).save(tmp_path / "three.png")
        driver.find_element(By.ID, "file").send_keys(str(tmp_path / "three.png"))
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "for image three.png"))
        first = driver.find_elements(By.CSS_SELECTOR, "#results .result")[0]
        assert first.text.endswith("d=0")
        # click a result, see its neighbours
        second = driver.find_elements(By.CSS_SELECTOR, "#results .result")[1]
        clicked = second.get_attribute("data-id")
        second.click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), f"for item {clicked}"))
        assert driver.find_element(By.ID, "q").get_property("value") == clicked
        shot = os.environ.get("AEZOO_SCREENSHOT")  # README's picture: AEZOO_SCREENSHOT=docs/serve.png
        driver.save_screenshot(shot or str(tmp_path / "page.png"))
        # a bad query shows the server's message, not a crash
        driver.find_element(By.ID, "mode-r").click()
        radius = driver.find_element(By.ID, "radius")
        radius.clear()
        radius.send_keys("99")
        driver.find_element(By.ID, "search").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "status"), "radius"))
        assert "error" in driver.find_element(By.ID, "status").get_attribute("class")
    finally:
        if driver is not None:
            driver.quit()
        server.terminate()
        server.wait(timeout=30)


def test_several_workers_each_load_the_index_and_answer(indexes):
    import httpx

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "aezoo", "serve", str(indexes / "image"), "--port", str(port),
                               "--quiet", "--workers", "2"], stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in server.stderr.readline()
        deadline, answers = time.monotonic() + 60, []
        while time.monotonic() < deadline and len(answers) < 20:
            try:
                r = httpx.post(f"http://127.0.0.1:{port}/api/search", json={"item": "train/3", "k": 5}, timeout=10)
                answers.append(r.json())
            except httpx.TransportError:
                time.sleep(0.2)
        assert len(answers) == 20 and all(a["results"] == answers[0]["results"] for a in answers)
        assert answers[0]["results"][0]["hamming"] == 0 and "train/3" in [x["id"] for x in answers[0]["results"]]
    finally:
        server.terminate()
        server.wait(timeout=30)
