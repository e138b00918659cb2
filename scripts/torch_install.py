"""Install torch into the running interpreter's environment, choosing the build for this machine:
the CPU build where no NVIDIA GPU is found, the CUDA build where one is (`make install` runs it).

    python scripts/torch_install.py --spec torch==2.13.0 [--build auto|cpu|cuda] [--index-url URL]

On Linux, PyPI's torch is the CUDA build (torch plus about 4 GB of NVIDIA wheels); the CPU build
(about 200 MB) lives on PyTorch's own CPU wheel index. Only torch itself is installed here
(`--no-deps`); its small dependencies come from the default index with the project's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BUILDS = ("auto", "cpu", "cuda")
NVIDIA_PROC = Path("/proc/driver/nvidia/version")  # present when the NVIDIA driver is loaded


@dataclass(frozen=True)
class Choice:
    build: str  # "cpu" or "cuda"
    reason: str


@dataclass(frozen=True)
class Attempt:
    source: str  # said to the user
    pip_args: tuple[str, ...]


def nvidia_gpu(
    proc_file: Path = NVIDIA_PROC,
    which: Callable[[str], str | None] = shutil.which,
    run: Callable[[list[str]], str] | None = None,
) -> str | None:
    """Where an NVIDIA GPU was seen (the driver's /proc file, or a GPU listed by `nvidia-smi -L`),
    or None."""
    if proc_file.exists():
        return str(proc_file)
    smi = which("nvidia-smi")
    if smi is None:
        return None
    try:
        listing = (run or _output)([smi, "-L"])
    except (OSError, subprocess.SubprocessError):
        return None
    return (
        "nvidia-smi -L" if any(line.startswith("GPU ") for line in listing.splitlines()) else None
    )


def _output(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=20, check=True).stdout


def choose(requested: str, system: str, gpu: str | None) -> Choice:
    """The build to install: `requested` (TORCH_BUILD) unless it is `auto`, then by the GPU."""
    if requested not in BUILDS:
        raise ValueError(f"TORCH_BUILD is {requested!r}; use one of {', '.join(BUILDS)}")
    if requested == "cuda" and system == "Darwin":
        raise ValueError("TORCH_BUILD=cuda: there is no CUDA build of torch for macOS")
    if requested != "auto":
        return Choice(requested, f"TORCH_BUILD={requested}")
    if gpu is not None and system != "Darwin":
        return Choice("cuda", f"an NVIDIA GPU was found ({gpu}); TORCH_BUILD=cpu overrides")
    return Choice("cpu", "no NVIDIA GPU found; TORCH_BUILD=cuda overrides")


def attempts(choice: Choice, system: str, index_url: str = "") -> list[Attempt]:
    """Where to get the wheel, in order; a later source is tried only if the one before failed."""
    if index_url:
        return [
            Attempt(f"the index TORCH_INDEX_URL names ({index_url})", ("--index-url", index_url))
        ]
    if choice.build == "cuda" or system != "Linux":
        # PyPI's Linux wheel is the CUDA build; its macOS and Windows wheels are the CPU build
        return [Attempt("the default index (PyPI)", ())]
    return [
        Attempt(f"PyTorch's CPU wheel index ({CPU_INDEX})", ("--index-url", CPU_INDEX)),
        Attempt("the default index (PyPI or pip's configuration)", ()),
    ]


def build_of(version: str, requires: Sequence[str]) -> str:
    """The build of an installed torch, from its version's local label and its requirements."""
    label = version.partition("+")[2]
    if label.startswith("rocm"):
        return "rocm"
    if label.startswith("cu") or any(r.startswith(("nvidia-", "cuda-toolkit")) for r in requires):
        return "cuda"
    return "cpu"


def installed() -> tuple[str, str] | None:
    """(version, build) of the torch installed here, or None."""
    try:
        dist = importlib.metadata.distribution("torch")
    except importlib.metadata.PackageNotFoundError:
        return None
    return dist.version, build_of(dist.version, dist.requires or [])


def pip_install(spec: str, attempt: Attempt, reinstall: bool) -> bool:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", spec]
    command += [*attempt.pip_args, *(["--force-reinstall"] if reinstall else [])]
    return subprocess.run(command).returncode == 0


def say(message: str, error: bool = False) -> None:
    # flushed: the choice shows before pip's download, also when the output is a file or a pipe
    print(f"torch: {message}", file=sys.stderr if error else sys.stdout, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="torch", help="pip requirement (default: torch)")
    parser.add_argument("--build", default="auto", help="auto (default), cpu or cuda")
    parser.add_argument(
        "--index-url", default="", help="a wheel index to use instead (no fallback)"
    )
    args = parser.parse_args(argv)
    system = platform.system()
    try:
        choice = choose(args.build.strip().lower() or "auto", system, nvidia_gpu())
    except ValueError as error:
        say(str(error), error=True)
        return 2
    say(f"the {choice.build.upper()} build ({choice.reason})")
    before = installed()
    reinstall = before is not None and before[1] != choice.build and not args.index_url
    sources = attempts(choice, system, args.index_url)
    for number, attempt in enumerate(sources):
        say(f"installing {args.spec} from {attempt.source}")
        if pip_install(args.spec, attempt, reinstall):
            return _report(choice)
        if number + 1 < len(sources):
            say(f"{attempt.source} could not be used; trying {sources[number + 1].source}")
    say(f"{args.spec} could not be installed from {sources[-1].source}", error=True)
    return 1


def _report(choice: Choice) -> int:
    after = installed()
    if after is None:
        say("pip finished but torch is not installed", error=True)
        return 1
    version, build = after
    say(f"installed torch {version}, the {build.upper()} build")
    if build != choice.build:
        say(
            f"warning: the {choice.build.upper()} build was wanted but the sources reached gave "
            f"the {build.upper()} one; set TORCH_INDEX_URL to an index with the wanted build and "
            "run `make clean install`",
            error=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
