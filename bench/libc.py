"""libc's socket calls and clock for numba-compiled bench loops (bench/peer_loop.py, bench/floor.py), through ctypes.

A compiled loop calls these as plain C functions: no Python object, no exception, ~0.1 us over the syscall itself.
Their addresses become constants of the compiled code, so such a loop cannot be cached on disk (numba compiles it
in each process: about a second). Every socket call here is non-blocking (DONTWAIT); -1 and `errno()` say why.
"""
import ctypes

import numpy as np
from numba import carray, njit

_libc = ctypes.CDLL(None, use_errno=True)


def _bind(name, argtypes, restype):
    fn = getattr(_libc, name)
    fn.argtypes, fn.restype = argtypes, restype
    return fn


_int, _ptr, _size = ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t
send = _bind("send", [_int, _ptr, _size, _int], ctypes.c_ssize_t)
recv = _bind("recv", [_int, _ptr, _size, _int], ctypes.c_ssize_t)
sendmmsg = _bind("sendmmsg", [_int, _ptr, ctypes.c_uint, _int], _int)
poll = _bind("poll", [_ptr, ctypes.c_ulong, _int], _int)      # struct pollfd {int fd; short events, revents;}
clock_gettime = _bind("clock_gettime", [_int, _ptr], _int)
errno_location = _bind("__errno_location", [], ctypes.POINTER(ctypes.c_int))

DONTWAIT = 0x40
POLLIN, POLLERR, POLLHUP = 0x1, 0x8, 0x10
EAGAIN, ECONNREFUSED = 11, 111
NS = 1_000_000_000


@njit(nogil=True)
def now(ts):
    """Wall clock ns (CLOCK_REALTIME: what time.time_ns() reads); ts is an int64[2] scratch array."""
    clock_gettime(0, ts.ctypes.data)
    return ts[0] * NS + ts[1]


@njit(nogil=True)
def errno():
    return carray(errno_location(), (1,), np.int32)[0]


@njit(nogil=True, inline="always")
def put_be64(buf, at, value):
    for b in range(8):
        buf[at + b] = (value >> (56 - 8 * b)) & 0xFF
