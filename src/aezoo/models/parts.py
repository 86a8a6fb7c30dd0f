"""Your own networks for a model's parts (its encoder, decoder, discriminator, critic, mapping).

A family declares the parts a user may replace in ``PARTS``: each :class:`Part` states its contract (what it
takes and returns, in words and shapes). Its config has two fields per part: ``encoder`` (None: the
family's own network) and ``encoder_kwargs`` (keyword arguments of the constructor). A network is given

- by import path, ``encoder="mypkg.nets:Encoder"`` (config files, ``--set encoder=mypkg.nets:Encoder``,
  or ``aezoo.create(..., encoder=Encoder)`` with the class): the run rebuilds it from ``config.json``;
- as a Python object, ``aezoo.create(..., encoder=Encoder(width=64))``: the config records its class as
  ``python-object:mypkg.nets:Encoder``; its arguments are unknown, so loading the run needs the object
  again: ``aezoo.load(run, encoder=Encoder(width=64))``.

Every user network is checked when the model is built, by one forward pass in eval mode on a dummy batch
of two items on the network's device: a wrong one is a one-line :class:`UserError` naming the part and the
shapes, before any training. Importing a name runs code from its module, so :func:`check_trust` refuses
a saved run that names one unless the caller trusts it (``trust_code=True``, ``--trust-code``).
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import UserError

OBJECT = "python-object:"  # prefix of a config value recording a network given as a Python object
_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_TRUST = contextvars.ContextVar("aezoo_trust_code", default=False)


@dataclass(frozen=True)
class Part:
    """One replaceable network. ``takes(model)``: the shape of one input item; ``gives(model)``: the shape
    of one output item (None: any shape). With ``any_layout`` the output may have any shape holding
    ``prod(gives)`` values per item (the model reshapes it). ``also``: further methods the model calls,
    each taking the same input, with the shape of one output item (None entries: any size)."""

    contract: str  # what it takes and returns, in words
    takes: Callable[[nn.Module], tuple[int, ...]]
    gives: Callable[[nn.Module], tuple[int | None, ...] | None]
    any_layout: bool = False
    also: tuple[tuple[str, Callable[[nn.Module], tuple[int | None, ...]]], ...] = ()


@contextlib.contextmanager
def trusting_code(trust: bool = True):
    """Within this block, loading a saved model may import the networks its config names (the CLI's
    ``--trust-code``)."""
    token = _TRUST.set(trust)
    try:
        yield
    finally:
        _TRUST.reset(token)


def trusted(trust_code: bool | None = None) -> bool:
    return _TRUST.get() if trust_code is None else trust_code


def names(cls) -> list[str]:
    """The parts of model class ``cls`` that a user may replace."""
    return list(getattr(cls, "PARTS", {}))


def split_given(cls, overrides: dict) -> tuple[dict[str, nn.Module], dict]:
    """Separate ``aezoo.create``'s keyword arguments: networks given as objects (recorded in the config as
    ``python-object:module:Name``) and classes (recorded by import path, so the run reloads by itself)
    from the plain config values."""
    given, values = {}, dict(overrides)
    for name in names(cls):
        value = values.get(name)
        if isinstance(value, nn.Module):
            given[name] = value
            values[name] = OBJECT + _import_path(type(value))
        elif isinstance(value, type):
            path = _import_path(value)
            if path.startswith("__main__:") or "<locals>" in path:
                raise UserError(f"{cls.name} {name}: the class {path} cannot be imported again by path; pass an "
                                f"instance ({name}={value.__name__}(...)), or define it in an importable module")
            values[name] = path
        elif value is not None and not isinstance(value, str):
            raise UserError(f"{cls.name} {name}: expected a torch.nn.Module, its class or an import path "
                            f"'module:Name', got {type(value).__name__}")
    return given, values


def given_at_load(cls, given: dict) -> dict[str, nn.Module]:
    """Networks passed to ``aezoo.load`` as objects: only the model's parts, only modules."""
    for name, net in given.items():
        if name not in names(cls):
            known = ", ".join(names(cls)) or "none"
            raise UserError(f"a {cls.name} model has no part {name!r} (its parts: {known})")
        if not isinstance(net, nn.Module):
            raise UserError(f"{cls.name} {name}: give the network object itself (a torch.nn.Module), got "
                            f"{type(net).__name__}; networks named by import path are rebuilt from the config")
    return dict(given)


def _import_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def check_trust(cls, config, where, trust_code: bool | None = None, given: dict | None = None) -> None:
    """Refuse, before anything is imported, a saved config (``where``) that names user networks, unless the
    caller trusts it; a network recorded as a Python object must be given again."""
    given = given or {}
    for name in names(cls):
        value = getattr(config, name)
        if value is None or name in given:
            continue
        if value.startswith(OBJECT):
            raise UserError(f"{where}: the {name} was given as a Python object ({value[len(OBJECT):]}) and cannot "
                            f"be rebuilt from the config; load it in Python with aezoo.load(RUN, {name}=...) giving "
                            f"the same network (or train with {name}='module:Name' and {name}_kwargs to make runs "
                            "that reload by themselves)")
        if not trusted(trust_code):
            raise UserError(f"{where}: the {name} is your own network {value}; importing it runs code from that "
                            "module, so it is not done unless you trust this run: load with trust_code=True "
                            "(command line: --trust-code)")


def build(model: nn.Module, name: str, given: dict, default: Callable[[], nn.Module]) -> nn.Module:
    """The network of part ``name`` of ``model`` (being built): the object in ``given``, else the one its
    config names by import path (constructed with ``{name}_kwargs``), else ``default()``. A user network is
    checked by a dry run (see :func:`check`)."""
    c = model.config
    value = getattr(c, name)
    label = f"{model.name} {name}"
    if name in given:
        net = given[name]
    elif value is None:
        return default()
    else:
        net = _construct(label, value, getattr(c, f"{name}_kwargs"))
    check(model, name, net)
    return net


def _construct(label: str, path: str, kwargs: dict) -> nn.Module:
    if path.startswith(OBJECT):
        raise UserError(f"{label}: {path[len(OBJECT):]} was given as a Python object; give the object again, or "
                        f"an import path 'module:Name'")
    if not _PATH.match(path):
        raise UserError(f"{label}: {path!r} is not an import path 'module:Name' (e.g. mypkg.nets:Encoder)")
    module_name, qualname = path.split(":")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"{label}: cannot import {module_name!r} ({e}); is its folder on PYTHONPATH?") from None
    except Exception as e:  # an error in the user's module: theirs to fix
        raise UserError(f"{label}: importing {module_name!r} failed: {type(e).__name__}: {_first_line(e)}") from None
    for attr in qualname.split("."):
        if not hasattr(obj, attr):
            raise UserError(f"{label}: {module_name!r} has no {qualname!r}")
        obj = getattr(obj, attr)
    try:
        net = obj(**kwargs)
    except Exception as e:
        raise UserError(f"{label}: {path}(**{kwargs}) failed: {type(e).__name__}: {_first_line(e)}") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"{label}: {path}(**{kwargs}) gave a {type(net).__name__}, not a torch.nn.Module")
    return net


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else ""


def _shape(dims) -> str:
    return "(" + ", ".join(["B", *("*" if d is None else str(d) for d in dims)]) + ")"


def check(model: nn.Module, name: str, net: nn.Module) -> None:
    """A dry run of ``net`` as part ``name`` of ``model``: two dummy items (0.5 everywhere) of the shape it
    takes, in eval mode and without gradients, on the network's device; the random streams are left as they
    were, so a seed gives the same weights with or without the check. Refuses, in one line, a network that
    fails or returns the wrong shape."""
    part = type(model).PARTS[name]
    takes = tuple(part.takes(model))
    label = f"{model.name} {name} ({type(net).__module__}:{type(net).__qualname__})"
    tensors = [*net.parameters(), *net.buffers()]
    device = tensors[0].device if tensors else torch.device("cpu")
    x = torch.full((2, *takes), 0.5, device=device)
    calls = [("forward", part.gives, part.any_layout), *((m, g, False) for m, g in part.also)]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            for method, gives, any_layout in calls:
                want = gives(model)
                call = f"{method}()" if method != "forward" else "it"
                if not callable(getattr(net, method, None)):
                    raise UserError(f"{label}: has no {method}() method; {part.contract}")
                try:
                    y = getattr(net, method)(x)
                except Exception as e:
                    raise UserError(f"{label}: {call} failed on a dummy batch {_shape(takes)}: {type(e).__name__}: "
                                    f"{_first_line(e)}; {part.contract}") from None
                _check_output(label, call, part, takes, y, want, any_layout)
    finally:
        net.train(was_training)


def _check_output(label, call, part, takes, y, want, any_layout) -> None:
    got = tuple(y.shape) if isinstance(y, torch.Tensor) else None
    if got is None:
        wrong = f"returned a {type(y).__name__}, not a tensor"
    elif got[0] != 2:
        wrong = f"returned {tuple(got)} for a batch of 2"
    elif want is None:
        return
    elif any_layout:
        if math.prod(got[1:]) == math.prod(want):
            return
        wrong = f"returned {_shape(got[1:])}: {math.prod(got[1:])} values per item"
    elif len(got) == len(want) + 1 and all(w is None or w == g for w, g in zip(want, got[1:])):
        return
    else:
        wrong = f"returned {_shape(got[1:])}"
    need = f"{math.prod(want)} values per item, e.g. {_shape(want)}" if want is not None and any_layout else \
        _shape(want) if want is not None else "a tensor"
    raise UserError(f"{label}: takes {_shape(takes)} and must return {need} ({part.contract}); {call} {wrong}")


__all__ = ["Part", "OBJECT", "build", "check", "check_trust", "split_given", "given_at_load", "trusting_code", "trusted", "names"]
