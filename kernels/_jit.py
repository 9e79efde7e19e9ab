"""The one decorator policy for compiled code.

`kernel(signature)` for public kernels: an explicit signature turns a wrong dtype into a TypeError instead of
a silent recompile. `helper` for functions called only from kernels, and `inlined(kernel)` for a public
kernel that a fused kernel calls: both are inlined into their caller at numba's IR level. A real call would
pass every array argument through the runtime's reference counting (two atomic operations per array, ~5 ns
each); inlined, numba prunes those, and a fused batch costs what its work costs.
`error_model="numpy"` keeps division by zero a NaN/inf instead of an exception in the hot path.
`_nrt=False` compiles without numba's runtime: no allocation is possible (an `np.empty` in a kernel is a
compile error, so "no allocation on the hot path" is proven by the compiler, not hoped for), and array views
carry no reference counts.
"""
from numba import njit

_POLICY = dict(cache=True, nogil=True, error_model="numpy", boundscheck=None, _nrt=False)


def kernel(signature):
    return njit(signature, **_POLICY)


def helper(fn):
    return njit(inline="never", **_POLICY)(fn)


def inline(fn):
    return njit(inline="always", **_POLICY)(fn)


def inlined(dispatcher):
    """The same function as a public kernel, compiled to be inlined into a fused kernel."""
    return inline(dispatcher.py_func)


def entry_point(dispatcher):
    """The compiled C entry of a kernel with one signature: skips the dispatcher's type matching (~200 ns)."""
    return dispatcher.overloads[dispatcher.signatures[0]].entry_point
