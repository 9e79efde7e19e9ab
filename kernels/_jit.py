"""The one decorator policy for compiled code.

`kernel(signature)` for public kernels: an explicit signature turns a wrong dtype into a TypeError instead of
a silent recompile. `helper` for small functions called only from kernels (inlined by LLVM).
`error_model="numpy"` keeps division by zero a NaN/inf instead of an exception in the hot path.
"""
from numba import njit

_POLICY = dict(cache=True, nogil=True, error_model="numpy", boundscheck=None)


def kernel(signature):
    return njit(signature, **_POLICY)


def helper(fn):
    return njit(inline="never", **_POLICY)(fn)


def entry_point(dispatcher):
    """The compiled C entry of a kernel with one signature: skips the dispatcher's type matching (~200 ns)."""
    return dispatcher.overloads[dispatcher.signatures[0]].entry_point
