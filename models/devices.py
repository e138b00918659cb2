"""Device resolution shared by training and the service: one spelling (`auto`, `cpu`, `cuda`,
`cuda:N`) and one clear error for a device this machine does not have."""

from __future__ import annotations

import torch

DEVICE_NAMES = "auto, cpu, cuda, cuda:N"


class DeviceError(ValueError):
    """A device name that is malformed or names hardware this machine does not have."""


def resolve_device(name: str | torch.device) -> torch.device:
    """`auto` is the first CUDA device when there is one, else the CPU; anything else must be
    present. Raises DeviceError naming the device and what is available."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"device {name!r} is not one of {DEVICE_NAMES}") from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"device {name!r} is not one of {DEVICE_NAMES}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} requested but no CUDA device is available")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
    return device
