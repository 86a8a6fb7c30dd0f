"""A self-contained HTML run report: every figure is an embedded PNG, no external files or scripts.

Sections are built from what the run and the model offer: loss curves, reconstructions, a 2-D map of
the test codes coloured by label, restoration examples for restoration models, and a model card.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


from ..io import read_json, write_bytes

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left;font-size:.92em}
th{background:#f4f4f4}img{max-width:100%;image-rendering:pixelated}figure{margin:.8em 0}
figcaption{color:#555;font-size:.9em}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:.85em}
.muted{color:#666}
"""


def img_tag(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def pil_png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def figure(png: bytes, caption: str) -> str:
    return f"<figure>{img_tag(png, caption)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def table(rows: list[tuple], header: tuple | None = None) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def page(title: str, sections: list[str]) -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(sections)}</body></html>\n")


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash: skip it
    return out


def run_sections(run_dir: Path, model, dataset) -> list[str]:
    """The report's sections for one run (also used by the demo's combined report)."""
    import torch

    from ..eval import corrupt_fixed, embed, restore_batched
    from ..eval.gmm import gmm_of
    from . import figures
    from .grid import image_grid, reconstruction_grid, to_images

    run = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    evaluation = read_json(run_dir / "eval.json") if (run_dir / "eval.json").is_file() else {}
    out = []
    records = read_metrics(run_dir)
    curves = figures.loss_curves(records)
    if curves:
        out.append("<h2>Training</h2>" + figure(curves, "Training curves (by optimizer step) and validation."))
    from ..models.base import Autoencoder, Restorer

    if dataset.kind != "text" and isinstance(model, Autoencoder):  # word-count vectors make no picture
        out.append("<h2>Reconstructions</h2>" + figure(pil_png(reconstruction_grid(model, dataset, "test", 16)),
                                                       "Test items (top) and their reconstructions (bottom)."))
    if isinstance(model, Restorer):
        x = dataset.test.x[:16]
        noisy, hole = corrupt_fixed(x, model.corruption, 0)
        restored = restore_batched(model, noisy, hole)
        shown = noisy if hole is None else noisy + 0.5 * hole
        grid = image_grid([to_images(t, dataset.shape, dataset.kind) for t in (shown, restored, x)])
        extra = ""
        if "psnr_restored" in evaluation:
            extra = (f" Test PSNR: corrupted {evaluation['psnr_corrupted']:.2f} dB, restored "
                     f"{evaluation['psnr_restored']:.2f} dB.")
        out.append(f"<h2>Restoration ({html.escape(str(model.corruption))})</h2>" +
                   figure(pil_png(grid), "Rows: corrupted (holes grey), restored, clean." + extra))
    if not isinstance(model, Autoencoder):
        return out + [model_card(model, run, evaluation)]
    out += generative_sections(model, dataset, gmm_of(run_dir, model))
    with torch.no_grad():
        n = min(len(dataset.test), 5000)
        codes = embed(model, dataset.test.x[:n]).numpy().reshape(n, -1)  # a code map counts all its values
    labels = None if dataset.test.y is None else dataset.test.y[:n].numpy()
    out.append("<h2>Codes</h2>" + figure(figures.code_map(codes, labels, dataset.classes),
                                         f"{n} test codes ({codes.shape[1]} dimensions)" +
                                         (", coloured by label." if labels is not None else ".")))
    out.append(model_card(model, run, evaluation))
    return out


def generative_sections(model, dataset, gmm=None) -> list[str]:
    """Samples (models with a prior, and from ``gmm``, a Gaussian mixture over the training codes),
    interpolations (models that decode a code alone), traversals (low-dimensional priors)."""
    from ..eval.gmm import sample_gmm
    from ..eval.generate import interpolation_rows, sample_images, traversal_rows
    from .grid import grid_of, image_grid, to_images

    out = []
    if dataset.kind != "image":
        return out
    if model.can_sample:
        out.append("<h2>Samples</h2>" + figure(pil_png(grid_of(sample_images(model, 64), dataset.shape, "image", 8)),
                                               "64 samples from the prior (temperature 1)."))
    if gmm is not None:
        out.append("<h2>Samples from a mixture over the codes</h2>" + figure(
            pil_png(grid_of(sample_gmm(model, gmm, 64), dataset.shape, "image", 8)),
            f"64 samples decoded from a {len(gmm.weights)}-component Gaussian mixture fitted on the training codes "
            "(Ghosh et al. 2020)."))
    if model.decodes_codes:
        rows, labels = interpolation_rows(model, dataset.test.x, 4, 10, "both")
        out.append("<h2>Interpolations</h2>" + figure(
            pil_png(image_grid([to_images(r, dataset.shape, "image") for r in rows])),
            "Between pairs of test items, endpoints included; rows alternate linear and spherical paths in code space."))
    if model.can_sample and model.latent_groups:
        out += hierarchy_sections(model, dataset)
    if model.can_sample and 0 < model.traversal_dims <= 10:
        t = traversal_rows(model)
        out.append("<h2>Latent traversals</h2>" + figure(
            pil_png(image_grid([to_images(r, dataset.shape, "image") for r in t])),
            "One row per latent dimension swept from -3 to 3, the others at 0."))
    return out


def hierarchy_sections(model, dataset, temperatures=(0.4, 0.6, 0.8, 1.0), draws: int = 8) -> list[str]:
    """Samples at several temperatures, and what each latent group encodes: the top groups of a test item
    kept from its posterior, the others drawn from the prior."""
    import torch

    from ..rng import seeded
    from .grid import image_grid, to_images

    with torch.no_grad(), seeded(0):
        rows = [model.sample(draws, t).cpu() for t in temperatures]
        items = dataset.test.x[:2].to(model.device)
        kept = [model.reconstruct_groups(item.expand(draws, *item.shape), keep).cpu()
                for item in items for keep in range(1, model.latent_groups + 1)]
    ts = ", ".join(f"{t:g}" for t in temperatures)
    return ["<h2>Samples by temperature</h2>" + figure(
                pil_png(image_grid([to_images(r, dataset.shape, "image") for r in rows])),
                f"One row per temperature ({ts}), batch-norm statistics re-estimated at each."),
            "<h2>What each latent group encodes</h2>" + figure(
                pil_png(image_grid([to_images(r, dataset.shape, "image") for r in kept])),
                f"For two test items, row k keeps the top k of {model.latent_groups} groups from the item's "
                "posterior and draws the others from the prior (temperature 0.6): what stays fixed along a "
                "row is what the kept groups encode.")]


def model_card(model, run: dict, evaluation: dict) -> str:
    import sys

    from ..config import to_dict

    doc = (sys.modules[type(model).__module__].__doc__ or "").strip()
    paper = doc.split("\n\n")[:2]
    rows = [("model", model.name), ("parameters", f"{model.num_parameters():,}")]
    if run:
        hw = run.get("hardware", {})
        rows += [("data", run.get("data")), ("steps", run.get("step")), ("epochs", run.get("epoch")),
                 ("training time", f"{run.get('elapsed_s', 0) / 60:.1f} min ({run.get('stopped_by') or 'unfinished'})"),
                 ("precision", run.get("precision")), ("device", run.get("device")),
                 ("hardware", f"{hw.get('cpu', '?')}, {hw.get('cpu_count', '?')} CPUs, torch {hw.get('torch', '?')}"),
                 ("aezoo", run.get("aezoo_version"))]
    metric_rows = [(k, v) for k, v in evaluation.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ("<h2>Model card</h2>" + "".join(f"<p>{html.escape(p)}</p>" for p in paper) + table(rows) +
            ("<h3>Test metrics</h3>" + table(metric_rows, ("metric", "value")) if metric_rows else "") +
            "<h3>Config</h3><pre>" + html.escape(json.dumps(to_dict(model.config), indent=1)) + "</pre>" +
            ("<h3>Training config</h3><pre>" + html.escape(json.dumps(run.get("train", {}), indent=1)) + "</pre>"
             if run else ""))


def write_report(run_dir: str | Path, data_spec: str | None = None, data_dir: str | None = None,
                 progress: bool = False, dataset=None, model=None) -> Path:
    """Write ``report.html`` into ``run_dir`` and return its path."""
    from ..models.run import open_run

    run_dir = Path(run_dir)
    if model is None or dataset is None:
        model, dataset = open_run(str(run_dir), data_spec, data_dir, progress)
    model.to("cpu").eval()
    title = f"aezoo report: {model.name} on {dataset.spec}"
    head = (f"<h1>{html.escape(title)}</h1><p class='muted'>Run directory <code>{html.escape(str(run_dir))}</code>. "
            "Figures are embedded; this file stands alone.</p>")
    path = run_dir / "report.html"
    write_bytes(path, page(title, [head, *run_sections(run_dir, model, dataset)]).encode())
    return path


__all__ = ["write_report", "run_sections", "page", "figure", "table", "img_tag", "pil_png"]
