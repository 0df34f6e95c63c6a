"""Resumable training checkpoints, written atomically.

One file holds everything a run needs to continue exactly where it stopped: model, optimiser, scheduler,
AMP scaler, iteration, the training config and the random states (Python, NumPy, torch CPU and CUDA).
It is written to a temporary file in the same folder and moved into place, so a run killed while saving
leaves the previous checkpoint intact. Files are read with ``torch.load(weights_only=True)``: a checkpoint
cannot run code. Final weights are exported separately in our safetensors format (``save_weights``).
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from m2a_core.checkpoint import atomic_write
from m2a_core.errors import CheckpointError

LAST = "last_checkpoint.pt"


def rng_state() -> dict:
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "python_version": random.getstate()[0],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    internal = state["python"]
    gauss = None if internal[-1] == -1 else internal[-1]
    random.setstate((state["python_version"], tuple(int(v) for v in internal[:-1]), gauss))
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler, scaler, iteration: int, config: dict, seconds: float = 0.0) -> None:
    """Save the state after ``iteration`` completed iterations; ``seconds``: the wall time they took, summed over
    resumed runs (what the schedule up to here costs, without the work an interrupted run lost)."""
    state = {
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else {},
        "iteration": int(iteration),
        "seconds": float(seconds),
        "config": config,
        "rng": rng_state(),
    }
    # The optimizer groups carry parameter names for readability; keep them out of the file.
    for group in state["optimizer"]["param_groups"]:
        group.pop("names", None)
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"training checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is a bad file for the user
        raise CheckpointError(f"cannot read training checkpoint {path}: {exc}") from None
    missing = {"model", "optimizer", "scheduler", "iteration", "rng"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise CheckpointError(f"{path} is not an m2a training checkpoint (missing {sorted(missing)})")
    return state


def restore(state: dict, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler) -> int:
    """Load everything back; returns the number of completed iterations."""
    model.load_state_dict(state["model"])
    names = [g.get("names") for g in optimizer.param_groups]
    optimizer.load_state_dict(state["optimizer"])
    for group, group_names in zip(optimizer.param_groups, names, strict=True):
        if group_names is not None:
            group["names"] = group_names
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return int(state["iteration"])
