"""Model -> bundle directory, for `Encoder`: bundles as they are (without importing torch or
transformers), checkpoint folders exported once into a cache and reused, hub ids downloaded first
where a network exists."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from ._files import MANIFEST_FILE
from .errors import ModelLoadError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def resolve_bundle(model: str | os.PathLike[str]) -> Path:
    """The bundle directory for `model`: a bundle, a checkpoint folder (exported once into the
    cache, see `cache_dir`), or a hub id (downloaded where a network exists, then exported)."""
    text = os.fspath(model)
    if not isinstance(text, str):
        raise TypeError(f"model must be a str or os.PathLike[str], not {type(model).__name__}")
    path = Path(text).expanduser()
    if path.is_dir():
        if (path / MANIFEST_FILE).is_file():
            return path.resolve()
        return _cached_export(path.resolve())
    if path.exists():
        raise ModelLoadError(
            f"{path}: not a directory (expected a fastembed_ext bundle or a "
            "sentence-transformers / Hugging Face model folder)"
        )
    if _looks_like_path(text):
        raise ModelLoadError(f"{path}: no such file or directory")
    return _cached_export(_download(text), source=text)


def _looks_like_path(text: str) -> bool:
    if text.startswith(("/", ".", "~")) or (os.altsep and os.altsep in text):
        return True
    if not _HUB_ID.match(text):
        return True
    if os.sep in text:
        # "org/name" is a hub id unless its first part exists here (then it is a missing path).
        return Path(text.split(os.sep, 1)[0]).exists()
    return False


def _download(repo_id: str) -> Path:
    advice = "Pass a local model folder or a bundle made by `fastembed-ext export` instead."
    if _env_true("HF_HUB_OFFLINE") or _env_true("TRANSFORMERS_OFFLINE"):
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be downloaded "
            f"(no network: HF_HUB_OFFLINE is set). {advice}"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be downloaded "
            f"(huggingface_hub is not installed). {advice}"
        ) from exc
    try:
        return Path(snapshot_download(repo_id)).resolve()
    except Exception as exc:  # noqa: BLE001 - any failure of the hub means the same to the user
        raise ModelLoadError(
            f"{repo_id!r} is not a local path and could not be downloaded "
            f"(no network or no such model: {type(exc).__name__}: {exc}). {advice}"
        ) from exc


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def cache_dir() -> Path:
    """Where exported checkpoints are kept: ``$FASTEMBED_EXT_CACHE``, else
    ``$XDG_CACHE_HOME/fastembed_ext``, else ``~/.cache/fastembed_ext``."""
    env = os.environ.get("FASTEMBED_EXT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastembed_ext"


def cache_key(src: Path) -> str:
    """Name of the cached bundle of `src`: its folder name plus a hash of the export revision, its
    absolute path and the relative path, size and mtime of every file in it, so an edited
    checkpoint (or a newer exporter) exports anew."""
    from .export import EXPORT_REVISION  # read at call time: the revision decides the key

    digest = hashlib.sha256(f"{EXPORT_REVISION}\0{src}".encode())
    for root, dirs, files in os.walk(src, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            file = Path(root, name)
            try:
                st = file.stat()
            except OSError:
                continue
            digest.update(f"\0{file.relative_to(src)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", src.name) or "model"
    return f"{safe}-{digest.hexdigest()[:16]}"


def _cached_export(src: Path, source: str | None = None) -> Path:
    from .export import _export, export

    bundles = cache_dir() / "exports"
    dst = bundles / cache_key(src)
    if (dst / MANIFEST_FILE).is_file():
        return dst
    try:
        bundles.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"{bundles}: cannot create the export cache: {exc}") from exc
    with _file_lock(bundles / f"{dst.name}.lock"):
        if not (dst / MANIFEST_FILE).is_file():  # another process may have finished meanwhile
            _remove_leftovers(dst)
            if source is None:
                export(src, dst)
            else:  # a hub download: the manifest names the hub id, not the snapshot folder
                _export(src, dst.absolute(), source)
            _remove_superseded(dst)
    return dst


def _remove_leftovers(dst: Path) -> None:
    """Remove what an export into `dst` killed midway left behind. Only the holder of `dst`'s lock
    writes these, so whatever is there now belongs to a process that is gone."""
    for pattern in (f".{dst.name}.tmp-*", f".{dst.name}.old-*"):
        for leftover in dst.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _remove_superseded(dst: Path) -> None:
    """Remove the cache's other exports of the source just exported into `dst`: made by an older
    exporter or from the checkpoint's files before an edit, no key will ever name them again, and
    at up to gigabytes each they would otherwise pile up with every upgrade.

    Each one is renamed away before it is deleted, so no reader sees half a bundle; a process that
    has already loaded one keeps working (the model and tokenizer are read into memory)."""
    from .checkpoint import read_json_object
    from .export import move_aside

    source = read_json_object(dst / MANIFEST_FILE).get("source")
    if not source:  # every manifest names its source; without one, nothing can be matched to it
        return
    for entry in dst.parent.iterdir():
        if entry == dst or entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            if read_json_object(entry / MANIFEST_FILE).get("source") != source:
                continue
            trash = move_aside(entry)
        except (ModelLoadError, OSError):
            continue  # not a finished bundle (maybe an export in progress), or already removed
        shutil.rmtree(trash, ignore_errors=True)
        with contextlib.suppress(OSError):
            (dst.parent / f"{entry.name}.lock").unlink()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
