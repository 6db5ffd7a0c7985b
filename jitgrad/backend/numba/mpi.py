"""The allreduce that compiled kernels call: MPI_Allreduce(MPI_IN_PLACE, SUM, COMM_WORLD) on a
flat gradient buffer, from inside the kernel.

Kernels are cached on disk, but MPI's handles (the communicator, datatypes and the sum op are
pointers in Open MPI) differ in every process: a kernel that embedded them could not be cached
(Numba refuses functions with "dynamic globals", which is what calling numba_mpi's functions
from a kernel amounts to). So the handles live in one small C callback per dtype, compiled by
Numba in each process when this module is imported (`numba.cfunc`, about 0.2 s) and
registered with LLVM under a fixed symbol name (`jitgrad_allreduce_sum_f32`); the cached
helpers below, and the kernels that inline them, call that symbol, which the dynamic linker
resolves whenever they are loaded. The MPI library is the one numba_mpi located (the one
mpi4py loaded).

numba_mpi's own allreduce is not used: it cannot reduce in place (MPI_IN_PLACE) and maps
float32 to no MPI type. Importing this module initialises MPI (through mpi4py): only kernels
of a distributed train step import it, and they are compiled in the process that runs them
(compiler/train_step.py), never in the compile worker.
"""

import ctypes

import numba
import numba_mpi.common
from llvmlite import binding
from mpi4py import MPI
from numba import types

_HANDLE = (
    ctypes.c_size_t if MPI._sizeof(MPI.Comm) == ctypes.sizeof(ctypes.c_void_p) else ctypes.c_int
)
_MPI_Allreduce = numba_mpi.common.libmpi.MPI_Allreduce
# Pointers as integers (the same in the C ABI): Numba types the addresses as uintp.
_MPI_Allreduce.argtypes = [
    ctypes.c_size_t,
    ctypes.c_size_t,
    ctypes.c_int,
    _HANDLE,
    _HANDLE,
    _HANDLE,
]
_MPI_Allreduce.restype = ctypes.c_int

_IN_PLACE = int(MPI.IN_PLACE)
_SUM = MPI._handleof(MPI.SUM)
_WORLD = MPI._handleof(MPI.COMM_WORLD)
_SIGNATURE = types.int32(types.uintp, types.int64)


def _callback(mpi_type):
    """A C function (address, count) -> MPI status that sums `count` elements of `mpi_type` at
    `address` over COMM_WORLD, in place."""
    datatype = MPI._handleof(mpi_type)

    @numba.cfunc(_SIGNATURE, nogil=True)
    def allreduce_sum(address, count):
        return _MPI_Allreduce(_IN_PLACE, address, count, datatype, _SUM, _WORLD)

    return allreduce_sum


# Kept alive for as long as the process: LLVM holds only their addresses.
_CALLBACKS = {"f32": _callback(MPI.FLOAT), "f64": _callback(MPI.DOUBLE)}
for _suffix, _function in _CALLBACKS.items():
    binding.add_symbol(f"jitgrad_allreduce_sum_{_suffix}", _function.address)

_sum_f32 = types.ExternalFunction("jitgrad_allreduce_sum_f32", _SIGNATURE)
_sum_f64 = types.ExternalFunction("jitgrad_allreduce_sum_f64", _SIGNATURE)


@numba.njit(cache=True, nogil=True)
def allreduce_sum_f32(flat):
    """Sum the float32 C-contiguous 1-d array `flat` over the ranks, in place."""
    if _sum_f32(flat.ctypes.data, flat.size) != 0:
        raise RuntimeError("allreduce: MPI_Allreduce failed")


@numba.njit(cache=True, nogil=True)
def allreduce_sum_f64(flat):
    """Sum the float64 C-contiguous 1-d array `flat` over the ranks, in place."""
    if _sum_f64(flat.ctypes.data, flat.size) != 0:
        raise RuntimeError("allreduce: MPI_Allreduce failed")
