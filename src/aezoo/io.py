"""Writing outputs and reading inputs safely.

Every file aezoo writes goes through :func:`atomic_path` (a temporary file beside the target, then one
rename), and every folder it creates through :func:`make_dir`, so a crash or a full disk never leaves a
half-written file behind, and any failure to create or write an output path (a file where a folder is
needed or the reverse, no permission, no space, a parent that is a file) is a :class:`UserError`:
``PATH: cannot write (reason)``.
"""

from __future__ import annotations

import errno
import glob
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError


def cannot_write(path, error: OSError | str) -> UserError:
    """The user error for an output path that cannot be created or written."""
    if isinstance(error, OSError):
        known = {errno.ENOTDIR: "a parent of it is a file, not a folder",
                 errno.EISDIR: "it is a folder", errno.ENOSPC: "no space left on the device",
                 errno.EDQUOT: "disk quota exceeded", errno.EROFS: "read-only file system",
                 errno.EFBIG: "file too large for the file system or this process's file size limit"}
        reason = known.get(error.errno, error.strerror or str(error))
    else:
        reason = error
    return UserError(f"{path}: cannot write ({reason})")


def make_dir(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` and its parents (an existing folder is fine)."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.exists():
        raise cannot_write(path, "it exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a parent is a file
        raise cannot_write(path, "a parent of it is a file, not a folder") from None
    except OSError as e:
        raise cannot_write(path, e) from None
    return path


def check_output_dir(path: str | os.PathLike) -> None:
    """Refuse, before any work, an output folder that cannot be: ``path`` is a file, or its nearest
    existing ancestor is a file or (for users other than root) not writable. Creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise cannot_write(path, "it exists and is not a folder")
    _check_ancestor(path, path)


def check_output_file(path: str | os.PathLike) -> None:
    """As :func:`check_output_dir`, for a file: ``path`` must not be a folder."""
    path = Path(path)
    if path.is_dir():
        raise cannot_write(path, "it is a folder")
    _check_ancestor(path, path.parent)


def _check_ancestor(target: Path, folder: Path) -> None:
    """``folder`` (the output folder of ``target``, or its nearest existing ancestor) can take new entries."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise cannot_write(target, f"{folder} is a file, not a folder")
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            raise cannot_write(target, f"read-only file system at {folder}")
        raise cannot_write(target, f"no permission to write in {folder}")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename. An OSError
    while creating, writing or renaming becomes a :class:`UserError`; the temporary file is removed and
    ``path`` keeps its old content."""
    path = Path(path)
    if path.is_dir():
        raise cannot_write(path, "it is a folder")
    make_dir(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise cannot_write(path, e) from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the mode a plain open() would
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; on success it takes the place of ``path`` (a folder
    already there is removed only then). On failure nothing of it remains and ``path`` is untouched."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise cannot_write(path, "it exists and is not a folder")
    make_dir(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700; give the folder the mode a plain mkdir would
    except OSError as e:
        raise cannot_write(path, e) from None
    old = None
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f"{tmp.name}.old")
            path.rename(old)
        try:
            tmp.rename(path)
        except OSError:
            if old is not None:
                old.rename(path)
                old = None
            raise
    except OSError as e:
        raise cannot_write(path, e) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


@contextmanager
def one_writer(path: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of the output folder ``path`` (a run, an index) while the block runs: a second
    aezoo process that asks for it meanwhile gets a :class:`UserError` naming the holder's process id.
    The lock is a kernel lock (``flock``) on the hidden file ``.NAME.lock`` beside ``path``, so a holder
    that dies, even by SIGKILL, releases it, and its left-over file blocks nobody; a clean exit removes
    the file. The temporary folders of a killed holder's :func:`atomic_dir` write are removed on taking
    the lock. Where ``fcntl`` is missing (Windows), there is no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not on POSIX
        yield
        return
    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    new = []  # folders made for the lock: removed again if the run leaves them empty
    folder = lock.parent
    while not folder.exists() and folder != folder.parent:
        new.append(folder)
        folder = folder.parent
    make_dir(lock.parent)
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
        except OSError as e:
            raise cannot_write(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{path}: in use by another aezoo process (pid {holder}); wait for it to end "
                            "or choose another output") from None
        try:  # the file we locked may have been removed by a holder that just finished: lock the new one
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        try:  # who holds it, for the message a second writer gets (a full disk leaves it unknown)
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:
            pass
        # what a killed holder left of an atomic_dir(path) write (only holders write those): remove it
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        yield
    finally:
        try:
            os.unlink(lock)
        except OSError:
            pass
        os.close(fd)  # releases the lock
        for folder in new:  # deepest first; stops at the first that is not empty
            try:
                folder.rmdir()
            except OSError:
                break


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_json(path: str | os.PathLike, obj) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_tensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> None:
    """A safetensors file, written atomically. Serialised in memory and written by Python, so a failing
    write is an OSError (safetensors' own file writer reports it as a SafetensorError)."""
    from safetensors.torch import save

    write_bytes(path, save(tensors, metadata=metadata))


def read_json(path: str | os.PathLike, what: str = "file") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such {what}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: expected a JSON object")
    return obj


def save_image(path: str | os.PathLike, image) -> None:
    """Save a PIL image atomically; the format follows the file's suffix."""
    suffix = Path(path).suffix.lower().lstrip(".") or "png"
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF", "tiff": "TIFF", "webp": "WEBP"}
    if suffix not in fmt:
        raise UserError(f"{path}: unsupported image format .{suffix} (use .png or .jpg)")
    with atomic_path(path) as tmp:
        image.save(tmp, format=fmt[suffix])
