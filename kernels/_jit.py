"""The one decorator policy for compiled code.

- `kernel(signature)`: a public kernel, callable from Python. The explicit signature turns a wrong dtype into a
  TypeError instead of a silent recompile.
- `helper`: a function called only from compiled code, compiled on its own and called (numba does not inline it;
  LLVM may). For small leaf functions over a few records or arrays.
- `inline`: inlined into its caller at numba's IR level. For the stages and steps that take the whole `Regions`
  tuple of views (kernels/arena.py): as a real call, its ~23 arrays would be passed as some 170 scalars.
The GIL is kept: releasing it (`nogil`) costs ~40 ns a call, a fifth of an empty batch, and the engine runs its
batches on one thread. `error_model="numpy"` keeps division by zero a NaN/inf instead of an exception in the hot path.
`_nrt=False` compiles without numba's runtime: no allocation is possible (an `np.empty` in a kernel is a
compile error, so "no allocation on the hot path" is proven by the compiler, not hoped for), and array views
carry no reference counts.
"""
from numba import njit

_POLICY = dict(cache=True, error_model="numpy", boundscheck=None, _nrt=False)


def kernel(signature):
    return njit(signature, **_POLICY)


def helper(fn):
    return njit(inline="never", **_POLICY)(fn)


def inline(fn):
    return njit(inline="always", **_POLICY)(fn)


def generated_inline(fn):
    """`inline` for a function written out at import (it has no source file to key a disk cache on): it is only
    ever inlined into cached kernels, never compiled on its own."""
    return njit(inline="always", **{**_POLICY, "cache": False})(fn)


def entry_point(dispatcher):
    """The compiled C entry of a kernel with one signature: skips the dispatcher's type matching (~200 ns)."""
    return dispatcher.overloads[dispatcher.signatures[0]].entry_point
