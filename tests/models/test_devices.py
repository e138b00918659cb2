"""One device resolution for training and the service: names it accepts, and a clear error."""

from __future__ import annotations

import pytest
import torch

from models.devices import DeviceError, resolve_device


def test_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "tpu:0", "", "cuda:x", "meta"])
def test_a_name_that_is_no_device_is_refused_with_the_accepted_names(name: str) -> None:
    with pytest.raises(DeviceError, match=f"device {name!r} is not one of auto, cpu, cuda, cuda:N"):
        resolve_device(name)


def test_a_cuda_device_this_machine_lacks_is_refused() -> None:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = f"cuda:{count}"
    expected = "no CUDA device is available" if count == 0 else f"only {count} CUDA devices"
    with pytest.raises(DeviceError, match=expected):
        resolve_device(name)
    assert issubclass(DeviceError, ValueError)
