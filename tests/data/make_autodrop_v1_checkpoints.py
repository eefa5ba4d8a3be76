"""Writes ``autodrop_v1_<mode>.pt``: AutoDrop checkpoints in the state_dict format of lrpilot 0.x before the
measurement / test / action split (issue 15), with what that code produced after resuming from them.

Run once with the code of that format (the tree of the commit that added these files, the last before the
split); the files are committed, so tests/test_autodrop_checkpoint_compat.py checks that today's AutoDrop loads
them and continues as the old code did.

    python tests/data/make_autodrop_v1_checkpoints.py
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from lrpilot import AutoDrop

HERE = Path(__file__).parent
OPTIONS = {
    "trend": {"threshold": 10.0, "rise_threshold": -10.0, "window": 6},
    "code": {"threshold": 5.0, "extra_epochs": 2},
    "uai": {"interval": 3, "threshold": 50.0, "min_buffer": 3, "m": 2},
}


def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2)).double()
    return model, torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9)


def train(model, optimizer, scheduler, epochs: int, seed: int, steps: int = 4) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for _ in range(steps):
            x = torch.randn(8, 4, generator=g, dtype=torch.float64)
            y = torch.randn(8, 2, generator=g, dtype=torch.float64)
            loss = ((model(x) - y) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()


def half_epoch(model, optimizer, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(2):
        x = torch.randn(8, 4, generator=g, dtype=torch.float64)
        loss = (model(x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def main() -> None:
    torch.set_num_threads(1)
    for mode, options in OPTIONS.items():
        model, opt = model_and_optimizer()
        sched = AutoDrop(opt, mode, **options)
        train(model, opt, sched, 7, seed=1)
        half_epoch(model, opt, seed=2)  # mid-epoch: the interval's running sum is part of the state
        # deep copies: state_dict() shares the live tensors, which the continuation below changes in place
        checkpoint = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict(),
                                    "autodrop": sched.state_dict(), "mode": mode, "options": options})
        train(model, opt, sched, 12, seed=3)
        checkpoint["after"] = {"omega_history": sched.omega_history, "drop_epochs": sched.drop_epochs,
                               "saturation_epochs": sched.saturation_epochs, "lrs": sched.get_last_lr(),
                               "params": [p.detach().clone() for p in model.parameters()]}
        assert sched.drops, f"{mode}: the scenario needs a drop after the checkpoint"
        torch.save(checkpoint, HERE / f"autodrop_v1_{mode}.pt")
        print(mode, sched.drop_epochs, sched.saturation_epochs)


if __name__ == "__main__":
    main()
