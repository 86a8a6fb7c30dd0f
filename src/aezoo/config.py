"""Typed dataclass configs: to and from JSON, and dotted overrides from the command line.

``apply_overrides(cfg, ["widths=[512,256]", "encoder.depth=3"])`` returns a new config with the values
parsed (JSON first, plain string otherwise) and checked against the field's declared type.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from .errors import UserError


def to_dict(cfg) -> dict:
    """A JSON-ready dict (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls, data: dict, where: str = "config", validate: bool = True):
    """Build ``cls`` from a dict, checking every key and value; unknown keys are an error. ``validate=False``
    leaves the config's own cross-field check to the caller (overrides still to come)."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected an object, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise UserError(_unknown_key(key, known, where))
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where != "config" else key)
    out = cls(**kwargs)
    if validate:
        _validate(out)
    return out


def apply_overrides(cfg, overrides: list[str], where: str = "config"):
    """Apply ``KEY=VALUE`` strings (dotted keys reach into nested dataclasses) and return a new config."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set expects KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        cfg = _set_path(cfg, key.strip().split("."), _parse_value(raw), key.strip(), where)
    _validate(cfg)  # once, after all overrides: fields may depend on each other
    return cfg


def _set_path(cfg, path: list[str], value, full_key: str, where: str):
    known = {f.name for f in dataclasses.fields(cfg)}
    head = path[0]
    if head not in known:
        raise UserError(_unknown_key(full_key, known, where))
    hint = get_type_hints(type(cfg))[head]
    if len(path) > 1:
        child = getattr(cfg, head)
        if not dataclasses.is_dataclass(child):
            raise UserError(f"{where} key {full_key!r}: {head!r} has no sub-keys")
        new_value = _set_path(child, path[1:], value, full_key, where)
    else:
        new_value = _coerce(value, hint, full_key)
    return dataclasses.replace(cfg, **{head: new_value})


def _validate(cfg) -> None:
    check = getattr(cfg, "validate", None)
    if check is not None:
        check()


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw  # a bare word: a string value


def _unknown_key(key: str, known, where: str) -> str:
    hint = difflib.get_close_matches(key.split(".")[-1], known, n=1)
    extra = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown {where} key {key!r}{extra}; known keys: {', '.join(sorted(known))}"


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type ``hint`` and convert the lossless cases (int -> float, list -> tuple)."""
    origin = get_origin(hint)
    args = get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise UserError(f"{key} must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else from_dict(hint, value, key)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{key} must be a list, got {value!r}")
        item_type = args[0] if args else Any
        items = [_coerce(v, item_type, key) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{key} must be an object, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise UserError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UserError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise UserError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{key} must be a string, got {value!r}")
    return value


