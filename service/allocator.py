"""Memory the allocator holds free, given back to the system."""

from __future__ import annotations

import ctypes


def release_free_memory() -> None:
    """Return the memory the allocator holds free to the system: tcmalloc's (`make serve` and
    the image preload it) or glibc's. After the checkpoints are read into shared memory the HTTP
    process held about 80 MiB it no longer used (the shipped three); an engine, what its warm-ups
    allocated. Called once each, after starting: under load the allocator keeps what it reuses."""
    process = ctypes.CDLL(None)
    if hasattr(process, "MallocExtension_ReleaseFreeMemory"):  # tcmalloc, when preloaded
        process.MallocExtension_ReleaseFreeMemory()
    elif hasattr(process, "malloc_trim"):  # glibc
        process.malloc_trim(0)
