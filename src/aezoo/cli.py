"""The ``aezoo`` command: parses arguments, calls the library, and turns user errors into one line.

Every user error prints ``aezoo: error: ...`` on stderr and exits with status 2 (``--debug`` shows the
traceback instead). Anything else is a bug: traceback, status 1.
"""

from __future__ import annotations

import argparse
import json
import sys


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, status 2, as for every user error
        sys.stderr.write(f"aezoo: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="where to look first for dataset files (also $AEZOO_DATA)")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--trust-code", action="store_true",
                   help="a run that names your own networks (--set encoder=module:Name) may import them: this runs "
                        "code from those modules; give it only for runs you trust")


def _run_data_split(p: argparse.ArgumentParser, split: bool = True) -> None:
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    if split:
        p.add_argument("--split", default="test", choices=["train", "val", "test"])


def _refine_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--refine-steps", type=int, metavar="N",
                   help="ae: improve each code by N Adam steps through the decoder (default: the model's refine_steps, 0)")


def build_parser() -> argparse.ArgumentParser:
    top = _Parser(prog="aezoo", description="The autoencoder family: train, evaluate and use autoencoders.")
    top.add_argument("--version", action="version", version=_version())
    sub = top.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser, required=True)

    p = sub.add_parser("train", help="train a model", description="Train MODEL on --data and write a run directory.")
    p.add_argument("model", nargs="?", help="model name (see 'aezoo list'); optional with --resume")
    p.add_argument("--data", help="dataset spec, e.g. fashion-mnist, digits, folder:PATH, csv:PATH")
    p.add_argument("--out", required=True, help="run directory to create (or continue with --resume)")
    p.add_argument("--epochs", type=int, help="passes over the training split (default 10)")
    p.add_argument("--max-minutes", type=float, help="wall-clock budget in minutes")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--batch-size", type=int, help="minibatch size (default 128)")
    p.add_argument("--lr", type=float,
                   help="learning rate of every optimizer (default: what the model declares, mostly 1e-3)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--preset", help="a named configuration of the model, e.g. hinton2006 for ae")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a model config field (widths=[512,256]) or a training one (train.schedule=cosine)")
    p.add_argument("--prior-of", metavar="RUN_DIR", help="pixelcnn: train the prior of the VQ-VAE in RUN_DIR on its codes")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    p.add_argument("--eval", default="cheap", choices=["cheap", "full"],
                   help="metrics the run ends with: cheap (reconstruction, restoration, codebook use, lines; default) "
                        "or full (every metric that applies, as 'aezoo eval')")
    p.add_argument("--log", metavar="TRACKERS",
                   help="also log metrics, config and validation pictures to tensorboard (OUT/tensorboard/) "
                        "and/or mlflow (./mlruns or $MLFLOW_TRACKING_URI), comma-separated")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained model (JSON on stdout)",
                       description="Print one JSON object of the metrics that apply to the run (or those of "
                                   "--metrics) on a split; --list-metrics says which apply and why the others don't.")
    _run_data_split(p)
    p.add_argument("--metrics", help="comma-separated metric names, or 'cheap' (default: every metric that applies)")
    p.add_argument("--list-metrics", action="store_true", help="list the metrics, which apply to this run, and why not")
    p.add_argument("--items", type=int, help="evaluate on the split's first N items (default: all)")
    p.add_argument("--samples", type=int, default=5000, help="draws per sampler for the sample metrics (default 5000)")
    p.add_argument("--nll-k", type=int, default=100, help="importance samples for the NLL (up to 5000; default 100)")
    p.add_argument("--nll-items", type=int, default=200,
                   help="items the NLL is estimated on (default 200; the ELBO uses ten times as many)")
    _refine_arg(p)
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("embed", help="write latent codes to a .npy file",
                       description="Encode a split and save the codes (N, latent) as a .npy file.")
    _run_data_split(p)
    p.add_argument("--out", required=True, help="output .npy file")
    p.add_argument("--labels-out", help="also save the split's labels to this .npy file")
    _refine_arg(p)
    _common(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("reconstruct", help="picture originals above reconstructions",
                       description="Save a PNG with originals (top row) above their reconstructions.")
    _run_data_split(p)
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("-n", type=int, default=12, help="number of items (default 12)")
    _refine_arg(p)
    _common(p)
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("denoise", help="denoise photographs or image files (shipped model), or a corrupted test split",
                       description="Denoise image files of any size with the shipped photo denoiser, or with the model of "
                                   "RUN_DIR when one is given first; or, with --data and --noise, corrupt a split and "
                                   "show corrupted / restored / clean.")
    p.add_argument("inputs", nargs="*", metavar="[RUN_DIR] INPUT",
                   help="image files; first, optionally, a run of 'aezoo train photo' or 'aezoo train dae'")
    p.add_argument("--out", required=True, help="output folder, or with one input an image file (.png, .jpg)")
    p.add_argument("--sigma", type=float, help="photo models: the noise's standard deviation on the 0-255 scale "
                                               "(default: estimated from each picture); higher smooths more")
    p.add_argument("--data", help="instead of files: a dataset spec whose split is corrupted and restored")
    p.add_argument("--noise", help="corruption applied first, e.g. gaussian:0.2 or salt-pepper:0.1 "
                                   "(with --data: default the model's own)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("-n", type=int, default=12, help="with --data: items shown (metrics use the whole split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the added noise")
    _common(p)
    p.set_defaults(func=cmd_denoise)

    p = sub.add_parser("inpaint", help="fill in the holes of a photograph or an image",
                       description="Fill the pixels marked by --mask (white = missing), --box X,Y,W,H or --impulses "
                                   "(salt-and-pepper noise: pure black and white pixels) with the shipped photo "
                                   "inpainter, or the model of RUN_DIR when one is given first; the other pixels are "
                                   "kept exactly. With --data, random holes in a split.")
    p.add_argument("inputs", nargs="*", metavar="[RUN_DIR] INPUT",
                   help="image file; first, optionally, a run of 'aezoo train photo --preset inpaint' or of a dae")
    p.add_argument("--mask", help="mask image of the same size, white where pixels are missing")
    p.add_argument("--box", help="X,Y,W,H of a missing rectangle (pixels from the top-left)")
    p.add_argument("--impulses", action="store_true", help="the holes are the pure black and white pixels "
                                                           "(salt-and-pepper noise)")
    p.add_argument("--out", required=True, help="output image (with --data: a grid picture)")
    p.add_argument("--data", help="instead of a file: a dataset spec whose split gets the model's random holes")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("-n", type=int, default=12, help="with --data: items shown")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_inpaint)

    p = sub.add_parser("report", help="write the run's self-contained report.html",
                       description="Write RUN_DIR/report.html: training curves, reconstructions, a 2-D map of the "
                                   "test codes, restoration examples, and a model card. Figures are embedded.")
    _run_data_split(p, split=False)
    _common(p)
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the showcase: AE vs PCA, denoising, inpainting, VAE, VQ-VAE, in one report",
                       description="Train an AE, a denoiser, an inpainter, a VAE and a VQ-VAE with its prior on --data within "
                                   "--minutes and write "
                                   "OUT/report.html (and each run's own report).")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo; replaced if it is a demo)")
    p.add_argument("--minutes", type=float, default=3.3, help="total budget, evaluation included (default 3.3); under a minute, each run still trains 3 s")
    p.add_argument("--data", default="fashion-mnist", help="image dataset spec (default fashion-mnist)")
    _common(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sample", help="draw samples from a generative model",
                       description="Decode draws from the model's prior into a grid picture.")
    p.add_argument("run_dir")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("--temperature", type=float, default=1.0, help="scale of the prior's spread (default 1)")
    p.add_argument("--sampler", choices=["prior", "gmm"],
                   help="prior: the model's own; gmm: a Gaussian mixture fitted on its training codes (default: "
                        "prior where the model has one, else gmm)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("compare", help="train the family on one dataset and rank it in one leaderboard",
                       description="Train every family that fits --data (or --models) exactly as 'aezoo train' "
                                   "would, at equal wall-clock time (or equal --steps), evaluate every run with the "
                                   "same metrics on the same items, and write OUT/leaderboard.md, leaderboard.json "
                                   "and report.html. Run again to reuse finished runs and resume an unfinished one.")
    p.add_argument("--data", required=True, help="dataset spec, e.g. fashion-mnist, lines, folder:PATH, npy:PATH")
    p.add_argument("--out", required=True, help="output folder (one run folder per model and seed inside)")
    p.add_argument("--minutes", type=float, default=5.0, help="training minutes per model and seed (default 5)")
    p.add_argument("--steps", type=int, help="equal optimizer steps per model instead of equal time")
    p.add_argument("--models", help="comma-separated families (default: every autoencoder family)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per model (default 1); the table shows mean ± std")
    p.add_argument("--batch-size", type=int, help="minibatch size for every model (default: each family's own)")
    p.add_argument("--samples", type=int, default=5000, help="draws per sampler for the sample metrics (default 5000)")
    p.add_argument("--items", type=int, help="evaluate on the test split's first N items (default: all)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME.KEY=VALUE",
                   help="a model config field of the family NAME, as its 'aezoo train --set KEY=VALUE' "
                        "(vae.encoder=mypkg.nets:Encoder; your own networks need --trust-code)")
    _common(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("interpolate", help="decode paths between pairs of encoded items",
                       description="Encode random pairs of items, walk between their codes (linearly and along the "
                                   "sphere) and decode; one row per pair and mode, endpoints included. --traverse "
                                   "instead sweeps each latent dimension of a low-dimensional code.")
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--mode", default="both", choices=["linear", "spherical", "both"])
    p.add_argument("--traverse", action="store_true", help="latent traversal instead of pairs (codes of <= 10 dims)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("index", help="hash-table index of a hash model's binary codes: build, search",
                       description="Semantic hashing: store items under their binary codes; find similar ones.")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION", parser_class=_Parser, required=True)
    q = isub.add_parser("build", help="encode a dataset and write an index directory",
                        description="Encode --data with the hash model in RUN_DIR and write an index to --out.")
    _run_data_split(q, split=False)
    q.add_argument("--split", default="train", choices=["train", "val", "test", "all"],
                   help="which items to index (default train)")
    q.add_argument("--out", required=True, help="index directory to create")
    q.add_argument("--kind", choices=["hash", "multihash", "flat", "ivf"],
                   help="hash table (default up to 64 bits), multihash (default above), flat (exact scan), ivf")
    q.add_argument("--rerank", action="store_true", help="also keep continuous codes, for re-ranking")
    q.add_argument("--overwrite", action="store_true", help="replace an existing index in --out")
    _common(q)
    q.set_defaults(func=cmd_index_build)
    q = isub.add_parser("search", help="find the items nearest to a query",
                        description="Print the nearest items: rank, id, label, Hamming distance.")
    q.add_argument("index_dir")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--item", help="an indexed item's id")
    g.add_argument("--image", help="an image file (models trained on images)")
    g.add_argument("--text", help="a text (models trained on text)")
    h = q.add_mutually_exclusive_group()
    h.add_argument("-k", type=int, default=10, help="the k nearest by Hamming distance (default 10)")
    h.add_argument("--radius", type=int, help="every item within this Hamming distance (hash-table lookup)")
    q.add_argument("--rerank", action="store_true", help="order candidates by distance between continuous codes")
    q.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(q)
    q.set_defaults(func=cmd_index_search)

    p = sub.add_parser("serve", help="a search service and web page over an index (FastAPI)",
                       description="Serve INDEX_DIR: a web page at / and a JSON API under /api (OpenAPI docs at "
                                   "/docs). Loads the index and its model once; Ctrl-C stops it.")
    p.add_argument("index_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="server processes sharing the port, each with its own "
                                                          "copy of the index and model (default 1)")
    _common(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("list", help="list models and dataset kinds")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_list)
    return top


def _version() -> str:
    from ._version import __version__

    return f"aezoo {__version__}"


def cmd_train(a) -> int:
    from .apps.runs import train_run
    from .errors import UserError

    if not a.model and not a.resume:
        raise UserError("name the model to train, e.g. 'aezoo train ae --data fashion-mnist --out runs/ae'")
    train_sets = [s[len("train."):] for s in a.sets if s.startswith("train.")]
    model_sets = [s for s in a.sets if not s.startswith("train.")]
    overrides = {"epochs": a.epochs, "max_minutes": a.max_minutes, "seed": a.seed, "batch_size": a.batch_size,
                 "lr": a.lr, "threads": a.threads, "device": a.device,
                 "log": None if a.log is None else [t.strip() for t in a.log.split(",") if t.strip()]}
    if a.max_minutes is not None and a.epochs is None and not a.resume:
        train_sets = ["epochs=null"] + train_sets  # a budget alone: train until it runs out
    if a.prior_of:
        from .apps.prior import train_prior

        if a.model and not _is_prior(a.model):
            raise UserError(f"--prior-of trains a prior such as 'pixelcnn', not {a.model!r}")
        metrics = train_prior(a.prior_of, a.out, prior=a.model or "pixelcnn", data_spec=a.data, preset=a.preset,
                              model_overrides=model_sets, train_overrides=overrides, train_sets=train_sets,
                              resume=a.resume, overwrite=a.overwrite, data_dir=a.data_dir, progress=not a.quiet,
                              eval_options={"metrics": "all" if a.eval == "full" else "cheap"})
    else:
        if a.model and _is_prior(a.model) and not a.resume and not (a.data or "").startswith("codes:"):
            raise UserError(f"a {a.model} is a prior for a VQ-VAE: aezoo train {a.model} --prior-of VQVAE_RUN --out PRIOR_DIR")
        metrics = train_run(a.model, a.data, a.out, preset=a.preset, model_overrides=model_sets,
                            train_overrides=overrides, train_sets=train_sets, resume=a.resume, overwrite=a.overwrite,
                            data_dir=a.data_dir, progress=not a.quiet,
                            eval_options={"metrics": "all" if a.eval == "full" else "cheap"})
    if metrics is None:  # a rank other than 0 of a distributed run: rank 0 reports
        return 0
    print(json.dumps(metrics))
    print(f"aezoo: run written to {a.out}", file=sys.stderr)
    return 0


def _is_prior(model_name: str) -> bool:
    """Whether ``model_name`` is a registered prior over another model's codes (unknown names: False)."""
    from . import registry
    from .models.base import Prior

    return model_name in registry.names() and issubclass(registry.get(model_name), Prior)


def cmd_eval(a) -> int:
    from .eval.metrics import evaluate
    from .models.run import open_run

    from .errors import UserError

    if not 1 <= a.nll_k <= 5000 or a.nll_items < 1:
        raise UserError("--nll-k must be in 1..5000 and --nll-items at least 1")
    if a.samples < 1 or (a.items is not None and a.items < 1):
        raise UserError("--samples and --items must be at least 1")
    model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet, a.refine_steps)
    if a.list_metrics:
        from .eval.metrics import EvalContext, applicability

        for m in applicability(EvalContext(model, data, a.split, a.items)):
            state = "applies" if m["applies"] else f"no: {m['why_not']}"
            print(f"{m['name']:12s} {m['cost']:7s} {state}\n{'':21s}{m['about']}")
        return 0
    # the run's own mixture is used (and kept there when missing) only when evaluating its own data
    keep = a.run_dir if a.data is None else None
    print(json.dumps(evaluate(model, data, a.split, a.metrics, items=a.items, samples=a.samples, nll_k=a.nll_k,
                              nll_items=a.nll_items, run_dir=keep, progress=not a.quiet)))
    return 0


def cmd_embed(a) -> int:
    import numpy as np

    from .errors import UserError
    from .eval import embed
    from .io import atomic_path, check_output_file
    from .models.run import open_run

    if not a.out.endswith(".npy") or (a.labels_out and not a.labels_out.endswith(".npy")):
        raise UserError("--out (and --labels-out) must name a .npy file")
    for path in filter(None, (a.out, a.labels_out)):
        check_output_file(path)
    model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet, a.refine_steps)
    part = data.split(a.split)
    if a.labels_out and part.y is None:
        raise UserError(f"{data.spec!r} has no labels for --labels-out")
    codes = embed(model, part.x).numpy()
    with atomic_path(a.out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, codes)
    if a.labels_out:
        with atomic_path(a.labels_out) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, part.y.numpy())
    print(f"aezoo: {codes.shape[0]} codes of size {codes.shape[1:]} written to {a.out}", file=sys.stderr)
    return 0


def cmd_reconstruct(a) -> int:
    from .errors import UserError
    from .io import save_image
    from .models.run import open_run
    from .report import reconstruction_grid

    if a.n < 1:
        raise UserError("-n must be at least 1")
    _image_out(a.out)
    model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet, a.refine_steps)
    save_image(a.out, reconstruction_grid(model, data, a.split, a.n))
    print(f"aezoo: originals (top) and reconstructions (bottom) written to {a.out}", file=sys.stderr)
    return 0


def cmd_denoise(a) -> int:
    from .apps.restore import denoise

    out = denoise(a.inputs, a.out, noise=a.noise, sigma=a.sigma, data=a.data, data_dir=a.data_dir, split=a.split,
                  n=a.n, seed=a.seed, progress=not a.quiet)
    if a.data:
        print(json.dumps(out))  # the split's restoration metrics
    else:
        print(f"aezoo: {out['pictures']} picture(s) denoised into {a.out}", file=sys.stderr)
    return 0


def cmd_inpaint(a) -> int:
    from .apps.restore import inpaint

    out = inpaint(a.inputs, a.out, mask=a.mask, box=a.box, impulses=a.impulses, data=a.data, data_dir=a.data_dir,
                  split=a.split, n=a.n, seed=a.seed, progress=not a.quiet)
    if a.data:
        print(json.dumps(out))  # the split's restoration metrics
    else:
        print(f"aezoo: inpainted picture written to {a.out}", file=sys.stderr)
    return 0


def cmd_report(a) -> int:
    from .report.html import write_report

    path = write_report(a.run_dir, a.data, a.data_dir, not a.quiet)
    print(f"aezoo: report written to {path}", file=sys.stderr)
    return 0


def cmd_demo(a) -> int:
    from .apps.demo import run_demo
    from .errors import UserError
    from .train.distributed import requested

    if requested():
        raise UserError("the demo runs in one process; start 'aezoo train' with torchrun instead")

    path = run_demo(a.out, a.minutes, a.data, a.data_dir, not a.quiet)
    print(f"aezoo: demo report written to {path}", file=sys.stderr)
    return 0


def _image_out(path: str) -> None:
    """Refuse early an image output that could not be written."""
    from .errors import UserError
    from .io import check_output_file

    if not path.lower().endswith((".png", ".jpg", ".jpeg")):
        raise UserError("--out must name a .png or .jpg file")
    check_output_file(path)


def cmd_sample(a) -> int:
    import math

    from .eval.generate import require_generator, require_gmm, sample_images
    from .eval.gmm import sample_gmm
    from .io import save_image
    from .models.base import Autoencoder, load_model
    from .report import grid_of

    _image_out(a.out)
    model = load_model(a.run_dir)
    # by default the model's own prior; a two-stage model without one is told to train it
    own = isinstance(model, Autoencoder) and (model.can_sample or model.discrete_codes)
    sampler = a.sampler or ("prior" if own else "gmm")
    if sampler == "prior" or not isinstance(model, Autoencoder):  # a prior or a restorer: says why it can't
        require_generator(model, a.run_dir)
        images = sample_images(model, a.n, a.temperature, a.seed)
    else:
        images = sample_gmm(model, require_gmm(model, a.run_dir), a.n, a.temperature, a.seed)
    kind = model.config.data_kind
    save_image(a.out, grid_of(images, tuple(model.config.input_shape), kind, max(1, math.ceil(math.sqrt(a.n)))))
    print(f"aezoo: {a.n} samples written to {a.out}", file=sys.stderr)
    return 0


def cmd_compare(a) -> int:
    from .apps.compare import run_compare

    path = run_compare(a.data, a.out, minutes=a.minutes, steps=a.steps, models=a.models, seeds=a.seeds,
                       batch_size=a.batch_size, samples=a.samples, items=a.items, data_dir=a.data_dir,
                       progress=not a.quiet, sets=a.sets)
    print(f"aezoo: leaderboard written to {path}", file=sys.stderr)
    return 0


def cmd_interpolate(a) -> int:
    from .eval.generate import interpolation_rows, traversal_rows
    from .io import save_image
    from .models.base import load_model
    from .models.run import open_run
    from .report import image_grid, to_images

    _image_out(a.out)
    if a.traverse:
        model = load_model(a.run_dir)
        rows = traversal_rows(model)
        shape, kind = tuple(model.config.input_shape), model.config.data_kind
    else:
        model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet)
        rows, _ = interpolation_rows(model, data.split(a.split).x, a.pairs, a.steps, a.mode, a.seed)
        shape, kind = data.shape, data.kind
    save_image(a.out, image_grid([to_images(r, shape, kind) for r in rows]))
    print(f"aezoo: {len(rows)} rows written to {a.out}", file=sys.stderr)
    return 0


def cmd_list(a) -> int:
    from . import registry
    from .data import KINDS
    from .models.base import Autoencoder, Prior, Restorer

    models = {}
    for name in registry.names():
        cls = registry.get(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        kinds = [k for k, base in (("autoencoder", Autoencoder), ("prior", Prior), ("restorer", Restorer))
                 if issubclass(cls, base)]
        models[name] = {"about": doc[0] if doc else "", "presets": sorted(cls.PRESETS), "kind": "+".join(kinds)}
    if a.json:
        print(json.dumps({"models": models, "datasets": KINDS}, indent=2))
        return 0
    print("models:")
    for name, m in models.items():
        presets = f"  (presets: {', '.join(m['presets'])})" if m["presets"] else ""
        print(f"  {name:14s} {m['about']}{presets}")
    print("datasets:")
    for kind, about in KINDS.items():
        print(f"  {kind:14s} {about}")
    return 0


def cmd_index_build(a) -> int:
    from .apps.index import build_index

    index = build_index(a.run_dir, a.data, a.out, a.split, a.kind, a.rerank, a.overwrite, a.data_dir, not a.quiet)
    print(f"aezoo: indexed {len(index):,} items as {index.bits}-bit codes ({index.kind}) in {a.out}", file=sys.stderr)
    return 0


def cmd_index_search(a) -> int:
    from .apps.index import search_index

    if a.k < 1:
        from .errors import UserError

        raise UserError("-k must be at least 1")
    res = search_index(a.index_dir, item=a.item, image=a.image, text=a.text, k=a.k, radius=a.radius, rerank=a.rerank)
    if a.json:
        print(json.dumps({"ids": res.ids, "labels": res.labels, "hamming": res.hamming,
                          "rerank_distance": res.rerank_distance}))
        return 0
    if not res.ids:
        print(f"no items within Hamming distance {a.radius}" if a.radius is not None else "no items found")
        return 0
    width = max(len(i) for i in res.ids)
    for n, (i, lab, d) in enumerate(zip(res.ids, res.labels, res.hamming), 1):
        extra = f"  {res.rerank_distance[n - 1]:.4f}" if res.rerank_distance else ""
        print(f"{n:>4}  {i:<{width}}  {lab if lab is not None else '-':<16}  {d:>3}{extra}")
    return 0


def cmd_serve(a) -> int:
    from .apps.serve import serve
    from .errors import UserError

    if not 0 < a.port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {a.port}")
    if not 1 <= a.workers <= 64:
        raise UserError(f"--workers must be between 1 and 64, got {a.workers}")

    def announce():
        print(f"aezoo: serving {a.index_dir} at http://{a.host}:{a.port}/ (API docs at /docs; Ctrl-C stops)",
              file=sys.stderr, flush=True)

    serve(a.index_dir, a.host, a.port, quiet=a.quiet, announce=announce, workers=a.workers)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import UserError

    from .models.parts import trusting_code

    try:
        with trusting_code(getattr(args, "trust_code", False)):
            return args.func(args) or 0
    except UserError as e:
        if args.debug:
            raise
        from .train.distributed import RankZeroRefused

        if isinstance(e, RankZeroRefused):  # rank 0 of a distributed run has said it
            return 2
        message = " ".join(str(e).split())
        sys.stderr.write(f"aezoo: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("aezoo: interrupted (the last checkpoint is kept; continue with --resume)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
