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
    p.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--preset", help="a named configuration of the model, e.g. hinton2006 for ae")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="set a model config field (widths=[512,256]) or a training one (train.schedule=cosine)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    _common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained model (JSON on stdout)",
                       description="Print one JSON object of test metrics: recon_sse_per_item, recon_mse, psnr.")
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    _common(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("embed", help="write latent codes to a .npy file",
                       description="Encode a split and save the codes (N, latent) as a .npy file.")
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    p.add_argument("--out", required=True, help="output .npy file")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    p.add_argument("--labels-out", help="also save the split's labels to this .npy file")
    _common(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("reconstruct", help="picture originals above reconstructions",
                       description="Save a PNG with originals (top row) above their reconstructions.")
    p.add_argument("run_dir")
    p.add_argument("--data", help="dataset spec (default: the one the model was trained on)")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    p.add_argument("-n", type=int, default=12, help="number of items (default 12)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"])
    _common(p)
    p.set_defaults(func=cmd_reconstruct)

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
                 "lr": a.lr, "threads": a.threads, "device": a.device}
    if a.max_minutes is not None and a.epochs is None and not a.resume:
        overrides["epochs"] = None  # a budget alone: train until it runs out
        train_sets = ["epochs=null"] + train_sets
    metrics = train_run(a.model, a.data, a.out, preset=a.preset, model_overrides=model_sets,
                        train_overrides=overrides, train_sets=train_sets, resume=a.resume, overwrite=a.overwrite,
                        data_dir=a.data_dir, progress=not a.quiet)
    print(json.dumps(metrics))
    print(f"aezoo: run written to {a.out}", file=sys.stderr)
    return 0


def cmd_eval(a) -> int:
    from .apps.runs import evaluate, open_run

    model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet)
    print(json.dumps(evaluate(model, data, a.split)))
    return 0


def cmd_embed(a) -> int:
    import numpy as np

    from .apps.runs import open_run
    from .errors import UserError
    from .eval import embed
    from .io import atomic_path

    if not a.out.endswith(".npy") or (a.labels_out and not a.labels_out.endswith(".npy")):
        raise UserError("--out (and --labels-out) must name a .npy file")
    model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet)
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
    from .apps.runs import open_run, reconstruction_grid
    from .errors import UserError
    from .io import save_image

    if a.n < 1:
        raise UserError("-n must be at least 1")
    if not a.out.lower().endswith((".png", ".jpg", ".jpeg")):
        raise UserError("--out must name a .png or .jpg file")
    model, data = open_run(a.run_dir, a.data, a.data_dir, not a.quiet)
    save_image(a.out, reconstruction_grid(model, data, a.split, a.n))
    print(f"aezoo: originals (top) and reconstructions (bottom) written to {a.out}", file=sys.stderr)
    return 0


def cmd_list(a) -> int:
    from . import registry
    from .data import KINDS

    models = {}
    for name in registry.names():
        cls = registry.get(name)
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        models[name] = {"about": doc[0] if doc else "", "presets": sorted(cls.PRESETS), "phases": list(cls.phases)}
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .errors import UserError

    try:
        return args.func(args) or 0
    except UserError as e:
        if args.debug:
            raise
        message = " ".join(str(e).split())
        sys.stderr.write(f"aezoo: error: {message}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("aezoo: interrupted (the last checkpoint is kept; continue with --resume)\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
