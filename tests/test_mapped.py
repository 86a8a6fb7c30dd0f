"""Training items left on disk: a memory-mapped npy: array gathered per batch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

import aezoo
from aezoo import data
from aezoo.data.mapped import MappedItems


def test_a_mapped_array_gives_the_in_memory_splits_batches_and_training(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "hwc.npy", rng.integers(0, 256, (300, 6, 5, 3), dtype=np.uint8))  # channels last
    np.save(tmp_path / "vec.npy", rng.normal(size=(200, 7)).astype(np.float32))
    for name, opts in (("hwc", ""), ("vec", ""), ("hwc", "&binarize=0.5"), ("hwc", "&limit=50")):
        mem = data.load(f"npy:{tmp_path / name}.npy?mmap=false{opts}")
        mapped = data.load(f"npy:{tmp_path / name}.npy?mmap=true{opts}")
        assert isinstance(mapped.train.x, MappedItems) and not isinstance(mem.train.x, MappedItems)
        assert mapped.shape == mem.shape and len(mapped.train) == len(mem.train) and mapped.kind == mem.kind
        assert torch.equal(mapped.val.x, mem.val.x) and torch.equal(mapped.test.x, mem.test.x)
        assert mapped.value_range() == mem.value_range()
        idx = torch.tensor([5, 0, 17, 5, 3])  # any order, repeats: what a shuffled batch asks for
        assert torch.equal(mapped.train.x[idx], mem.train.x[idx]) and torch.equal(mapped.train.x[2], mem.train.x[2])
        assert torch.equal(mapped.train.x[:9], mem.train.x[:9])
        a = list(data.batches(mapped.train, 16, shuffle=True, seed=3, epoch=1, start=2, drop_last=True, shard=(1, 2)))
        b = list(data.batches(mem.train, 16, shuffle=True, seed=3, epoch=1, start=2, drop_last=True, shard=(1, 2)))
        assert len(a) == len(b) and all(torch.equal(p.x, q.x) for p, q in zip(a, b))
    weights = []
    for mmap in ("false", "true"):
        ds = data.load(f"npy:{tmp_path / 'hwc.npy'}?mmap={mmap}")
        model = aezoo.create("ae", seed=0, input_shape=list(ds.shape), widths=[16], latent_dim=2)
        aezoo.Trainer(model, ds, aezoo.TrainConfig(epochs=2, batch_size=16, threads=1, progress=False), None).fit()
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(*weights)


LIMITED = """
import resource, sys
import numpy as np
import aezoo
from aezoo.errors import UserError

def vm_data():
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmData"))

aezoo.create("ae", input_shape=[1, 28, 28], widths=[8], latent_dim=2)  # torch's own allocations first
limit = vm_data() + 250 * 2**20  # room for a fifth of the decoded items and training, not for all items
resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
try:
    aezoo.data.load(f"npy:{sys.argv[1]}?mmap=false")
    print("in memory: loaded")
except (MemoryError, UserError) as e:
    print("in memory: refused", type(e).__name__, str(e))
ds = aezoo.data.load(f"npy:{sys.argv[1]}")  # the default: mapped, the file being large for this process
model = aezoo.create("ae", seed=0, input_shape=list(ds.shape), widths=[32], latent_dim=4)
res = aezoo.Trainer(model, ds, aezoo.TrainConfig(epochs=1, batch_size=256, threads=1, progress=False), None).fit()
print("mapped: trained", res.step, "steps on", len(ds.train), "items", type(ds.train.x).__name__)
"""


def test_an_array_larger_than_the_memory_allowed_trains_from_disk(tmp_path):
    """100,000 28x28 images: 78 MB as uint8 on disk, 314 MB as float32, under a data limit of 250 MB above
    what the process already uses."""
    path = tmp_path / "big.npy"
    x = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(100_000, 28, 28))
    x[:] = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    x.flush()
    del x
    script = tmp_path / "limited.py"
    script.write_text(LIMITED)
    r = subprocess.run([sys.executable, str(script), str(path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0].startswith("in memory: refused"), r.stdout
    assert "do not fit in memory" in lines[0] and lines[0].endswith("?mmap=true"), lines[0]
    assert lines[1] == "mapped: trained 316 steps on 81000 items MappedItems", r.stdout


def test_a_folder_decoded_per_batch_or_cached_once_gives_the_in_memory_items(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for i in range(60):
        sub = tmp_path / "pics" / ("cats" if i % 3 else "dogs")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(sub / f"{i:03d}.png")
    root = tmp_path / "pics"
    mem = data.load(f"folder:{root}?lazy=false")
    lazy = data.load(f"folder:{root}?lazy=true")
    cache = tmp_path / "c" / "pics.npy"
    cached = data.load(f"folder:{root}?cache={cache}")
    assert cache.is_file() and (tmp_path / "c" / "pics.npy.json").is_file()
    idx = torch.tensor([4, 1, 4, 30])
    for ds in (lazy, cached):
        assert isinstance(ds.train.x, MappedItems) and ds.shape == mem.shape == (3, 9, 7)
        assert ds.classes == mem.classes and torch.equal(ds.train.y, mem.train.y)
        assert torch.equal(ds.val.x, mem.val.x) and torch.equal(ds.test.x, mem.test.x)
        assert torch.equal(ds.train.x[idx], mem.train.x[idx])
    before = cache.stat().st_mtime_ns
    again = data.load(f"folder:{root}?cache={cache}")  # unchanged folder: the cache is reused
    assert cache.stat().st_mtime_ns == before and torch.equal(again.train.x[idx], mem.train.x[idx])
    Image.fromarray(np.zeros((9, 7, 3), np.uint8)).save(root / "cats" / "001.png")  # a file changes: remade
    remade = data.load(f"folder:{root}?cache={cache}")
    fresh = data.load(f"folder:{root}?lazy=false")
    assert torch.equal(remade.train.x[torch.arange(len(remade.train))], fresh.train.x)
