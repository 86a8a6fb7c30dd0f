"""Layers look down only (STYLE.md habit 11): no module of aezoo imports a module of a higher layer.

Read with ``ast`` (nothing is imported, so this is fast): top-level and function-local imports, relative
and absolute ``aezoo.`` ones. A new top-level module or package needs a place in LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "aezoo"

# lowest first; a module may import its own layer and those below it
LAYERS = [
    ("utilities", {"_version", "errors", "io", "rng", "config", "outputs", "env", "corrupt", "progress"}),
    ("blocks", {"data", "nn", "losses", "hashing"}),  # hashing: the FAISS hash table, knows no model
    ("models", {"models", "registry"}),  # registry: name -> model class; importing models registers them
    ("train, eval", {"train", "eval"}),
    ("report", {"report"}),
    ("apps", {"apps", "sklearn", ""}),  # "": the package itself (aezoo/__init__.py, the public API)
    ("cli", {"cli", "__main__"}),
]
RANK = {part: i for i, (_, parts) in enumerate(LAYERS) for part in parts}


def module_name(path: Path, root: Path) -> str:
    """``aezoo.apps.runs`` for root/apps/runs.py, ``aezoo.data`` for root/data/__init__.py."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    return RANK.get(parts[1] if len(parts) > 1 else "")


def imported_modules(node: ast.AST, module: str, is_package: bool, root: Path) -> list[str]:
    """The aezoo modules an Import or ImportFrom node names (``from X import y`` counts as X.y when y is a
    module of the package, else as X)."""
    top = root.name
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == top or a.name.startswith(top + ".")]
    if node.level:  # relative: from the module's package, up level - 1 packages
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - (node.level - 1)] + ([node.module] if node.module else []))
    else:
        base = node.module or ""
    if base != top and not base.startswith(top + "."):
        return []
    out = []
    for alias in node.names:
        sub = root.joinpath(*(base + "." + alias.name).split(".")[1:])
        out.append(f"{base}.{alias.name}" if sub.is_dir() or sub.with_suffix(".py").is_file() else base)
    return out


def violations(root: Path = SRC) -> list[str]:
    """One line per upward import (and per module without a layer), as ``path:line: ...``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        rank = layer_of(module)
        where = path.relative_to(root.parent)
        if rank is None:
            found.append(f"{where}: module {module} has no layer; add it to LAYERS in tests/test_layers.py")
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in dict.fromkeys(imported_modules(node, module, path.name == "__init__.py", root)):
                target_rank = layer_of(target)
                if target_rank is not None and target_rank > rank:
                    found.append(f"{where}:{node.lineno}: {module} ({LAYERS[rank][0]}) imports {target} "
                                 f"({LAYERS[target_rank][0]}): {ast.unparse(node)}")
    return found


def test_layers_look_down_only():
    found = violations()
    assert not found, "imports of a higher layer:\n" + "\n".join(found)


def test_the_check_finds_upward_imports(tmp_path):
    root = tmp_path / "aezoo"
    for name in ("data", "models", "apps"):
        (root / name).mkdir(parents=True)
        (root / name / "__init__.py").write_text("")
    (root / "__init__.py").write_text("from . import data\n")
    (root / "apps" / "runs.py").write_text("from ..models import base\n")  # down: fine
    (root / "models" / "base.py").write_text("import aezoo.data\n")  # down: fine
    (root / "data" / "__init__.py").write_text("def load():\n    from ..apps import runs\n")  # relative, local
    (root / "data" / "files.py").write_text("import torch\nfrom aezoo.models.base import x\n")  # absolute
    (root / "errors.py").write_text("from . import models\n")  # a utility importing a package
    (root / "extra.py").write_text("")  # no layer
    found = violations(root)
    assert len(found) == 4, found
    assert found[0].startswith("aezoo/data/__init__.py:2: aezoo.data (blocks) imports aezoo.apps.runs (apps)")
    assert found[1].startswith("aezoo/data/files.py:2: aezoo.data.files (blocks) imports aezoo.models.base")
    assert found[2].startswith("aezoo/errors.py:1: aezoo.errors (utilities) imports aezoo.models (models)")
    assert "aezoo.extra has no layer" in found[3]
