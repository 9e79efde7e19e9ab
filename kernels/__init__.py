"""Compiled hot path: numba kernels over preallocated numpy arrays. Imports only numpy, numba and itself.

numba's disk cache does not notice edits in other modules and freezes globals, so the cache directory is
keyed on a hash of this package's sources: any edit here starts a fresh cache.
"""
import hashlib
import os
import pathlib

_here = pathlib.Path(__file__).parent
_digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(_here.glob("*.py")))).hexdigest()[:16]
os.environ.setdefault("NUMBA_CACHE_DIR", str(_here.parent / ".numba_cache" / _digest))
