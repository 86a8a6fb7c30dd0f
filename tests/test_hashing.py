"""Semantic hashing: the hash model, the text loader, the FAISS-backed index and the index CLI."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import aezoo
from aezoo import data
from aezoo.errors import UserError
from aezoo.eval.retrieval import hamming_distances
from aezoo.hashing import HashIndex, pack_bits, unpack_bits
from aezoo.models.base import LossStep
from aezoo.outputs import Batch
from conftest import run_cli

SLICE = Path(__file__).parent / "data" / "debian_slice.jsonl.gz"  # 400 documents, 4 labels


def one_line_error(r, pattern):
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aezoo: error: ") and pattern in lines[0], r.stderr


# --- codes and the index ----------------------------------------------------------------------------
def planted_codes(n=3000, bits=32, seed=0):
    """Random codes plus, for the first 20, copies with 1, 2 and 3 bits flipped."""
    rng = np.random.default_rng(seed)
    b = rng.random((n, bits)) < 0.5
    near = []
    for i in range(min(20, n)):
        for flips in (1, 2, 3):
            c = b[i].copy()
            c[rng.choice(bits, flips, replace=False)] ^= True
            near.append(c)
    return np.concatenate([b, np.array(near)])


def brute_radius(codes, q, r):
    d = (codes != q).sum(1)
    return set(np.flatnonzero(d <= r).tolist()), d


def test_pack_bits_round_trip_and_faiss_bit_order():
    import faiss

    codes = planted_codes(200, 24)
    packed = pack_bits(codes)
    assert packed.shape == (len(codes), 3) and (unpack_bits(packed, 24) == codes).all()
    flat = faiss.IndexBinaryFlat(24)
    flat.add(packed)
    dist, pos = flat.search(packed[:5], len(codes))
    for i in range(5):  # FAISS's popcount distances agree with counting differing booleans
        expect = (codes != codes[i]).sum(1)
        assert (expect[pos[i]] == dist[i]).all()
    assert (hamming_distances(packed[:3], packed) == (codes[:3, None] != codes[None]).sum(2)).all()


@pytest.mark.parametrize("kind,bits", [("hash", 32), ("multihash", 32), ("multihash", 64), ("flat", 32)])
@pytest.mark.parametrize("r", [0, 1, 2])
def test_radius_search_finds_exactly_the_codes_within_r(kind, bits, r):
    codes = planted_codes(bits=bits)
    idx = HashIndex(bits, kind, nhash=2 if kind == "multihash" else None)
    idx.add(codes, [f"i{n}" for n in range(len(codes))])
    results = idx.radius_raw(codes[:20], r)
    for q in range(20):
        want, d = brute_radius(codes, codes[q], r)
        dist, pos = results[q]
        assert set(pos.tolist()) == want
        assert (np.diff(dist) >= 0).all() and (d[pos] == dist).all()


def test_knn_search_is_exact_with_the_flat_index_and_ordered():
    codes = planted_codes(bits=64)
    idx = HashIndex(64, "flat")
    idx.add(codes, list(range(len(codes))))
    res = idx.search(codes[:3], k=5)
    for q, r in enumerate(res):
        d = np.sort((codes != codes[q]).sum(1))[:5]
        assert r.hamming == d.tolist() and r.ids[0] == str(q)


@pytest.mark.parametrize("kind", ["hash", "multihash"])
def test_knn_on_hash_tables_is_exact_beyond_the_lookup_radius(kind):
    codes = planted_codes(300, bits=32)
    idx = HashIndex(32, kind)
    idx.add(codes, list(range(len(codes))))
    far = ~codes[:1]  # the complement: every item is far beyond radius 2
    r = idx.search(far, k=7)[0]
    assert len(r.ids) == 7 and r.hamming == np.sort((codes != far[0]).sum(1))[:7].tolist()


def test_ivf_index_finds_planted_neighbours():
    codes = planted_codes(bits=32)
    idx = HashIndex(32, "ivf", nlist=16, nprobe=16)  # probing every list: exact
    idx.add(codes, list(range(len(codes))))
    r = idx.search(codes[:1], k=4)[0]
    assert r.hamming == np.sort((codes != codes[0]).sum(1))[:4].tolist()


def test_remove_and_rerank():
    codes = planted_codes(bits=32)
    cont = np.random.default_rng(1).random(codes.shape).astype(np.float32)
    idx = HashIndex(32, "hash", keep_continuous=True)
    ids = [f"i{n}" for n in range(len(codes))]
    idx.add(codes, ids, labels=["a"] * len(codes), continuous=cont)
    near0 = idx.radius_search(codes[:1], 3)[0].ids
    assert "i0" in near0 and len(near0) >= 4
    assert idx.remove(["i0", near0[-1]]) == 2 and len(idx) == len(codes) - 2
    again = idx.radius_search(codes[:1], 3)[0].ids
    assert "i0" not in again and set(again) == set(near0) - {"i0", near0[-1]}
    with pytest.raises(UserError, match="not in the index"):
        idx.remove(["i0"])
    # re-ranking orders the candidates by distance between continuous codes
    r = idx.search(codes[1:2], k=3, rerank=cont[1:2])[0]
    assert r.rerank_distance == sorted(r.rerank_distance) and r.ids[0] == "i1" and r.rerank_distance[0] == 0
    with pytest.raises(UserError, match="already in the index"):
        idx.add(codes[:1], ["i5"], continuous=cont[:1])


def test_index_settings_are_checked():
    with pytest.raises(UserError, match="at most 64 bits"):
        HashIndex(128, "hash")
    with pytest.raises(UserError, match="unknown index kind"):
        HashIndex(32, "lsh")
    idx = HashIndex(32)
    with pytest.raises(UserError, match="empty"):
        idx.search(planted_codes(10, 32), 3)
    c = planted_codes(10, 32)
    idx.add(c, list(range(len(c))))
    with pytest.raises(UserError, match="16-bit query"):
        idx.search(planted_codes(10, 16), 3)


def test_save_load_round_trip_and_corrupt_files(tmp_path):
    codes = planted_codes(bits=64)
    idx = HashIndex(64, "multihash", model={"run_dir": "x"})
    idx.add(codes, [f"i{n}" for n in range(len(codes))], labels=["a", "b"] * (len(codes) // 2))
    idx.save(tmp_path / "ix")
    back = HashIndex.load(tmp_path / "ix")
    assert back.ids == idx.ids and back.labels == idx.labels and back.kind == "multihash"
    a, b = idx.radius_raw(codes[:5], 2), back.radius_raw(codes[:5], 2)
    assert all((x[1] == y[1]).all() for x, y in zip(a, b))
    assert back.memory_bytes() > len(codes) * 8

    f = tmp_path / "ix" / "index.faiss"
    good = f.read_bytes()
    raw = bytearray(good)
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="corrupt"):
        HashIndex.load(tmp_path / "ix")
    f.write_bytes(good)
    (tmp_path / "ix" / "codes.npy").unlink()
    with pytest.raises(UserError, match="missing"):
        HashIndex.load(tmp_path / "ix")
    with pytest.raises(UserError, match="not an aezoo index"):
        HashIndex.load(tmp_path)


def test_manifest_that_disagrees_with_the_index_is_refused(tmp_path):
    small, big = HashIndex(32, "flat"), HashIndex(32, "flat")
    a, b = planted_codes(10, 32), planted_codes(100, 32)
    small.add(a, list(range(len(a))))
    big.add(b, list(range(len(b))))
    small.save(tmp_path / "a")
    big.save(tmp_path / "b")
    # a consistent-looking manifest over another index's files: the digests catch it
    (tmp_path / "a" / "index.faiss").write_bytes((tmp_path / "b" / "index.faiss").read_bytes())
    with pytest.raises(UserError, match="corrupt"):
        HashIndex.load(tmp_path / "a")
    # digests updated to match, counts still disagree
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    from aezoo.hashing import sha256

    man["files"]["index.faiss"] = sha256(tmp_path / "a" / "index.faiss")
    (tmp_path / "a" / "manifest.json").write_text(json.dumps(man))
    with pytest.raises(UserError, match="disagree"):
        HashIndex.load(tmp_path / "a")


# --- the model --------------------------------------------------------------------------------------
def test_noise_code_trains_noisy_and_evaluates_clean():
    m = aezoo.create("hash", input_shape=(1, 8, 8), widths=[16], bits=8, noise_std=4.0)
    logits = torch.zeros(1000, 8)
    m.train()
    noisy = m.train_code(logits)
    assert 0.3 < noisy.std().item() < 0.5  # sigmoid(N(0, 16)) spreads towards 0 and 1
    m.eval()
    assert torch.equal(m.train_code(logits), torch.full((1000, 8), 0.5))


def test_whitening_decorrelates_in_training_and_uses_running_statistics_in_eval():
    from aezoo.models.hashing import Whitening

    g = torch.Generator().manual_seed(0)
    mix = torch.tensor([[2.0, 0, 0], [1.5, 0.5, 0], [0, 0, 3.0]])  # correlated columns
    w = Whitening(3, momentum=0.5)
    x = torch.randn(4000, 3, generator=g) @ mix + torch.tensor([1.0, -2.0, 0.5])
    x.requires_grad_(True)
    y = w(x)
    c = torch.cov(x.detach().T.double(), correction=0)
    want = c @ torch.linalg.inv(c + 1e-3 * torch.eye(3, dtype=torch.float64))  # C (C + eps I)^-1: ~identity
    assert torch.allclose(y.detach().mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(torch.cov(y.detach().T.double(), correction=0), want, atol=1e-4)
    assert torch.allclose(want, torch.eye(3, dtype=torch.float64), atol=1e-2)
    y[:, 0].sum().backward()  # gradients reach the input through the eigendecomposition
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for _ in range(30):  # running statistics converge to the batch's
        w(x.detach())
    w.eval()
    assert torch.allclose(w(x.detach()), y.detach(), atol=1e-3)
    w.train()
    with pytest.raises(UserError, match="at least 2"):
        w(torch.zeros(1, 3))


def test_defaults_depend_on_the_data_and_the_code_length():
    """TF-IDF text: a linear encoder (a binary autoencoder); images: the paper's 500-500 encoder. Up to 16
    bits whitened codes with noise std 2, above that per-bit batch norm with noise std 8."""
    from aezoo.models.hashing import Whitening

    short = aezoo.create("hash", input_shape=(50,), data_kind="text", bits=16)
    assert isinstance(short.code_norm, Whitening) and short.config.resolved_noise_std == 2.0
    assert short.config.resolved_widths == () and len(short.encoder) == 1
    long = aezoo.create("hash", input_shape=(50,), data_kind="text", bits=32)
    assert isinstance(long.code_norm, torch.nn.BatchNorm1d) and long.config.resolved_noise_std == 8.0
    img = aezoo.create("hash", input_shape=(1, 8, 8), bits=16)
    assert isinstance(img.code_norm, Whitening) and img.config.resolved_widths == (500, 500)
    img = aezoo.create("hash", input_shape=(1, 8, 8), bits=32)
    assert isinstance(img.code_norm, torch.nn.BatchNorm1d) and img.config.resolved_noise_std == 8.0
    paper = aezoo.create("hash", input_shape=(50,), data_kind="text", preset="salakhutdinov2009")
    assert paper.config.resolved_widths == (500, 500) and not paper.config.resolved_whiten
    chosen = aezoo.create("hash", input_shape=(50,), data_kind="text", bits=16, noise_std=5.0)
    assert chosen.config.resolved_noise_std == 5.0
    with pytest.raises(UserError, match="needs balance=true"):
        aezoo.create("hash", input_shape=(50,), data_kind="text", whiten=True, balance=False)


def test_multinomial_loss_is_the_word_count_weighted_log_softmax():
    m = aezoo.create("hash", input_shape=(5,), data_kind="text", widths=[4], bits=8, norm="none", text_input="counts")
    assert m.config.resolved_likelihood == "multinomial"
    m.eval()
    x = torch.tensor([[2.0, 0, 1, 0, 0], [0, 0, 0, 3, 1]])
    out = m.loss(Batch(x), LossStep())
    p = torch.softmax(m.decoder_output(torch.sigmoid(m.code_logits(x))), -1)
    want = -(x * p.log()).sum(1).mean()
    assert torch.allclose(out.loss, want, atol=1e-5)
    assert torch.allclose(m(x).sum(1), x.sum(1))  # reconstruction keeps the document length


def test_tfidf_text_input_and_its_squared_error_loss():
    """Default text input: counts x IDF (from the training documents, sklearn's smooth formula), scaled to
    length 10; the decoder reconstructs that vector; reconstructions come back as expected counts."""
    from aezoo.data import Split

    counts = torch.tensor([[2.0, 0, 1, 0, 0], [0, 0, 0, 3, 1], [1, 1, 0, 0, 0], [0, 0, 4, 0, 0]])
    m = aezoo.create("hash", input_shape=(5,), data_kind="text", widths=[4], bits=8, norm="none", neighbours=0)
    assert m.config.resolved_likelihood == "gaussian"
    m.prepare(Split(counts))
    df = (counts > 0).sum(0).double()
    idf = torch.log((1 + 4) / (1 + df)) + 1
    assert torch.allclose(m.idf.double(), idf)
    x = counts[:2]
    t = x * idf.float()
    t = 10 * t / t.norm(dim=1, keepdim=True)
    assert torch.allclose(m.input_features(x), t, atol=1e-5)
    m.eval()
    out = m.loss(Batch(x), LossStep())
    want = (m.decoder_output(torch.sigmoid(m.code_logits(x))) - t).square().sum(1).mean()
    assert torch.allclose(out.loss, want, atol=1e-4)
    rec = m(x)
    assert (rec >= 0).all() and torch.allclose(rec.sum(1), x.sum(1))
    # the decoder's outputs for the first document all negative, for the second one positive word: the first
    # gets every word an equal share of its length, the second all of its length on that word
    out = torch.tensor([[-3.0, -1, -2, -5, -1], [-1.0, -2, 4, -1, -3]])
    m.decoder_output = lambda code: out
    rec = m(x)
    assert torch.allclose(rec, torch.tensor([[0.6, 0.6, 0.6, 0.6, 0.6], [0.0, 0, 4, 0, 0]]))
    out[1, 2] = float("nan")  # a diverged decoder is not hidden behind equal shares
    assert torch.isnan(m(x)[1]).all() and not torch.isnan(m(x)[0]).any()
    # the IDF weights are saved with the model
    assert "idf" in m.state_dict()


def test_nearest_neighbours_leave_out_the_item_itself_and_match_brute_force():
    from aezoo.models.hashing import nearest_neighbours

    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    x[1] = x[0]  # an exact duplicate: each is the other's nearest neighbour, never itself
    nb = nearest_neighbours(x, 5, dims=6)  # dims >= D: no PCA, plain cosine
    assert nb.shape == (200, 5) and nb.dtype == np.int64
    assert (nb != np.arange(200)[:, None]).all()
    assert nb[0, 0] == 1 and nb[1, 0] == 0
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = u @ u.T
    np.fill_diagonal(sim, -np.inf)
    want = np.argsort(-sim, axis=1)[:, :5]
    agree = np.mean([set(a) == set(b) for a, b in zip(nb[2:], want[2:])])
    assert agree > 0.99
    low = nearest_neighbours(x, 3, dims=2)  # through FAISS's PCA to 2 dimensions
    assert low.shape == (200, 3) and (low != np.arange(200)[:, None]).all()
    with pytest.raises(UserError, match="at least 2"):
        nearest_neighbours(x[:1], 3, dims=2)


def test_neighbour_reconstruction_adds_the_neighbours_loss_in_training_only():
    from aezoo.data import Split

    rng = np.random.default_rng(0)
    counts = torch.from_numpy(rng.poisson(1.0, (40, 12)).astype(np.float32))
    m = aezoo.create("hash", input_shape=(12,), data_kind="text", widths=[8], bits=8, norm="none",
                     noise_std=0.0, balance=False, neighbours=1, neighbour_dims=4, neighbour_weight=0.5)
    m.prepare(Split(counts))
    table = m._neighbours
    assert table.shape == (40, 1) and (table[:, 0] != torch.arange(40)).all()
    idx = torch.tensor([3, 7, 11])
    m.train()
    out = m.loss(Batch(counts[idx], index=idx), LossStep())
    dec = m.decoder_output(torch.sigmoid(m.code_logits(counts[idx])))
    own = (dec - m.input_features(counts[idx])).square().sum(1).mean()
    nbr = (dec - m.input_features(counts[table[idx, 0]])).square().sum(1).mean()
    assert torch.allclose(out.loss, own + 0.5 * nbr, atol=1e-4)
    assert torch.allclose(out.metrics["neighbour_loss"], nbr, atol=1e-4)
    m.eval()  # validation: no neighbours (the batch is not from the training split)
    assert torch.allclose(m.loss(Batch(counts[idx], index=idx), LossStep()).loss, own, atol=1e-4)
    assert aezoo.create("hash", input_shape=(1, 8, 8)).config.resolved_neighbours == 0  # images: off by default
    with pytest.raises(UserError, match="neighbours must be >= 0"):
        aezoo.create("hash", input_shape=(12,), data_kind="text", neighbours=-1)


def test_text_hash_with_neighbours_resumes_exactly(tmp_path):
    """The neighbour table is rebuilt on resume and the neighbour draws come from the restored RNG."""
    ds = data.load(f"text:{SLICE}?vocab=200")

    def make():
        return aezoo.create("hash", seed=0, input_shape=ds.shape, data_kind="text", widths=[32], bits=8,
                            vocabulary=ds.meta["vocabulary"])

    base = dict(epochs=2, batch_size=32, seed=3, progress=False, checkpoint_every=0)
    full = make()
    aezoo.Trainer(full, ds, aezoo.TrainConfig(**base), tmp_path / "full").fit()
    part = make()
    aezoo.Trainer(part, ds, aezoo.TrainConfig(**base, max_minutes=1e-9), tmp_path / "part").fit()
    resumed = make()
    aezoo.Trainer(resumed, ds, aezoo.TrainConfig(**base), tmp_path / "part").fit(resume=True)
    a, b = full.state_dict(), resumed.state_dict()
    assert full.config.resolved_neighbours == 10 and "idf" in a
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("decoder_widths,epochs,whiten,floor", [
    (None, 30, False, 0.6),  # the paper's mirrored decoder, per-bit batch norm (measured 0.67)
    ((), 60, False, 0.6),  # linear decoder (0.68)
    ((), 60, True, 0.5),  # whitened codes, the default at 16 bits (0.57 on these 1,400 images)
])
def test_hash_model_learns_neighbourhoods_on_digits(digits, decoder_widths, epochs, whiten, floor):
    """Codes of a briefly trained model put same-label digits closer than different-label ones."""
    torch.manual_seed(0)
    m = aezoo.create("hash", input_shape=digits.shape, widths=[128], bits=16, decoder_widths=decoder_widths,
                     whiten=whiten)
    aezoo.Trainer(m, digits, aezoo.TrainConfig(epochs=epochs, batch_size=64, progress=False), run_dir=None).fit()
    from aezoo.apps.index import encode_codes

    bits, _ = encode_codes(m, digits.test.x)
    idx = HashIndex(16, "flat")
    idx.add(bits, list(range(len(bits))), labels=digits.test.y.tolist())
    res = idx.search(bits, k=11)
    y = digits.test.y.tolist()
    prec = np.mean([np.mean([lab == str(y[q]) for lab in r.labels[1:]]) for q, r in enumerate(res)])
    assert prec > floor  # chance: 0.1
    assert (bits.float().mean(0) > 0.02).all() and (bits.float().mean(0) < 0.98).all()  # no dead bits


# --- text -------------------------------------------------------------------------------------------
def test_text_jsonl_loader_on_the_corpus_slice():
    ds = data.load(f"text:{SLICE}?vocab=300")
    assert ds.kind == "text" and ds.shape == (300,) and len(ds.meta["vocabulary"]) == 300
    assert len(ds.train) + len(ds.val) + len(ds.test) == 400 and len(ds.test) == 40
    assert sorted(ds.classes) == ["doc", "games", "python", "science"]
    assert ds.train.ids[0] and ds.train.x.sum() > 0 and (ds.train.x == ds.train.x.round()).all()
    docs = [json.loads(line) for line in gzip.open(SLICE, "rt")]
    by_id = {d["id"]: d for d in docs}
    vocab = ds.meta["vocabulary"]
    doc = by_id[ds.test.ids[0]]
    words = doc["text"].lower()
    for j in torch.nonzero(ds.test.x[0]).flatten().tolist():
        assert vocab[j] in words  # every counted word occurs in the document
    again = data.load(f"text:{SLICE}", vocabulary=vocab[:50])  # a model's vocabulary is reused as is
    assert again.shape == (50,) and torch.equal(again.test.x, ds.test.x[:, :50])


def test_text_folder_and_lines(tmp_path):
    for lab, words in {"space": "rockets fly to orbit around the moon", "food": "bread and butter cake"}.items():
        (tmp_path / "f" / lab).mkdir(parents=True)
        for i in range(10):
            (tmp_path / "f" / lab / f"{i}.txt").write_text(words + f" item{'x' * i}")
    ds = data.load(f"text:{tmp_path / 'f'}")
    assert ds.classes == ["food", "space"] and len(ds.train) + len(ds.val) + len(ds.test) == 20
    assert "food/0.txt" in ds.train.ids + ds.val.ids + ds.test.ids
    (tmp_path / "docs.txt").write_text("alpha beta gamma\n\n" + "beta gamma delta\n" * 11)
    ds = data.load(f"text:{tmp_path / 'docs.txt'}")
    assert ds.train.y is None and len(ds.train) + len(ds.val) + len(ds.test) == 12


def test_repeated_ids_are_made_unique(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text("".join(f'{{"id": "pkg", "text": "word{i} common text"}}\n' for i in range(12)))
    ds = data.load(f"text:{p}")
    ids = ds.train.ids + ds.val.ids + ds.test.ids
    assert len(set(ids)) == 12 and "pkg" in ids and "pkg#12" in ids


@pytest.mark.parametrize("content,message", [
    ('{"text": "ok"}\n{"text": \n', "line 2 is not valid JSON"),
    ('{"text": "ok"}\n{"body": "no text"}\n', "line 2 has no string field 'text'"),
    ('{"text": "a b", "label": "x"}\n{"text": "c d"}\n{"text": "e f", "label": "y"}\n', "have no label"),
    ("", "no documents"),
])
def test_malformed_text_files(tmp_path, content, message):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(UserError, match=message):
        data.load(f"text:{p}")


# --- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("hashcli")
    run, index = root / "run", root / "index"
    r = run_cli("train", "hash", "--data", f"text:{SLICE}?vocab=500", "--out", run, "--epochs", "15",
                "--batch-size", "32", "--set", "bits=16", "--set", "widths=[64]", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("index", "build", run, "--out", index, "--rerank", "--quiet")
    assert r.returncode == 0, r.stderr
    return run, index


def test_cli_text_index_build_and_search(text_index):
    run, index = text_index
    assert json.loads((run / "config.json").read_text())["config"]["vocabulary"][:1]
    ev = json.loads((run / "eval.json").read_text())
    assert "psnr" not in ev and ev["recon_sse_per_item"] > 0 and not (run / "reconstructions.png").exists()
    assert "<h2>Reconstructions</h2>" not in (run / "report.html").read_text()
    man = json.loads((index / "manifest.json").read_text())
    assert man["bits"] == 16 and man["kind"] == "hash" and man["count"] == 324
    r = run_cli("index", "search", index, "--text", "python module library bindings", "-k", "5")
    assert r.returncode == 0, r.stderr
    rows = r.stdout.strip().splitlines()
    assert len(rows) == 5 and rows[0].split()[0] == "1"
    r = run_cli("index", "search", index, "--item", man["ids"][0], "--radius", "2", "--json")
    res = json.loads(r.stdout)
    assert man["ids"][0] in res["ids"] and res["hamming"][0] == 0
    assert max(res["hamming"]) <= 2 and res["hamming"] == sorted(res["hamming"])
    r = run_cli("index", "search", index, "--item", man["ids"][0], "-k", "3", "--rerank", "--json")
    res = json.loads(r.stdout)
    assert res["rerank_distance"] == sorted(res["rerank_distance"])


def test_cli_index_errors(text_index, tmp_path):
    run, index = text_index
    one_line_error(run_cli("index", "search", index, "--item", "no-such-package"), "no item with id")
    one_line_error(run_cli("index", "search", index, "--image", "x.png"), "--image needs")
    one_line_error(run_cli("index", "search", index, "--text", "zzzz qqqq"), "none of the query's words")
    one_line_error(run_cli("index", "build", run, "--out", index), "exists")
    bad = tmp_path / "bad"
    shutil.copytree(index, bad)
    (bad / "codes.npy").write_bytes(b"garbage")
    one_line_error(run_cli("index", "search", bad, "--item", "x"), "corrupt")


def test_cli_image_index_search_by_image_file(tmp_path):
    run, index = tmp_path / "run", tmp_path / "ix"
    r = run_cli("train", "hash", "--data", "digits", "--out", run, "--epochs", "3", "--set", "bits=8",
                "--set", "widths=[32]", "--quiet")
    assert r.returncode == 0, r.stderr
    r = run_cli("index", "build", run, "--out", index, "--kind", "flat", "--quiet")
    assert r.returncode == 0, r.stderr
    ds = data.load("digits")
    img = (ds.train.x[7, 0].numpy() * 255).astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "q.png")
    r = run_cli("index", "search", index, "--image", tmp_path / "q.png", "-k", "3", "--json")
    res = json.loads(r.stdout)
    assert res["hamming"][0] == 0  # the query's code is train/7's, which is indexed
    one_line_error(run_cli("index", "search", index, "--text", "hello"), "--text needs")
    # the index holds a copy of its model: it answers after the run is gone...
    shutil.rmtree(run)
    r = run_cli("index", "search", index, "--image", tmp_path / "q.png", "-k", "3", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["hamming"][0] == 0, r.stderr
    # ...and refuses a copy whose weights were changed after indexing
    copy = index / "model" / "model.safetensors"
    copy.write_bytes(copy.read_bytes() + b" ")
    one_line_error(run_cli("index", "search", index, "--image", tmp_path / "q.png"), "not the ones the index")


# --- retrieval metrics --------------------------------------------------------------------------------
def test_retrieval_metrics_against_a_hand_computation():
    from aezoo.eval.retrieval import retrieval_metrics

    db_bits = np.array([[0] * 8, [1] + [0] * 7, [1, 1] + [0] * 6, [1, 1, 1] + [0] * 5], bool)
    db, q = pack_bits(db_bits), pack_bits(np.zeros((1, 8), bool))
    assert hamming_distances(q, db).tolist() == [[0, 1, 2, 3]]
    m = retrieval_metrics(q, db, [1], [1, 0, 1, 1], k=2, radius=1)
    # ranking: relevant, not, relevant, relevant -> AP = (1/1 + 2/3 + 3/4) / 3
    assert m["map"] == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    assert m["precision_at_k"] == 0.5 and m["precision_radius"] == 0.5 and m["radius_hit_rate"] == 1
    # a query with nothing within the radius counts as precision 0
    far = pack_bits(np.ones((1, 8), bool))
    assert retrieval_metrics(far, db, [1], [1, 0, 1, 1], radius=2)["precision_radius"] == 0
    # the 64-bit words path counts the differing bits
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 128)) < 0.5, rng.random((7, 128)) < 0.5
    assert (hamming_distances(pack_bits(x), pack_bits(y)) == (x[:, None] != y[None]).sum(2)).all()
