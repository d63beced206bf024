"""The server's copy of the library (fastembed_ext.pg.library), without a server: what it holds
and which files it may share with the environment by hard link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import fastembed_ext
from fastembed_ext.pg import library


def test_it_holds_the_package_numpy_and_libtorch_cpu_only():
    files = library.library_files()
    assert any(rel.startswith("fastembed_ext/_native") for rel in files)
    assert "fastembed_ext/pg/sql/api.sql" in files and "fastembed_ext/pg/backend/session.py" in files
    assert any(rel.startswith("numpy/") for rel in files)
    torch = sorted(rel for rel in files if rel.startswith(("torch/", "nvidia/")))
    assert "torch/lib/libtorch_cpu.so" in torch
    assert not any("cuda.so" in rel or rel.startswith("torch/") and not rel.startswith("torch/lib/") for rel in torch)
    assert not any("__pycache__" in rel or rel.endswith(".pyc") for rel in files)


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_only_files_no_one_else_can_write_are_linked(tmp_path: Path):
    mine = tmp_path / "mine.so"
    mine.write_bytes(b"x")
    os.chmod(mine, 0o644)
    assert library._linkable(mine)
    theirs = tmp_path / "theirs.so"
    theirs.write_bytes(b"x")
    os.chown(theirs, 65534, 65534)  # a user's virtualenv, installed with sudo
    assert not library._linkable(theirs)
    shared = tmp_path / "shared.so"
    shared.write_bytes(b"x")
    os.chmod(shared, 0o664)
    assert not library._linkable(shared)
    private = tmp_path / "private.so"
    private.write_bytes(b"x")
    os.chmod(private, 0o600)  # the server could not read a link to it
    assert not library._linkable(private)


def test_install_is_atomic_and_idempotent(tmp_path: Path):
    first = library.install_library(tmp_path / "root")
    assert first.changed and first.path == tmp_path / "root" / fastembed_ext.__version__
    assert (first.path / library.MANIFEST).is_file()
    again = library.install_library(tmp_path / "root")
    assert not again.changed
    assert not [p for p in (tmp_path / "root").iterdir() if p.name.startswith(".")]  # no leftovers
