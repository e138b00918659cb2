"""Recurrent building blocks shared by the architectures: cell choice, running a batch packed
(inference) or padded (training) with identical results on real positions, and state helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal, TypeAlias

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

CellType = Literal["lstm", "gru", "rnn"]
# torch's fused multi-layer modules (cuDNN on CUDA, a C++ loop on CPU), not cells stepped in Python
CELLS: dict[str, Callable[..., nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# LSTM state is (h, c), each (num_layers, B, H); GRU and RNN state is h alone.
State: TypeAlias = "torch.Tensor | tuple[torch.Tensor, torch.Tensor]"


@contextmanager
def without_onednn() -> Iterator[None]:
    """PyTorch's own CPU kernels for a recurrent cell instead of oneDNN's, for one time step.
    Measured on the shipped models (1 torch thread): for one time step oneDNN's took 1.7-7x as long
    at batch 1 to 32; from 32 steps on it is the faster one (docs/BENCHMARKS.md). The switch is
    the process's: use it where one thread computes (an engine)."""
    mkldnn: Any = torch.backends.mkldnn
    enabled = mkldnn.enabled
    mkldnn.enabled = False
    try:
        yield
    finally:
        mkldnn.enabled = enabled


def make_rnn(
    cell: str, input_dim: int, hidden_dim: int, num_layers: int = 1, dropout: float = 0.0
) -> nn.RNNBase:
    """One unidirectional, batch-first recurrent module of the named cell type."""
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    return CELLS[cell](
        input_dim,
        hidden_dim,
        num_layers=num_layers,
        batch_first=True,  # (B, T, D) everywhere in this project
        # torch applies this dropout between layers only, and warns when there is no second layer
        dropout=dropout if num_layers > 1 else 0.0,
    )


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of (B, T, ...) over its first `lengths[b]` positions; padding stays last.

    Running a forward-direction RNN over the result is exactly the backward direction of the real
    tokens, because padding follows every real position and so never reaches them.
    """
    batch, steps = x.shape[0], x.shape[1]
    positions = torch.arange(steps, device=x.device).expand(batch, steps)  # (B, T)
    lengths = lengths.to(x.device).unsqueeze(1)  # (B, 1)
    # real position t reads from len-1-t; a padding position reads from itself
    index = torch.where(positions < lengths, lengths - 1 - positions, positions)  # (B, T)
    # whole feature rows of the flattened (B * T, ...) batch: copying rows is ~8x faster on the
    # CPU than gathering every element through an index expanded to x's shape
    rows = index + torch.arange(batch, device=x.device).unsqueeze(1) * steps  # (B, T)
    flat = x.reshape(batch * steps, *x.shape[2:])
    return flat.index_select(0, rows.reshape(-1)).view_as(x)  # each row reversed within its length


def run_rnn(
    rnn: nn.RNNBase,
    x: torch.Tensor,
    lengths: torch.Tensor | None,
    state: State | None = None,
    packed: bool = True,
) -> tuple[torch.Tensor, State]:
    """Run `rnn` over (B, T, D) inputs whose rows have `lengths` real positions.

    packed=True packs the batch, so padding costs no compute and the returned state is the state
    after each row's last real position. packed=False runs the padded batch (faster backward on
    CPU); outputs at real positions are identical, but the returned state has read the padding.
    """
    if lengths is None or not packed:
        output, new_state = rnn(x, state)  # (B, T, H), state after position T-1 of every row
        return output, new_state
    # packing wants lengths on the CPU (it sorts them there); enforce_sorted=False lets rows come
    # in any order, torch sorts and unsorts them (and the state) itself
    packed_input = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    packed_output, new_state = rnn(packed_input, state)
    # total_length keeps T even when the longest row is shorter than the padded batch
    output, _ = pad_packed_sequence(packed_output, batch_first=True, total_length=x.shape[1])
    return output, new_state  # (B, T, H) with zeros at padding, state after each row's end


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) boolean mask, True at real positions."""
    # (1, T) positions against (B, 1) lengths broadcast to (B, T)
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def zero_state(
    cell: str, num_layers: int, hidden_dim: int, batch: int, like: torch.Tensor
) -> State:
    """The state a fresh sequence starts from: zeros (L, B, H) on `like`'s device and dtype,
    a pair of them for an LSTM (h and c)."""
    zeros = torch.zeros(num_layers, batch, hidden_dim, device=like.device, dtype=like.dtype)
    return (zeros, zeros.clone()) if cell == "lstm" else zeros


def select_state(state: State, index: torch.Tensor) -> State:
    """Rows `index` of a batched state (batch is dim 1: (L, B, H) -> (L, len(index), H))."""
    if isinstance(state, tuple):
        return (state[0][:, index], state[1][:, index])
    return state[:, index]


def concat_states(states: list[State]) -> State:
    """Join per-sequence states along the batch dimension: (L, B_i, H) each -> (L, sum B_i, H)."""
    pairs = [s for s in states if isinstance(s, tuple)]
    if pairs:
        return (torch.cat([h for h, _ in pairs], dim=1), torch.cat([c for _, c in pairs], dim=1))
    return torch.cat([s for s in states if isinstance(s, torch.Tensor)], dim=1)


def detach_state(state: State) -> State:
    """Cut the graph behind a carried state (truncated backpropagation through time): the values
    carry over to the next window, the gradient stops here, so memory stays one window deep."""
    if isinstance(state, tuple):
        return (state[0].detach(), state[1].detach())
    return state.detach()
