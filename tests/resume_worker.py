"""Helper process for tests/test_resume_new_process.py: train, checkpoint mid-epoch, or resume and finish.

    python tests/resume_worker.py METHOD[,METHOD...] TOTAL_STEPS DIR PHASE [--stop-at K]

PHASE: "full" (train TOTAL steps, write DIR/METHOD.full.pt), "stop" (checkpoint before step K to
DIR/METHOD.ckpt.pt and exit), "resume" (load that checkpoint, finish, write DIR/METHOD.resumed.pt).
One process handles every METHOD so the test pays the interpreter start-up three times, not fifteen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import lrpilot

STEPS_PER_EPOCH = 5


def build(method: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))
    sched = None
    if method == "autodrop":
        opt = torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9, weight_decay=5e-4)
        sched = lrpilot.AutoDrop(opt, threshold=10.0, rise_threshold=-10.0, window=6, extra_epochs=2,
                                 weight_average=True)
    else:
        cls = getattr(lrpilot, method)
        opt = cls(model.parameters(), lr=1e-2, steps_per_epoch=STEPS_PER_EPOCH)
    return model, opt, sched


def batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)


def run(method: str, total: int, out: Path, phase: str, stop_at: int | None) -> None:
    model, opt, sched = build(method)
    start = 0
    ckpt_path = out / f"{method}.ckpt.pt"
    if phase == "resume":
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        if sched is not None:
            sched.load_state_dict(ckpt["sched"])
        start = ckpt["step"]
    for step in range(start, total):
        if phase == "stop" and step == stop_at:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                        "sched": sched.state_dict() if sched is not None else None}, ckpt_path)
            return
        x, y = batch(step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if sched is not None and (step + 1) % STEPS_PER_EPOCH == 0:
            sched.step()
    torch.save({"params": [p.detach() for p in model.parameters()],
                "drops": sched.drop_epochs if sched is not None else None,
                "epoch": getattr(opt, "epoch", None)}, out / f"{method}.{phase}.pt")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("methods")
    parser.add_argument("total", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("phase", choices=["full", "stop", "resume"])
    parser.add_argument("--stop-at", type=int)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for method in args.methods.split(","):
        run(method, args.total, args.out, args.phase, args.stop_at)


if __name__ == "__main__":
    main()
