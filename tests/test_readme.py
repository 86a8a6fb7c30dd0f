"""Every fenced code block of README.md is checked here, so the docs cannot rot.

Python blocks run as written, each alone in a fresh namespace and working directory (a user pastes one
block). Shell blocks would take hours to run (training on Fashion-MNIST, torchrun, a server), so each command
line is checked against what it names: ``aezoo`` lines (also after ``torchrun -m``) by the real argument
parser with abbreviated options refused, then their models, presets, ``--set`` keys and values (the config
classes), dataset specs, metrics, trackers, corruptions and boxes by the library's own functions; ``torchrun``
options by torch's parser; ``make`` targets against the Makefile; ``pip install`` extras against
pyproject.toml; ``curl`` requests against the OpenAPI schema of ``aezoo serve``'s app; ``tensorboard --logdir``
against the folder a run of the same block writes. Whole commands inline in the prose (with an ``--out``)
get the same checks. The cheap commands run for real: ``aezoo list``, and the
shipped photo models' ``denoise`` and ``inpaint`` on generated pictures. A line of any other program fails
until it gets a check here.

The README also says its own training loop gives the weights ``aezoo.Trainer`` gives, for every family:
``test_the_readme_loop_trains_as_the_trainer_does`` runs the block's ``train`` on each family's tiny case of
the contract suite. Not checked: priors (``pixelcnn``), which need a trained VQ-VAE's codes as data.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from PIL import Image

import aezoo
from aezoo.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Block:
    lang: str
    line: int  # README.md line of the block's first line of code
    code: str
    heading: str

    @property
    def where(self) -> str:
        return f"README.md:{self.line} ({self.heading})"


def readme_blocks() -> list[Block]:
    blocks, heading, lang, start, body = [], "", None, 0, []
    for n, line in enumerate(README.read_text().splitlines(), 1):
        if lang is None:
            if line.startswith("#"):
                heading = line.lstrip("#").strip()
            elif m := FENCE.match(line):
                lang, start, body = m.group(1), n + 1, []
        elif line.startswith("```"):
            blocks.append(Block(lang, start, "\n".join(body) + "\n", heading))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"README.md:{start - 1}: a code block is never closed"
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
SHELL = [b for b in BLOCKS if b.lang == "sh"]


def test_every_block_is_python_or_sh_and_there_are_some():
    other = [f"{b.where}: ```{b.lang}" for b in BLOCKS if b.lang not in ("python", "sh")]
    assert not other, "blocks this test cannot check (give them a language it knows, or a check): " + "; ".join(other)
    assert len(PYTHON) >= 4 and len(SHELL) >= 8, "the README lost most of its blocks, or this test stopped finding them"


# --- Python blocks --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    """run(block) -> its namespace: the block executed once, in a folder of its own, as a script is."""
    done: dict[int, dict] = {}

    def run(block: Block) -> dict:
        if block.line not in done:
            where = tmp_path_factory.mktemp(f"readme{block.line}")
            code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")  # tracebacks: README lines
            namespace = {"__name__": "__main__"}
            old = os.getcwd()
            os.chdir(where)
            try:
                exec(code, namespace)
            finally:
                os.chdir(old)
            done[block.line] = namespace
        return done[block.line]

    return run


@pytest.mark.parametrize("block", PYTHON, ids=[f"line{b.line}" for b in PYTHON])
def test_python_block_runs(block, ran):
    ran(block)


def loop_block() -> Block:
    found = [b for b in PYTHON if "def train(" in b.code]
    assert len(found) == 1, "the README's own training loop (a block defining train) is gone"
    return found[0]


def tiny_families() -> dict[str, dict]:
    """Each family's first tiny image case of the contract suite, which has one for every registered model."""
    from test_contract import CASES

    cases: dict[str, dict] = {}
    for name, config, kind in CASES:
        if kind == "image":
            cases.setdefault(name, config)
    return cases


FAMILIES = tiny_families()


def test_every_family_but_the_priors_is_in_the_loop_check():
    from aezoo.models.base import Prior
    from aezoo.registry import get, names

    assert set(FAMILIES) == {n for n in names() if not issubclass(get(n), Prior)}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_readme_loop_trains_as_the_trainer_does(name, ran):
    """The README's claim: its loop gives the weights aezoo.Trainer gives (CPU, fp32, same seed, epochs and
    batch size), so a user who starts from it trains each family by the family's own recipe."""
    train = ran(loop_block())["train"]
    data = aezoo.data.load("digits?limit=256")
    mine = aezoo.create(name, input_shape=data.shape, seed=0, **FAMILIES[name])
    train(mine, data, epochs=2, batch_size=64, seed=3)
    twin = aezoo.create(name, input_shape=data.shape, seed=0, **FAMILIES[name])
    config = aezoo.TrainConfig(epochs=2, batch_size=64, seed=3, precision="fp32", channels_last=False, progress=False)
    aezoo.Trainer(twin, data, config, run_dir=None).fit()
    ours, theirs = mine.state_dict(), twin.state_dict()
    assert ours.keys() == theirs.keys()
    initial = aezoo.create(name, input_shape=data.shape, seed=0, **FAMILIES[name]).state_dict()
    assert any(not torch.equal(ours[k], initial[k]) for k in ours), f"{name}: the README's loop changed no weight"
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"{name}: the README's loop and the Trainer differ in {different[:3]}"


# --- shell blocks ---------------------------------------------------------------------------------------
def without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a word outside quotes (a shell comment)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def command_lines(block: Block) -> list[list[str]]:
    """The block's commands as argument lists: continued lines joined, comments and VAR=value prefixes gone."""
    out, pending = [], ""
    for line in block.code.splitlines():
        line = pending + without_comment(line)
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        tokens = shlex.split(line)
        while tokens and ENV_ASSIGNMENT.match(tokens[0]):
            tokens.pop(0)
        if tokens:
            out.append(tokens)
    return out


def variants(tokens: list[str]) -> list[list[str]]:
    """The command lines a README line stands for: its ``[OPTIONAL]`` parts included, each alternative of an
    ``a|b`` inside them used once."""
    flat, alternatives, depth = [], {}, 0
    for t in tokens:
        if t.startswith("["):
            depth += 1
            t = t[1:]
        closes = depth and t.endswith("]")
        if closes:
            t = t[:-1]
        if depth and "|" in t:
            alternatives[len(flat)] = t.split("|")
        flat.append(t)
        depth -= bool(closes)
    n = max((len(a) for a in alternatives.values()), default=1)
    return [[alternatives[i][j % len(alternatives[i])] if i in alternatives else t for i, t in enumerate(flat)]
            for j in range(n)]


def strict(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``parser`` and its sub-parsers refusing abbreviated options: the README spells each option out, so a
    renamed option cannot pass as an abbreviation of the new name."""
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                strict(sub)
    return parser


def parsed(parser: argparse.ArgumentParser, tokens: list[str], where: str):
    """``tokens[1:]`` parsed by ``parser``; None for --help and --version, which exit at once."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return strict(parser).parse_args(tokens[1:])
    except SystemExit as e:
        if e.code == 0:
            return None
        pytest.fail(f"{where}: {shlex.join(tokens)}: {err.getvalue().strip().splitlines()[-1]}")


class Checker:
    """Checks one sh block's commands in order (a later line may refer to an earlier one's run)."""

    def __init__(self, block: Block, tmp: Path):
        self.block, self.tmp = block, tmp
        self.runs: dict[str, list[str]] = {}  # --out of each 'aezoo train' -> its trackers

    def fail(self, tokens, message: str):
        pytest.fail(f"{self.block.where}: {shlex.join(tokens)}: {message}")

    def check(self, tokens: list[str]) -> None:
        program = tokens[0]
        method = getattr(self, "check_" + program.replace("-", "_"), None)
        if method is None:
            self.fail(tokens, f"no check for {program!r} commands in tests/test_readme.py; add one")
        for variant in variants(tokens):
            method(variant)

    # --- aezoo ---
    def check_aezoo(self, tokens: list[str]) -> None:
        from aezoo.cli import build_parser

        a = parsed(build_parser(), tokens, self.block.where)
        if a is None:
            return
        try:
            getattr(self, "aezoo_" + a.command.replace("-", "_"), lambda a, t: None)(a, tokens)
            if getattr(a, "data", None):
                from aezoo.data import parse_spec

                parse_spec(a.data)
        except UserError as e:
            self.fail(tokens, f"aezoo: error: {e}")

    def aezoo_train(self, a, tokens) -> None:
        from aezoo.config import apply_overrides
        from aezoo.models.base import make_config
        from aezoo.registry import get
        from aezoo.train.tracking import check_trackers

        model_sets = [s for s in a.sets if not s.startswith("train.")]
        train_sets = [s[len("train."):] for s in a.sets if s.startswith("train.")]
        if a.resume:
            if model_sets or a.preset:
                self.fail(tokens, "a resumed run keeps its model config (no --set or --preset for the model)")
        else:
            name = a.model or ("pixelcnn" if a.prior_of else None)
            if name is None:
                self.fail(tokens, "names no model")
            if not a.data and not a.prior_of:
                self.fail(tokens, "--data is required")
            # the fields the data fills in, where the config checks them: a prior's items are code grids
            data = {"input_shape": [7, 7], "data_kind": "codes"} if a.prior_of else {}
            make_config(get(name), a.preset, data, model_sets)
        apply_overrides(aezoo.TrainConfig(), train_sets, "train config")
        trackers = [t.strip() for t in (a.log or "").split(",") if t.strip()]
        check_trackers(trackers)
        self.runs[a.out.rstrip("/")] = trackers

    def aezoo_eval(self, a, tokens) -> None:
        from aezoo.eval.metrics import METRICS

        for name in (a.metrics or "").split(","):
            if name.strip() and name.strip() != "cheap" and name.strip() not in METRICS:
                self.fail(tokens, f"no metric {name!r} (metrics: {', '.join(METRICS)})")

    def aezoo_compare(self, a, tokens) -> None:
        from aezoo.apps.compare import families, family_sets
        from aezoo.models.base import make_config
        from aezoo.registry import get

        for name in (a.models or "").split(","):
            if name.strip():
                get(name.strip())
        for name, sets in family_sets(a.sets, families(a.models)).items():
            make_config(get(name), None, {}, sets)

    def aezoo_list(self, a, tokens) -> None:
        from aezoo.cli import main

        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(tokens[1:]) == 0
        for name in aezoo.list_models():
            assert name in out.getvalue(), f"{self.block.where}: 'aezoo list' does not list {name}"

    def aezoo_denoise(self, a, tokens) -> None:
        from aezoo.corrupt import parse

        if a.noise:
            parse(a.noise)
        self.run_on_pictures(a, tokens)

    def aezoo_inpaint(self, a, tokens) -> None:
        from aezoo.apps.restore import parse_box

        if a.box:
            parse_box(a.box)
        self.run_on_pictures(a, tokens)

    def run_on_pictures(self, a, tokens) -> None:
        """The shipped photo models, for real, when every input is a picture (not a run directory): on
        generated pictures of the names the command gives, in a folder of its own."""
        if a.data or not a.inputs or not all(Path(p).suffix in (".jpg", ".png") for p in a.inputs):
            return
        from aezoo.cli import main

        where = self.tmp / f"run{len(list(self.tmp.iterdir()))}"
        where.mkdir()
        yy, xx = np.mgrid[:40, :56]
        picture = np.stack([(4 * xx) % 256, (5 * yy) % 256, (2 * (xx + yy)) % 256], -1).astype(np.uint8)
        picture[::7, ::5] = 255  # a few white impulses, for --impulses
        for p in a.inputs:
            Image.fromarray(picture).save(where / p)
        if getattr(a, "mask", None):
            mask = np.zeros(picture.shape[:2], np.uint8)
            mask[8:20, 10:30] = 255
            Image.fromarray(mask).save(where / a.mask)
        old, err = os.getcwd(), io.StringIO()
        os.chdir(where)
        try:
            with contextlib.redirect_stderr(err):
                status = main([*tokens[1:], "--quiet"])
        finally:
            os.chdir(old)
        if status != 0:
            self.fail(tokens, f"ran with exit status {status}: {err.getvalue().strip()}")
        out = where / a.out
        if not (out.is_dir() and any(out.iterdir())) and not out.is_file():
            self.fail(tokens, f"ran, but wrote nothing to {a.out}")

    # --- other programs ---
    def check_torchrun(self, tokens: list[str]) -> None:
        from torch.distributed.run import get_args_parser

        a = parsed(get_args_parser(), tokens, self.block.where)
        if not (a.module and a.training_script == "aezoo"):
            self.fail(tokens, "torchrun should start 'aezoo' as a module (-m aezoo)")
        self.check_aezoo(["aezoo", *a.training_script_args])

    def check_make(self, tokens: list[str]) -> None:
        targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))
        for target in tokens[1:]:
            if target not in targets:
                self.fail(tokens, f"the Makefile has no target {target!r} (targets: {', '.join(sorted(targets))})")

    def check_pip(self, tokens: list[str]) -> None:
        from packaging.requirements import Requirement

        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        if tokens[1:2] != ["install"]:
            self.fail(tokens, "only 'pip install' is checked")
        for arg in tokens[2:]:
            if arg.startswith("-"):
                continue
            req = Requirement(arg)
            if req.name != project["name"]:
                self.fail(tokens, f"installs {req.name!r}, not this project ({project['name']!r})")
            missing = set(req.extras) - set(project.get("optional-dependencies", {}))
            if missing:
                self.fail(tokens, f"pyproject.toml has no extra {sorted(missing)[0]!r}")

    def check_tensorboard(self, tokens: list[str]) -> None:
        from aezoo.train.tracking import TENSORBOARD_DIR

        if not (Path(sys.executable).parent / "tensorboard").exists():
            self.fail(tokens, "no tensorboard program next to this Python (the tensorboard extra installs it)")
        logdir = tokens[tokens.index("--logdir") + 1].rstrip("/") if "--logdir" in tokens else None
        written = [f"{out}/{TENSORBOARD_DIR}" for out, trackers in self.runs.items() if "tensorboard" in trackers]
        if logdir not in written:
            self.fail(tokens, f"--logdir {logdir} is not where an earlier 'aezoo train --log tensorboard' of the "
                              f"block writes ({', '.join(written) or 'none'})")

    def check_curl(self, tokens: list[str]) -> None:
        from aezoo.cli import build_parser

        urls = [t for t in tokens[1:] if t.startswith(("http://", "https://", "localhost", "127.0.0.1"))]
        url = urlsplit(urls[0] if "://" in urls[0] else "http://" + urls[0])
        default_port = build_parser().parse_args(["serve", "index/"]).port
        if url.port != default_port:
            self.fail(tokens, f"port {url.port}, but 'aezoo serve' listens on {default_port} by default")
        options = {t: tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t in ("-d", "-F", "-H")}
        forms = [tokens[i + 1] for i, t in enumerate(tokens[:-1]) if t == "-F"]
        method = "post" if "-d" in options or forms else "get"
        schema = serve_schema()
        route = schema["paths"].get(url.path, {}).get(method)
        if route is None:
            self.fail(tokens, f"'aezoo serve' has no {method.upper()} {url.path}")
        if method == "get":
            return
        content = route["requestBody"]["content"]
        kind = "multipart/form-data" if forms else "application/json"
        if kind not in content:
            self.fail(tokens, f"{url.path} takes {', '.join(content)}, not {kind}")
        name = content[kind]["schema"]["$ref"].rsplit("/", 1)[-1]
        fields = set(schema["components"]["schemas"][name]["properties"])
        given = {f.split("=", 1)[0] for f in forms} if forms else set(json.loads(options["-d"]))
        if not given <= fields:
            self.fail(tokens, f"{url.path} has no field {sorted(given - fields)[0]!r} (fields: {', '.join(sorted(fields))})")


_SCHEMA: dict = {}


def serve_schema() -> dict:
    """The OpenAPI schema of 'aezoo serve's app, over a tiny index built here (no model needed)."""
    if not _SCHEMA:
        import tempfile

        from aezoo.apps.serve import create_app
        from aezoo.hashing import HashIndex

        with tempfile.TemporaryDirectory() as d:
            index = HashIndex(8)
            index.add(np.random.default_rng(0).random((4, 8)) > 0.5, ["a", "b", "c", "d"])
            index.save(d)
            _SCHEMA.update(create_app(d).openapi())
    return _SCHEMA


@pytest.mark.parametrize("block", SHELL, ids=[f"line{b.line}" for b in SHELL])
def test_shell_block_commands_are_what_aezoo_accepts(block, tmp_path):
    lines = command_lines(block)
    assert lines, f"{block.where}: a shell block with no command"
    checker = Checker(block, tmp_path)
    for tokens in lines:
        checker.check(tokens)


INLINE = re.compile(r"`(aezoo [^`]*--out [^`]*)`")


def inline_commands() -> list[Block]:
    """Whole commands written inline in the prose (those giving an ``--out``; shorter spans such as
    ``aezoo train --eval full`` are fragments of a command, not commands)."""
    found, heading, fenced = [], "", False
    for n, line in enumerate(README.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif not fenced:
            found += [Block("sh", n, m.group(1), heading) for m in INLINE.finditer(line)]
    return found


INLINE_COMMANDS = inline_commands()


@pytest.mark.parametrize("block", INLINE_COMMANDS, ids=[f"line{b.line}" for b in INLINE_COMMANDS])
def test_inline_commands_in_the_prose_are_what_aezoo_accepts(block, tmp_path):
    Checker(block, tmp_path).check(shlex.split(block.code))


def test_the_prose_has_inline_commands_to_check():
    assert len(INLINE_COMMANDS) >= 3, "the README's prose lost its inline commands, or this test stopped finding them"


# --- the checks themselves ------------------------------------------------------------------------------
ROTTEN = [  # (a made-up block, what its failure must name)
    ("aezoo train ae --data fashion-mnist --out runs/a --max-minute 5", "unrecognized arguments: --max-minute"),
    ("aezoo train ae --data fashion-mnist --out runs/a --set latent_dims=10", "unknown ae config key 'latent_dims'"),
    ("aezoo train ae --data fashion-mnist --out runs/a --set train.schedule=cosin", "schedule must be one of"),
    ("aezoo train ae --preset hinton2007 --data mnist --out runs/a", "no preset 'hinton2007'"),
    ("aezoo train aee --data mnist --out runs/a", "unknown model 'aee'"),
    ("aezoo train ae --data fashion-mnst --out runs/a", "unknown dataset 'fashion-mnst'"),
    ("aezoo train ae --data 'folder:x/?sizes=32' --out runs/a", "no option 'sizes'"),
    ("aezoo train dae --data mnist --out runs/a --set corruption=gauss:0.2", "gauss"),
    ("aezoo eval runs/ae --metrics recon,probe", "no metric 'probe'"),
    ("aezoo compare --data lines --out c --models ae,vea", "unknown model 'vea'"),
    ("aezoo compare --data lines --out c --models ae,vae --set vae.encodr=m:Net", "unknown vae config key 'encodr'"),
    ("aezoo compare --data lines --out c --models ae --set vae.latent_dim=4", "'vae' is not among the compared"),
    ("aezoo sample runs/vae --out s.png [--sampler prior|gaussian]", "invalid choice: 'gaussian'"),
    ("aezoo train vae --data digits --out runs/v --log tensorbord", "unknown tracker 'tensorbord'"),
    ("aezoo denoise runs/dn --data mnist --noise gausian:0.3 --out d/", "gausian"),
    ("aezoo inpaint photo.jpg --box 1,2,3 --out filled.png", "--box '1,2,3'"),
    ("aezoo inpaint photo.jpg --out filled.png", "ran with exit status 2"),  # no hole marked
    ("torchrun --nproc_per_nodes=2 -m aezoo train ae --data mnist --out r", "--nproc_per_nodes"),
    ("torchrun --nproc-per-node=2 -m aezoo trian ae --out r", "invalid choice: 'trian'"),
    ("make tests", "no target 'tests'"),
    ("pip install 'aezoo[tensorbord]'", "no extra 'tensorbord'"),
    ("curl -s localhost:8000/api/serch -H 'content-type: application/json' -d '{\"text\": \"x\"}'",
     "no POST /api/serch"),
    ("curl -s localhost:8000/api/search -H 'content-type: application/json' -d '{\"txt\": \"x\"}'", "no field 'txt'"),
    ("curl -s localhost:8000/api/search/image -F image=@q.png", "no field 'image'"),
    ("curl -s localhost:8080/api/info", "port 8080"),
    ("aezoo train vae --data digits --out runs/v --log tensorboard\ntensorboard --logdir runs/w/tensorboard",
     "--logdir runs/w/tensorboard is not where"),
    ("ls runs", "no check for 'ls'"),
]


@pytest.mark.parametrize("text,named", ROTTEN, ids=[f"rot{i}" for i in range(len(ROTTEN))])
def test_the_shell_checks_find_what_rots(text, named, tmp_path):
    """Each kind of rot the shell checks are for, in a made-up block: the check fails, naming it."""
    block = Block("sh", 1, text + "\n", "made up")
    checker = Checker(block, tmp_path)
    with pytest.raises(pytest.fail.Exception) as failed:
        for tokens in command_lines(block):
            checker.check(tokens)
    assert named in str(failed.value)


def test_command_lines_and_variants():
    block = Block("sh", 1, "A=1 aezoo eval x  # it's a comment\n# only a comment\naezoo train \\\n  --out r --resume\n",
                  "made up")
    assert command_lines(block) == [["aezoo", "eval", "x"], ["aezoo", "train", "--out", "r", "--resume"]]
    line = ["aezoo", "sample", "r", "[--seed", "1]", "[--sampler", "prior|gmm]", "--set", "widths=[8,4]"]
    assert variants(line) == [["aezoo", "sample", "r", "--seed", "1", "--sampler", "prior", "--set", "widths=[8,4]"],
                              ["aezoo", "sample", "r", "--seed", "1", "--sampler", "gmm", "--set", "widths=[8,4]"]]
