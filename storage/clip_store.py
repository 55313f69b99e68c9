"""The clip store: a clip's arrays as one compressed .npz file on a local folder or any fsspec URL.

Files are addressed by a path relative to the store root (what the database records), so a store can
move (or be mounted elsewhere) without rewriting rows. Encoding is deterministic (fixed zip member
times, sorted keys): the same arrays give the same bytes and so the same sha256. Local writes go to a
temporary name, are fsync'ed and renamed, so a crash never leaves a half file under the final name.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import zipfile
from collections.abc import Mapping
from pathlib import Path

import fsspec
import numpy as np
from fsspec.implementations.local import LocalFileSystem

from storage.errors import ClipCorruptError, ClipNotFoundError, ConfigError

ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # earliest zip timestamp; fixed so that encoding is deterministic
NPY_SUFFIX = ".npy"
MAX_COMPRESSION_LEVEL = 9


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_arrays(arrays: Mapping[str, np.ndarray], compression_level: int = 6) -> bytes:
    """Arrays -> .npz bytes (zip, deflate at `compression_level`), loadable with numpy.load."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + NPY_SUFFIX, date_time=ZIP_EPOCH)
            archive.writestr(
                info, member.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=compression_level
            )
    return buffer.getvalue()


def decode_arrays(data: bytes) -> dict[str, np.ndarray]:
    """.npz bytes -> arrays (never unpickles)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


class ClipStore:
    """Byte storage under a root URL; knows nothing of the database."""

    def __init__(self, root: str, fsync: bool = True) -> None:
        if not root:
            raise ConfigError("clip root is empty; set storage.clip_root or TAKEOVER_CLIP_ROOT")
        try:
            self.fs, self.root_path = fsspec.core.url_to_fs(root)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"clip root {root!r} is not a usable fsspec URL: {exc}") from None
        self.root = root
        self.fsync = fsync
        self.is_local = isinstance(self.fs, LocalFileSystem)
        self.root_path = self.root_path.rstrip("/")

    def full_path(self, relative: str) -> str:
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ClipNotFoundError(f"clip path {relative!r} escapes the clip store root")
        return f"{self.root_path}/{relative}"

    def url(self, relative: str) -> str:
        """A human-readable location of a stored file, for messages."""
        path = self.full_path(relative)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def write(self, relative: str, data: bytes) -> None:
        path = self.full_path(relative)
        parent = path.rsplit("/", 1)[0]
        if self.is_local:
            self._write_local(Path(path), data)
        else:
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.pipe_file(path, data)

    def _write_local(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                if self.fsync:
                    handle.flush()
                    os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if self.fsync:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)

    def read(self, relative: str) -> bytes:
        path = self.full_path(relative)
        try:
            return self.fs.cat_file(path)
        except FileNotFoundError:
            raise ClipNotFoundError(
                f"clip file {self.url(relative)} is missing from the clip store"
            ) from None

    def read_verified(self, relative: str, sha256: str, size_bytes: int, what: str) -> bytes:
        """The file's bytes after checking them against the recorded size and sha256."""
        data = self.read(relative)
        actual = sha256_hex(data)
        if actual != sha256 or len(data) != size_bytes:
            raise ClipCorruptError(
                f"{what} file {self.url(relative)} is corrupt: sha256 {actual[:16]}... ({len(data)} bytes) "
                f"!= recorded {sha256[:16]}... ({size_bytes} bytes); restore it from a backup or re-run "
                "its episode (`takeover db verify` checks every clip)"
            )
        return data

    def exists(self, relative: str) -> bool:
        return bool(self.fs.exists(self.full_path(relative)))

    def remove_tree(self, relative_dir: str) -> None:
        """Delete a folder and everything in it; a folder that is not there is fine."""
        path = self.full_path(relative_dir)
        try:
            if self.fs.exists(path):
                self.fs.rm(path, recursive=True)
        except FileNotFoundError:
            pass

    def list_files(self, relative_dir: str = "") -> list[str]:
        """Relative paths of every file below `relative_dir` (for checks and tests)."""
        base = self.full_path(relative_dir) if relative_dir else self.root_path
        if not self.fs.exists(base):
            return []
        prefix = self.root_path + "/"
        out = []
        for found in self.fs.find(base):
            out.append(found[len(prefix) :] if found.startswith(prefix) else found.lstrip("/"))
        return sorted(out)
