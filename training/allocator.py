"""Training on the CPU under glibc's allocator spends about a fifth of its time in the kernel,
mapping and unmapping each step's large buffers; with tcmalloc preloaded that time goes, and a
character-model step took 5.5 s instead of 6.9 s (docs/MODELS.md). `python -m training`
therefore starts again with tcmalloc preloaded where the system has it (Debian:
libtcmalloc-minimal4), as `make serve` runs the service. A caller who sets LD_PRELOAD, even to
nothing, is left as it is."""

from __future__ import annotations

import os
import sys
from pathlib import Path

TCMALLOC_PATTERNS = ("/usr/lib/*/libtcmalloc_minimal.so.4", "/usr/lib/libtcmalloc_minimal.so.4")


def find_tcmalloc() -> str | None:
    """The system's tcmalloc library, or None."""
    for pattern in TCMALLOC_PATTERNS:
        found = sorted(Path("/").glob(pattern.lstrip("/")))
        if found:
            return str(found[0])
    return None


def loaded_allocator() -> str:
    """'tcmalloc' when this process runs on it, else 'system' (recorded in the model card)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "system"
    return "tcmalloc" if "libtcmalloc" in maps else "system"


def restart_with_tcmalloc(argv: list[str]) -> None:
    """Replace this process by `python -m training argv` with tcmalloc preloaded; return
    without doing anything off Linux, without the library, or when LD_PRELOAD is already set."""
    if not sys.platform.startswith("linux") or "LD_PRELOAD" in os.environ:
        return
    library = find_tcmalloc()
    if library is None:
        return
    os.execve(
        sys.executable,
        [sys.executable, "-m", "training", *argv],
        {**os.environ, "LD_PRELOAD": library},
    )
