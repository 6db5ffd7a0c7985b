"""Arrays that every rank of a job on one machine maps: the exchange array of a sharded update
and the optimizer state it updates (compiler/sharded_step.py).

Rank 0 creates a file under /dev/shm with a fresh random name (O_EXCL, mode 0600: no other
user can read it or put one in its place) and reserves its pages (posix_fallocate: a full
/dev/shm is an OSError here, not a SIGBUS at the first write in a kernel); the other ranks
open it by that name and check that it is this user's. Once every rank has it mapped, rank 0
removes the name, so a job that dies leaves nothing behind. Each array holds its mapping
(numpy keeps the mmap alive), so no view can outlive the memory it reads.
"""

from __future__ import annotations

import mmap
import os
import secrets
import tempfile

import numpy as np


def shared_zeros(comm, shape: tuple, dtype) -> np.ndarray:
    """A zero array of `shape` and `dtype` in memory that every rank of `comm` (all on one
    machine) maps; collective. Raises OSError on every rank when any rank cannot create or
    map it."""
    dtype = np.dtype(dtype)
    nbytes = max(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize, 1)
    rank = comm.Get_rank()
    path, error = None, None
    if rank == 0:
        path, error = _create(nbytes)
    path, error = comm.bcast((path, error), root=0)
    mapping = None
    if error is None:
        try:
            mapping = _map(path, nbytes)
        except OSError as exc:
            error = f"rank {rank} could not map {path}: {exc}"
    errors = [e for e in comm.allgather(error) if e is not None]
    if rank == 0 and path is not None:
        _remove(path)  # every rank has mapped it (or failed): the name is no longer needed
    if errors:
        raise OSError(f"jitgrad.distributed: no memory shared by the ranks: {errors[0]}")
    return np.frombuffer(mapping, dtype, count=nbytes // dtype.itemsize).reshape(shape)


def _create(nbytes: int) -> tuple[str | None, str | None]:
    """(path, None) of a new file of `nbytes` reserved bytes, or (path or None, the error)."""
    directory = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    path = os.path.join(directory, f"jitgrad-{os.getpid()}-{secrets.token_hex(8)}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return None, f"could not create {path}: {exc}"
    try:
        os.posix_fallocate(fd, 0, nbytes)
    except OSError as exc:
        _remove(path)
        return None, f"could not reserve {nbytes} bytes in {directory}: {exc}"
    finally:
        os.close(fd)
    return path, None


def _map(path: str, nbytes: int) -> mmap.mmap:
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or info.st_size < nbytes:
            raise OSError(f"{path} is not the file rank 0 created (owner or size differ)")
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
