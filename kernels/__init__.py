"""Compiled hot path: numba kernels over preallocated numpy arrays. Imports only numpy, numba and itself.

numba's disk cache does not notice edits in other modules and freezes globals (a kernel compiled against an
older dtypes.py would write past a table that has since shrunk), so the cache directory is keyed on a hash of
this package's sources: any edit here starts a fresh cache. numba reads NUMBA_CACHE_DIR once, when it is
first imported, which may be before this package: the directory is set on numba's config as well.
"""
import hashlib
import os
import pathlib

_here = pathlib.Path(__file__).parent
_digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(_here.glob("*.py")))).hexdigest()[:16]
CACHE_DIR = str(pathlib.Path(os.environ.get("ORCHESTRATOR_CACHE_ROOT", _here.parent / ".numba_cache")) / _digest)
os.environ["NUMBA_CACHE_DIR"] = CACHE_DIR

from numba.core import config as _numba_config  # noqa: E402  (after the environment is set)

_numba_config.CACHE_DIR = CACHE_DIR
