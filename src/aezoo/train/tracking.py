"""Experiment tracking: the lines of ``metrics.jsonl``, the run's config and pictures drawn at validation,
sent on to TensorBoard or MLflow as well (``TrainConfig.log``, ``aezoo train --log tensorboard,mlflow``).

``metrics.jsonl`` stays the record; a tracker is a copy for the tools people already watch. Each is an
optional extra, imported only when a run asks for it:

- ``tensorboard`` (``pip install 'aezoo[tensorboard]'``): event files in ``RUN/tensorboard/``, written with
  ``torch.utils.tensorboard``. A resumed run appends to the same folder from the step after its checkpoint,
  and marks that step as a restart (TensorBoard's ``purge_step``), so the steps a crash made it redo are shown
  once, with their new values.
- ``mlflow`` (``pip install 'aezoo[mlflow]'``): a run in ``$MLFLOW_TRACKING_URI``, by default the file store
  ``./mlruns`` (MLflow 3 asks for ``MLFLOW_ALLOW_FILE_STORE=true`` to use one; aezoo sets it for this
  default), in the experiment ``$MLFLOW_EXPERIMENT_NAME`` (default ``aezoo``). ``RUN/mlflow.json`` keeps the
  run id, so a resumed run logs into the same MLflow run. MLflow keeps every point it is sent, so the steps
  it already has are not sent again: redone steps have the same values, only their timings differ.

Scalars are named ``SPLIT/KEY`` (``train/loss``, ``val/recon``, ``train/lr``) at the line's step. Parameters
are the run's config flattened to dotted keys (``train.lr``, ``model_config.latent_dim``), logged once, when
the tracker's run starts. Pictures are ``(H, W, 3)`` uint8 arrays, named by whoever draws them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

from ..errors import UserError
from ..io import cannot_write, read_json, write_json

# name -> (module that must be importable, extra that installs it)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
TENSORBOARD_DIR = "tensorboard"
MLFLOW_FILE = "mlflow.json"
MLFLOW_PARAM_LENGTH = 6000  # MLflow refuses longer parameter values (a text model's vocabulary can be longer)


def check_trackers(names) -> None:
    """Refuse, before anything is written, an unknown tracker or one whose package is missing."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        raise UserError(f"log must be a list of tracker names such as ['tensorboard'], got {names!r}")
    for name in names:
        if name not in TRACKERS:
            raise UserError(f"unknown tracker {name!r} in log; choose from {', '.join(TRACKERS)}")
        module, extra = TRACKERS[name]
        if not _installed(module):
            raise UserError(f"logging to {name} needs the {module} package, which is not installed: "
                            f"pip install 'aezoo[{extra}]'")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken install, or a module without a spec
        return False


class Tracker:
    """What the trainer calls. Every method may do nothing; ``log_params`` does, once the run has them."""

    def log_params(self, params: dict) -> None: ...

    def log_scalars(self, scalars: dict[str, float], step: int) -> None: ...

    def log_image(self, name: str, image, step: int) -> None: ...

    def close(self, ok: bool = True) -> None: ...


class Trackers(Tracker):
    """Several trackers as one (none: every call does nothing)."""

    def __init__(self, trackers: list[Tracker] = ()):
        self.trackers = list(trackers)

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def log_params(self, params):
        for t in self.trackers:
            t.log_params(params)

    def log_scalars(self, scalars, step):
        for t in self.trackers:
            t.log_scalars(scalars, step)

    def log_image(self, name, image, step):
        for t in self.trackers:
            t.log_image(name, image, step)

    def close(self, ok=True):
        for t in self.trackers:
            t.close(ok)


def open_trackers(names, run_dir: Path, resume_step: int | None, run_name: str | None = None) -> Trackers:
    """The trackers ``names`` of the run in ``run_dir``; ``resume_step``: the checkpoint's step when the run
    resumes (None for a new run)."""
    check_trackers(names)
    opened: list[Tracker] = []
    try:
        for name in dict.fromkeys(names):  # each once, in the order given
            if name == "mlflow":
                opened.append(MLflowTracker(run_dir, resume_step, run_name or run_dir.name))
            else:
                opened.append(TensorBoardTracker(run_dir / TENSORBOARD_DIR, resume_step))
    except BaseException:
        Trackers(opened).close(ok=False)
        raise
    return Trackers(opened)


def scalars_of(record: dict) -> dict[str, float]:
    """A line of ``metrics.jsonl`` as named scalars: every number but the step, under ``SPLIT/``."""
    split = record["split"]
    return {f"{split}/{k}": float(v) for k, v in record.items()
            if k not in ("split", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def flatten(config: dict, prefix: str = "") -> dict:
    """Nested dicts as dotted keys; lists and None as JSON text, so every value is a str, number or bool."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        elif isinstance(value, (str, int, float, bool)):
            out[name] = value
        else:
            out[name] = json.dumps(value)
    return out


class TensorBoardTracker(Tracker):
    """Event files in ``folder``; parameters as TensorBoard's hparams (the HPARAMS tab)."""

    def __init__(self, folder: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        existing = folder.is_dir() and any(folder.iterdir())
        self.new = resume_step is None or not existing
        # A restart marker hides earlier events at and after it: a resume redoes the steps past its
        # checkpoint; a new run in the same folder (Trainer.fit without resume) starts over from step 0.
        purge = None if not existing else (0 if resume_step is None else resume_step + 1)
        try:
            self._writer = SummaryWriter(str(folder), purge_step=purge)
        except OSError as e:
            raise cannot_write(folder, e) from None

    def log_params(self, params):
        if not self.new:
            return
        from torch.utils.tensorboard.summary import hparams

        # written into this run's own file (add_hparams would open a sub-run per call)
        for summary in hparams(flatten(params), {}):
            self._writer.file_writer.add_summary(summary)

    def log_scalars(self, scalars, step):
        for key, value in scalars.items():
            self._writer.add_scalar(key, value, step)

    def log_image(self, name, image, step):
        self._writer.add_image(name, image, step, dataformats="HWC")

    def close(self, ok=True):
        self._writer.close()


class MLflowTracker(Tracker):
    """One MLflow run per aezoo run; its id in ``RUN/mlflow.json``."""

    def __init__(self, run_dir: Path, resume_step: int | None, run_name: str):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._exception = MlflowException
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow 3's own default is a SQLite database (full mlflow); ours, the file store ./mlruns
            uri = Path("mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        self._last: dict[str, int] = {}  # metric -> the last step the MLflow run has
        id_file = run_dir / MLFLOW_FILE
        try:
            self.client = MlflowClient(tracking_uri=uri)
            run = self._stored_run(id_file) if resume_step is not None else None
            self.new = run is None
            if run is None:
                experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "aezoo"
                found = self.client.get_experiment_by_name(experiment)
                experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
                run = self.client.create_run(experiment_id, run_name=run_name)
                write_json(id_file, {"run_id": run.info.run_id})
            else:
                self.client.update_run(run.info.run_id, status="RUNNING")
                for key in run.data.metrics:
                    self._last[key] = max(m.step for m in self.client.get_metric_history(run.info.run_id, key))
        except MlflowException as e:
            raise UserError(f"mlflow ({uri}): {e.message}") from None
        self.run_id = run.info.run_id
        self._horizon = max(self._last.values(), default=-1)  # pictures up to here are there too

    def _stored_run(self, id_file: Path):
        if not id_file.is_file():
            return None
        stored = read_json(id_file, "MLflow run id (mlflow.json)")
        if not isinstance(stored, dict) or not isinstance(stored.get("run_id"), str):
            raise UserError(f"{id_file}: malformed; it should hold {{\"run_id\": ...}}")
        try:
            return self.client.get_run(stored["run_id"])
        except self._exception:  # not in this tracking store (another URI): a new MLflow run
            return None

    def log_params(self, params):
        if not self.new:  # MLflow's parameters are immutable; the run has them
            return
        from mlflow.entities import Param

        items = [Param(k, _clip(str(v))) for k, v in flatten(params).items()]
        for i in range(0, len(items), 100):  # MLflow takes up to 100 parameters per call
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_scalars(self, scalars, step):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in scalars.items() if step > self._last.get(k, -1)]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_image(self, name, image, step):
        if step > self._horizon:
            self.client.log_image(self.run_id, image, key=name, step=step)

    def close(self, ok=True):
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


def _clip(value: str) -> str:
    if len(value) <= MLFLOW_PARAM_LENGTH:
        return value
    tail = f"... ({len(value)} characters)"
    return value[: MLFLOW_PARAM_LENGTH - len(tail)] + tail
