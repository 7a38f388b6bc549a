"""The trainer's state as one registry of stateful parts, saved and restored by one loop.

Every part has ``state_dict()`` and ``load_state_dict(d)`` (torch modules, optimizers and
the grad scaler already do; the loader, the weight average, the progress counters and
the RNG below do too). ``TrainState.state_dict`` saves them all by name, and
``load_state_dict`` restores them in the order they were registered (as torchtitan's
checkpointer does), so adding a part to training is one ``register`` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import torch


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


class TrainState:
    def __init__(self):
        self._parts: dict[str, Stateful] = {}
        self._optional: set[str] = set()

    def register(self, name: str, part: Stateful, optional: bool = False) -> None:
        """optional: a checkpoint may lack it (a part switched on at a resume)."""
        if name in self._parts:
            raise ValueError(f"state part {name!r} registered twice")
        self._parts[name] = part
        if optional:
            self._optional.add(name)

    @property
    def names(self) -> list[str]:
        return list(self._parts)

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self._parts.items()}

    def load_state_dict(self, saved: dict[str, Any], where: str, skip: tuple[str, ...] = ()) -> list[str]:
        """Restore every registered part from ``saved`` but those in ``skip``; returns the
        optional parts it lacked. A missing required part is a damaged or foreign checkpoint."""
        missing = []
        for name, part in self._parts.items():
            if name in skip:
                continue
            if name in saved:
                part.load_state_dict(saved[name])
            elif name in self._optional:
                missing.append(name)
            else:
                from pipeline.errors import DataError

                raise DataError(f"{where}: checkpoint lacks the state of {name!r}")
        return missing


@dataclass
class Progress:
    """The loop's counters: generator updates done, and the best fidelity score so far."""

    step: int = 0
    best_score: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict:
        return {"step": self.step, "best_score": self.best_score, "best_step": self.best_step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.best_score, self.best_step = state.get("best_score"), state.get("best_step")


class RNGState:
    """torch's global generators (CPU, and CUDA where present): whatever draws from them
    after a resume draws what the uninterrupted run would have."""

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
