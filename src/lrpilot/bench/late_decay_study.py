"""Late LR decay on a real network: MNIST-1D, a VGG-style 1-D CNN without BN, MSE on one-hot targets.

The protocol of the authors' code (spec section 2), scaled to a CPU: a train subset small enough for the
network to interpolate, SGD momentum 0.9 at a constant large LR with a small weight decay, checkpoints along
the way, then decay branches (LR x ``factor``) from several epochs, each trained for the same number of
epochs. Measured per branch: final train loss, test loss and test accuracy, weight norm. The landscape: the
PCA plane of the large-LR trajectory plus the branch endpoints, with train and test loss on a grid.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..late_decay.branches import decay_branches, snapshot
from ..late_decay.trajectory import TrajectoryRecorder, loss_surface
from .tasks import mnist1d_data

__all__ = ["RealConfig", "mse_one_hot", "run_real_study", "vgg1d"]


@dataclass(frozen=True)
class RealConfig:
    """The real-network study's settings (ours; the authors' CIFAR-10 protocol scaled down, spec 2.1)."""

    train_size: int = 1000  # MNIST-1D train subset (first train_size // 10 of each class)
    batch_size: int = 125  # as the authors' code (8 steps per epoch here)
    lr: float = 0.6  # large: the authors' 0.1 fits this net within 50 epochs and then barely moves (docs)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 300  # the large-LR run
    decay_epochs: tuple[int, ...] = (10, 25, 50, 100, 200, 300)
    branch_epochs: int = 60
    factor: float = 0.1
    record_every: int = 2  # epochs between trajectory snapshots
    grid: int = 21  # grid points per axis of the landscape


def vgg1d() -> nn.Module:
    """3x3 convs + ReLU + max-pool, no BN (channels 32-M-64-M-64-M), then 320-128-10 (61k parameters), with the
    authors' init: conv kaiming-normal (fan_out, relu), linear N(0, 0.01), zero biases."""
    model = nn.Sequential(
        nn.Conv1d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Conv1d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
        nn.Flatten(), nn.Linear(320, 128), nn.ReLU(), nn.Linear(128, 10),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv1d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


def mse_one_hot(out: Tensor, y: Tensor) -> Tensor:
    """The authors' loss: batch mean of ``1/2 sum_k (out_k - onehot_k)^2``."""
    return 0.5 * (out - F.one_hot(y, out.shape[1]).to(out.dtype)).pow(2).sum(1).mean()


def _subset(y: Tensor, size: int) -> Tensor:
    per_class = size // 10
    idx = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in range(10)])
    return idx.sort().values


def run_real_study(cfg: RealConfig = RealConfig(), seed: int = 0, landscape: bool = True,
                   log: Any = None) -> dict[str, Any]:
    """One seed: the large-LR run (trajectory recorded), its decay branches and (optionally) the landscape.

    Returns JSON-ready data: ``main`` (per-epoch train/test metrics every 10 epochs), ``branches`` (one dict
    per decay epoch: final metrics and weight norm), and ``landscape`` (PCA plane grid of train and test loss,
    trajectory and branch-endpoint coordinates, explained variance).
    """
    x, y, x_test, y_test = mnist1d_data()
    keep = _subset(y, cfg.train_size)
    x, y = x[keep], y[keep]
    torch.manual_seed(seed)

    def build() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = vgg1d()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        return model, opt

    def batches(epoch_seed: int) -> list[Tensor]:
        order = torch.Generator().manual_seed(epoch_seed)
        return list(torch.randperm(len(x), generator=order).split(cfg.batch_size))

    def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, index: int, base: int = 0) -> None:
        for idx in batches(10_000 * seed + base + index):
            loss = mse_one_hot(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @torch.no_grad()
    def evaluate(model: nn.Module) -> dict[str, float]:
        out, out_test = model(x), model(x_test)
        return {"train_loss": float(mse_one_hot(out, y)), "train_acc": float((out.argmax(1) == y).float().mean()),
                "test_loss": float(mse_one_hot(out_test, y_test)),
                "test_acc": float((out_test.argmax(1) == y_test).float().mean())}

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model, opt = build()
    recorder = TrajectoryRecorder(model, every=cfg.record_every, max_snapshots=512)
    checkpoints, main = {}, []
    recorder.step()
    for epoch in range(1, cfg.epochs + 1):
        train_epoch(model, opt, epoch)
        recorder.step()
        if epoch in cfg.decay_epochs:
            checkpoints[epoch] = snapshot(model, opt)
        if epoch % 10 == 0 or epoch == 1:
            main.append({"epoch": epoch, **evaluate(model),
                         "weight_norm": float(torch.cat([p.detach().flatten() for p in model.parameters()]).norm())})
    recorder.record()
    if log:
        log(f"seed {seed}: large-LR run {cfg.epochs} epochs in {time.perf_counter() - t0:.0f}s; "
            f"final train loss {main[-1]['train_loss']:.2e}, test acc {main[-1]['test_acc']:.3f}")
    branches = decay_branches(checkpoints, build, lambda m, o, i: train_epoch(m, o, i, base=5_000),
                              evaluate, epochs=cfg.branch_epochs, factor=cfg.factor, keep_parameters=landscape)
    result: dict[str, Any] = {
        "seed": seed, "config": asdict(cfg), "main": main,
        "branches": [{"decay_epoch": b.decay_epoch, **b.final, "weight_norm": b.weight_norm} for b in branches],
    }
    if log:
        log(f"seed {seed}: branches " + ", ".join(
            f"E{b.decay_epoch}: test acc {b.final['test_acc']:.3f} loss {b.final['test_loss']:.4f}" for b in branches))
    if landscape:
        ends = torch.stack([b.final_parameters for b in branches])
        plane = recorder.pca(extra=ends)
        traj = plane.coordinates(recorder.snapshots).numpy()
        pts = plane.coordinates(ends.double()).numpy()
        lo, hi = traj.min(0), traj.max(0)
        lo = torch.tensor([min(lo[0], pts[:, 0].min()), min(lo[1], pts[:, 1].min())])
        hi = torch.tensor([max(hi[0], pts[:, 0].max()), max(hi[1], pts[:, 1].max())])
        pad = 0.15 * (hi - lo)
        xs = torch.linspace(float(lo[0] - pad[0]), float(hi[0] + pad[0]), cfg.grid).tolist()
        ys = torch.linspace(float(lo[1] - pad[1]), float(hi[1] + pad[1]), cfg.grid).tolist()
        with torch.no_grad():
            surface = loss_surface(model, plane, {
                "train_loss": lambda m: mse_one_hot(m(x), y), "test_loss": lambda m: mse_one_hot(m(x_test), y_test),
            }, xs, ys)
        result["landscape"] = {
            "xs": xs, "ys": ys,
            "train_loss": surface["train_loss"].tolist(), "test_loss": surface["test_loss"].tolist(),
            "trajectory": traj.tolist(), "trajectory_epochs": list(recorder.steps),
            "branch_ends": pts.tolist(), "explained": list(plane.explained),
        }
    result["seconds"] = time.perf_counter() - t0
    return result


def summarize_real(results: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Mean and sd over seeds of each branch's final metrics, per decay epoch."""
    import statistics

    rows = []
    for i, first in enumerate(results[0]["branches"]):
        row: dict[str, float] = {"decay_epoch": first["decay_epoch"]}
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "weight_norm"):
            values = [r["branches"][i][key] for r in results]
            row[key] = statistics.mean(values)
            row[key + "_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------- the CLI's study
def toy_summary(result: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready per-decay-time ranges (min/max over seeds) of a :func:`~lrpilot.late_decay.run_reproduction`."""
    out: dict[str, Any] = {}
    for run in ("main", "plain", "linear"):
        res = result[run]
        out[run] = {"decay_times": res["decay_times"], "seeds": res["seeds"],
                    **{key: res[key].tolist() for key in ("test", "dist", "norm_excess", "train", "predicted")}}
    traj = result["main"]["trajectory"]
    out["trajectory"] = {key: value.tolist() for key, value in traj.items()}
    if "hits" in result:
        out["hits"] = [{"lr": lr, "sigma": sigma, "steps": h.tolist(), "rate": r.tolist()}
                       for (lr, sigma), (h, r) in result["hits"].items()]
    return out


def plot_toy(summaries: dict[str, dict[str, Any]], path: Any) -> None:
    """Distance to the min-norm solution and test loss against decay time, per configuration, with controls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(len(summaries), 3, figsize=(15, 4 * len(summaries)), squeeze=False)
    for row, (name, summ) in enumerate(summaries.items()):
        for col, key in enumerate(("dist", "test")):
            ax = axes[row, col]
            for run, color, label in (("main", "C0", "label-noise SGD"), ("plain", "C1", "plain SGD (σ=0)"),
                                      ("linear", "C2", "linear model (γ=0)")):
                t = np.array(summ[run]["decay_times"], dtype=float)
                v = np.array(summ[run][key])
                ax.plot(t, np.median(v, 0), "o-", color=color, label=label)
                ax.fill_between(t, v.min(0), v.max(0), color=color, alpha=0.2)
            if key == "dist":
                p = np.array(summ["main"]["predicted"])
                ax.plot(t, np.median(p, 0), "k+", ms=12, label="gradient-flow endpoint s(snapshot)")
            ax.set_yscale("log")
            ax.set_xlabel("decay time (steps at the large LR)")
            ax.set_ylabel("||α - α_mn|| after the branch" if key == "dist" else "test loss ||α - α*||²")
            ax.set_title(f"config {name}: {'distance to the min-norm solution' if key == 'dist' else 'test loss'}")
            ax.legend(fontsize=8)
        ax = axes[row, 2]
        traj = summ["trajectory"]
        steps = np.array(traj["step"])
        ax.semilogy(steps, np.array(traj["gf_dist"]), color="C0", lw=0.8)
        ax.semilogy(steps, np.array(traj["train"]), color="C3", lw=0.5, alpha=0.6)
        ax.set_title(f"config {name}: large-LR run (blue: s(α_t), red: train loss)")
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_real(results: dict[str, list[dict[str, Any]]], path_landscape: Any, path_branches: Any) -> None:
    """The PCA landscape (train and test loss, trajectory, branch ends) of the first seed of the first LR, and
    the branches' final test metrics against the decay epoch (mean and sd over seeds) for every LR."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    first = next(iter(results.values()))[0]
    land = first.get("landscape")
    if land:
        fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
        xs, ys = np.array(land["xs"]), np.array(land["ys"])
        traj, ends = np.array(land["trajectory"]), np.array(land["branch_ends"])
        epochs = land["trajectory_epochs"]
        for ax, key in zip(axes, ("train_loss", "test_loss")):
            z = np.log10(np.array(land[key]))
            cs = ax.contourf(xs, ys, z, levels=25, cmap="viridis")
            fig.colorbar(cs, ax=ax, label=f"log10 {key.replace('_', ' ')}")
            ax.plot(traj[:, 0], traj[:, 1], "w.-", ms=2, lw=0.6, label="large-LR trajectory")
            for i in (0, len(epochs) // 2, len(epochs) - 1):
                ax.annotate(f"ep {epochs[i]}", traj[i], color="w", fontsize=8)
            for (bx, by), branch in zip(ends, first["branches"]):
                ax.plot(bx, by, "r*", ms=10)
                ax.annotate(f"decay@{branch['decay_epoch']}", (bx, by), color="r", fontsize=8)
            ax.set_xlabel(f"PC1 ({100 * land['explained'][0]:.0f}% var)")
            ax.set_ylabel(f"PC2 ({100 * land['explained'][1]:.0f}% var)")
            ax.set_title(f"MNIST-1D, lr {first['config']['lr']}, seed {first['seed']}: {key.replace('_', ' ')}")
        axes[0].legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(path_landscape, dpi=100)
        plt.close(fig)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for lr, runs in results.items():
        rows = summarize_real(runs)
        e = [r["decay_epoch"] for r in rows]
        for ax, key in zip(axes, ("test_acc", "test_loss")):
            scale = 100 if key == "test_acc" else 1
            m = np.array([r[key] for r in rows]) * scale
            sd = np.array([r[key + "_sd"] for r in rows]) * scale
            ax.errorbar(e, m, sd, marker="o", capsize=3, label=f"large lr {lr} ({len(runs)} seeds)")
            ax.set_xscale("log")
            ax.set_xlabel("decay epoch (branch: lr x 0.1 for the same number of epochs)")
            ax.set_ylabel("final test accuracy (%)" if key == "test_acc" else "final test loss (MSE)")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path_branches, dpi=100)
    plt.close(fig)


def real_table(results: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table: per LR and decay epoch, final train loss, test accuracy, test loss and weight norm."""
    lines = ["| large lr | decay epoch | train loss | test acc (%) | test loss | weight norm |",
             "|---|---|---|---|---|---|"]
    for lr, runs in results.items():
        for r in summarize_real(runs):
            lines.append(f"| {lr} | {r['decay_epoch']} | {r['train_loss']:.1e} | {100 * r['test_acc']:.2f} ± "
                         f"{100 * r['test_acc_sd']:.2f} | {r['test_loss']:.4f} ± {r['test_loss_sd']:.4f} | "
                         f"{r['weight_norm']:.2f} |")
    return "\n".join(lines)
