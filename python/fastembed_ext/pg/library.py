"""The server's own copy of the Python library: one directory per extension version.

PostgreSQL backends import fastembed_ext from ``<root>/<version>/`` (``fastembed_ext._load()``
adds that one directory to ``sys.path``), never from a user's virtualenv: upgrading or deleting
the virtualenv changes nothing in the databases, and no ``.pth`` file of it runs in the server.
Each extension version has its own directory, so a database still at an older version keeps its
library until ``ALTER EXTENSION ... UPDATE``.

The directory holds what ``pip install --target`` would put there for the package and its runtime
dependencies, except torch: the native module needs only libtorch's CPU libraries (and the two
CUDA runtime libraries libtorch_cpu links), which keep their places relative to site-packages,
where the module's rpath (``$ORIGIN/../torch/lib``) and theirs find each other. Files
of third-party packages are hard-linked from the environment when it is on the same file system
(pip replaces files rather than rewriting them, so a link never changes under a backend) when
only root or the installing user can write them, and copied otherwise; this package's own files
are always copied.
"""

from __future__ import annotations

import compileall
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import fastembed_ext

from .errors import PgError

DEFAULT_ROOT = Path("/usr/local/lib/fastembed_ext")
PACKAGE = "fastembed_ext"
MANIFEST = "fastembed_ext.library.json"
_SKIP_DIRS = {"__pycache__"}


@dataclass
class LibraryReport:
    path: Path
    changed: bool
    files: int
    size: int  # bytes


def _package_files() -> dict[str, Path]:
    """This package's files (from an install or from the source tree of an editable build)."""
    root = Path(fastembed_ext.__file__).resolve().parent
    files = {}
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
        for name in names:
            path = Path(directory, name)
            if not name.endswith(".pyc"):
                files[str(Path(PACKAGE) / path.relative_to(root))] = path
    return files


def _runtime_dependencies() -> list[str]:
    """The package's required distributions, without extras and without torch."""
    names = []
    for requirement in metadata.requires(PACKAGE) or []:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0]
        if name.lower() != "torch":
            names.append(name)
    return names


def _distribution_files(name: str) -> dict[str, Path]:
    dist = metadata.distribution(name)
    files = {}
    for entry in dist.files or []:
        if entry.suffix == ".pyc" or "__pycache__" in entry.parts or entry.parts[0].startswith(".."):
            continue
        path = Path(dist.locate_file(entry))
        if path.is_file():
            files[str(entry)] = path
    return files


def _torch_libraries(native: Path) -> dict[str, Path]:
    """The shared libraries of the torch wheel (and of the wheels it pulls in, such as the CUDA
    runtime that libtorch_cpu links) that the native module loads: its ldd closure, each at its
    place relative to site-packages, where their own rpaths look for each other."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise PgError("torch is not installed in this environment; the server's library copies libtorch from it")
    site = Path(spec.origin).resolve().parent.parent
    try:
        out = subprocess.run(["ldd", str(native)], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PgError(f"cannot list the libraries {native} needs (ldd): {exc}") from None
    if "not found" in out:
        raise PgError(f"{native} misses libraries in this environment:\n{out}")
    libs = {}
    for match in re.finditer(r"=>\s+(\S+)", out):
        path = Path(match.group(1)).resolve()
        if site in path.parents:
            libs[str(path.relative_to(site))] = path
    if "torch/lib/libtorch_cpu.so" not in libs:
        raise PgError(f"{native} does not load libtorch_cpu from {site}/torch/lib; is it built against this torch?")
    return libs


def library_files() -> dict[str, Path]:
    """Relative path in the library directory -> the file it comes from."""
    files = _package_files()
    native = next((p for rel, p in files.items() if Path(rel).name.startswith("_native")), None)
    if native is None:
        raise PgError(f"the native module of {PACKAGE} is missing from {Path(fastembed_ext.__file__).parent}")
    for name in _runtime_dependencies():
        files.update(_distribution_files(name))
    files.update(_torch_libraries(native))
    return files


def _digest(files: dict[str, Path]) -> str:
    h = hashlib.sha256()
    for rel, src in sorted(files.items()):
        st = src.stat()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def _linkable(src: Path) -> bool:
    """A hard link shares the file with the environment: only for files that no one but root (or
    the installing user, who owns the library anyway) can write, and that everyone can read."""
    st = src.stat()
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & 0o022 and bool(st.st_mode & 0o004)


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link and _linkable(src):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass  # another file system, or links not allowed: copy
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)


def install_library(root: Path = DEFAULT_ROOT, version: str | None = None) -> LibraryReport:
    """Fills ``<root>/<version>/`` from this environment (a no-op when it is up to date). The new
    directory is built beside the old one and renamed into place, so a backend never sees half of
    it; backends that loaded the old one keep their open files."""
    version = version or fastembed_ext.__version__
    files = library_files()
    digest = _digest(files)
    target = root / version
    size = sum(p.stat().st_size for p in files.values())
    try:
        current = json.loads((target / MANIFEST).read_text())
        if current.get("digest") == digest:
            return LibraryReport(target, False, len(files), size)
    except (OSError, ValueError):
        pass
    try:
        if not root.exists():
            root.mkdir(parents=True)
            os.chmod(root, 0o755)
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.tmp-", dir=root))
    except OSError as exc:
        raise PgError(
            f"cannot write the server's library into {root}: {exc}. Run as a user who may write "
            "there (often root), or choose a directory with --library-root."
        ) from None
    try:
        for rel, src in files.items():
            _place(src, tmp / rel, link=not rel.startswith(PACKAGE + "/"))
        # Bytecode once here, not in every backend on every start (the server's Python is this
        # minor version, which `pg install` checks): it halves a new connection's first call.
        compileall.compile_dir(str(tmp), quiet=1, workers=0)
        (tmp / MANIFEST).write_text(json.dumps({
            "version": version,
            "digest": digest,
            "source": str(Path(fastembed_ext.__file__).resolve().parent),
            "files": len(files),
        }, indent=2) + "\n")
        for directory, dirs, _ in os.walk(tmp):
            for d in dirs:
                os.chmod(Path(directory, d), 0o755)
        os.chmod(tmp, 0o755)
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{version}.old-", dir=root))
            os.rename(target, old / "library")
        try:
            os.rename(tmp, target)
        except BaseException:
            if old is not None:  # put the working library back
                os.rename(old / "library", target)
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return LibraryReport(target, True, len(files), size)
