"""scripts/torch_install.py: which torch build a machine gets, and where it is fetched from."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "torch_install.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("torch_install", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["torch_install"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


ti = _load()


def _no_smi(name: str) -> str | None:
    return None


def test_the_driver_file_means_a_gpu(tmp_path: Path) -> None:
    proc = tmp_path / "version"
    proc.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15\n")
    assert ti.nvidia_gpu(proc, _no_smi) == str(proc)


def test_no_driver_file_and_no_nvidia_smi_means_no_gpu(tmp_path: Path) -> None:
    assert ti.nvidia_gpu(tmp_path / "absent", _no_smi) is None


def test_nvidia_smi_listing_a_gpu_means_a_gpu(tmp_path: Path) -> None:
    listing = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5e3c)\n"
    found = ti.nvidia_gpu(tmp_path / "absent", lambda _: "/usr/bin/nvidia-smi", lambda _: listing)
    assert found == "nvidia-smi -L"


def test_nvidia_smi_without_a_gpu_or_failing_means_no_gpu(tmp_path: Path) -> None:
    def smi(_: str) -> str:
        return "/usr/bin/nvidia-smi"

    def fails(_: list[str]) -> str:
        raise OSError("NVIDIA-SMI has failed because it couldn't communicate with the driver")

    assert ti.nvidia_gpu(tmp_path / "absent", smi, lambda _: "No devices found.\n") is None
    assert ti.nvidia_gpu(tmp_path / "absent", smi, fails) is None


def test_auto_picks_cuda_with_a_gpu_and_cpu_without() -> None:
    assert ti.choose("auto", "Linux", "/proc/driver/nvidia/version").build == "cuda"
    without = ti.choose("auto", "Linux", None)
    assert without.build == "cpu"
    assert "no NVIDIA GPU" in without.reason and "TORCH_BUILD=cuda" in without.reason
    assert ti.choose("auto", "Darwin", "nvidia-smi -L").build == "cpu"


def test_the_switch_wins_over_detection() -> None:
    assert ti.choose("cpu", "Linux", "/proc/driver/nvidia/version").build == "cpu"
    assert ti.choose("cuda", "Linux", None) == ti.Choice("cuda", "TORCH_BUILD=cuda")


@pytest.mark.parametrize(
    ("requested", "system", "message"),
    [
        ("gpu", "Linux", "TORCH_BUILD is 'gpu'; use one of auto, cpu, cuda"),
        ("cuda", "Darwin", "no CUDA build of torch for macOS"),
    ],
)
def test_a_bad_switch_is_refused(requested: str, system: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ti.choose(requested, system, None)


def test_cpu_on_linux_tries_pytorchs_cpu_index_then_the_default_one() -> None:
    sources = ti.attempts(ti.Choice("cpu", ""), "Linux")
    assert [a.pip_args for a in sources] == [("--index-url", ti.CPU_INDEX), ()]


def test_cuda_and_other_systems_use_the_default_index_only() -> None:
    assert [a.pip_args for a in ti.attempts(ti.Choice("cuda", ""), "Linux")] == [()]
    assert [a.pip_args for a in ti.attempts(ti.Choice("cpu", ""), "Darwin")] == [()]


def test_an_index_url_is_used_as_given_without_fallback() -> None:
    url = "https://download.pytorch.org/whl/cu128"
    sources = ti.attempts(ti.Choice("cpu", ""), "Linux", url)
    assert [a.pip_args for a in sources] == [("--index-url", url)]


@pytest.mark.parametrize(
    ("version", "requires", "build"),
    [
        ("2.13.0+cpu", ["filelock"], "cpu"),
        ("2.13.0", ['nvidia-cudnn-cu13==9.20.0.48; platform_system == "Linux"'], "cuda"),
        ("2.7.1+cu128", [], "cuda"),
        ("2.13.0", ['cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"'], "cuda"),
        ("2.5.1+rocm6.2", [], "rocm"),
        ("2.13.0", ["filelock", "sympy>=1.13.3"], "cpu"),
    ],  # macOS and Windows wheels
)
def test_the_build_of_an_installed_torch(version: str, requires: list[str], build: str) -> None:
    assert ti.build_of(version, requires) == build
