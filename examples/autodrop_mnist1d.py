"""Train the MNIST-1D CNN with SGD + AutoDrop and print, per epoch, the LR, the angular velocity and accuracy.

    pip install 'lrpilot[bench]'      # mnist1d builds the data set locally; nothing is downloaded
    python examples/autodrop_mnist1d.py [--epochs 60] [--lr 0.1] [--mode trend|code|uai] [--seed 0]

No tuning: the LR starts at --lr and AutoDrop decides when to drop it. Trains with the loop ``lrpilot bench``
uses (:func:`lrpilot.bench.loop.train`); each record as in ``lrpilot bench``'s results.
"""

from __future__ import annotations

import argparse

import torch

from lrpilot import AutoDrop
from lrpilot.bench.loop import train
from lrpilot.bench.methods import Built
from lrpilot.bench.tasks import TASKS


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--mode", default="trend", choices=["trend", "code", "uai"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task", default="mnist1d-cnn", choices=sorted(TASKS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def sgd_autodrop(model: torch.nn.Module) -> Built:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
        return Built(optimizer, AutoDrop(optimizer, mode=args.mode), "epoch")  # stepped once per epoch

    def show(r: dict, built: Built) -> None:
        omega = "      -" if r["omega"] is None else f"{r['omega']:7.2f}"
        print(f"{r['epoch']:5d}  {r['lr']:9.2e}  {omega}  {r['train_loss']:10.4f}  {r['test_metric']:8.4f}",
              flush=True)

    print(f"{args.task}, SGD(lr={args.lr}, momentum=0.9, weight_decay=5e-4) + AutoDrop(mode={args.mode!r})")
    print("epoch         lr    omega  train_loss  test_acc")
    run = train(TASKS[args.task], sgd_autodrop, args.epochs, args.seed, on_epoch=show)
    records, scheduler = run.result["records"], run.built.scheduler
    print(f"drops at epochs {scheduler.drop_epochs}; final LR {scheduler.get_last_lr()[0]:.2e}; "
          f"final test accuracy {records[-1]['test_metric']:.4f}")
    for event in scheduler.drops:
        print(f"  epoch {event.epoch:3d}: lr {event.old_lrs[0]:.2e} -> {event.new_lrs[0]:.2e} "
              f"(omega {event.omega:.1f} deg)")
    return records


if __name__ == "__main__":
    main()
