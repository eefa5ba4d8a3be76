"""Exponential LR demo (Li & Arora, ICLR 2020): SGD + weight decay + step decay vs its TEXP conversion.

    python benchmarks/exponential_demo.py [--seeds 3] [--epochs 60] [--jobs 2] [--out benchmarks/results]

Network: the MNIST-1D BatchNorm CNN (`lrpilot.bench.tasks.mnist1d_bn_cnn`, width 64, head init x4) made
scale-invariant with `lrpilot.make_scale_invariant` (BN affine parameters and the linear head frozen; the
three convs trained).
The step-decay run is `SGD(lr 0.1, momentum 0.9, weight_decay wd)` with `MultiStepLR` stepped every step
(x0.1 at 50% and 75% of the budget); its conversions use `SGD(lr, momentum 0.9)` without weight decay and
`lrpilot.TEXP` with the same milestones (in steps). All variants of one seed train in lockstep: same
initial weights, same batches, so their distance can be measured step by step.

Part 1, exactness: float64, BN eps = 1e-30 (~0: exact scale invariance), 300 steps, drops at steps 150
and 250, wd 5e-3: the "exact" conversion, the paper's closed form, exact without the initial momentum
buffer (control), exact without `norm_layers` (running statistics not kept on scale), exact with
renormalisation every 50 steps; and with the default BN eps = 1e-5, exact with and without `norm_layers`
(which keep eps on the weights' scale).
Reported: normalised-weight error (max over steps and conv tensors), scaled error
||theta~ - weight_scale theta|| / ||theta~||, test-set logits in train mode (batch statistics) and in eval
mode (running statistics).
Part 2, arithmetic: the "paper" mode's LR deviation from "exact" on the paper's PreResNet32 schedule.
Part 3, the demonstration: float32, default BN eps, `--epochs` epochs, `--seeds` seeds, wd 5e-4 and 5e-3;
variants step-decay, texp (exact), texp-paper, texp-renorm (exact, renormalised every epoch). Test
accuracy (eval mode), LR, weight norm per epoch.
Part 5, control: the step-decay run against itself with the initial weights perturbed by ~1 ulp (float32),
in lockstep: how far rounding alone takes two float32 runs apart, and how much that moves the accuracy.
Part 4, the network: step decay alone (seed 0) at width 32/64 and head gain 1/2/4, and with everything
trained (no recipe): what the scale-invariance recipe costs on this small network and why gain 4.

Writes `exponential_demo.json` (every record; each run is cached, so an interrupted demo resumes),
`exponential_demo.md` (tables) and PNG figures to `docs/figures/`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lrpilot import TEXP, check_scale_invariance, growth_factor, make_scale_invariant, texp_schedule
from lrpilot.bench.loop import train, write_json
from lrpilot.bench.methods import Built
from lrpilot.bench.tasks import TASKS, mnist1d_bn_cnn, mnist1d_data

LR, MOMENTUM, GAMMA, BATCH = 0.1, 0.9, 0.1, 100
WIDTH, HEAD_GAIN = 64, 4.0  # part 4 measures why: the frozen random head sets the logits' temperature
STEPS_PER_EPOCH = 40  # 4000 / 100
PART3_WDS = (5e-4, 5e-3)
VARIANTS = ("step-decay", "texp", "texp-paper", "texp-renorm")
CONTROL = ("step-decay", "step-decay-perturbed")  # part 5: how far float32 rounding alone takes two runs apart


# ---------------------------------------------------------------------------------------------- building blocks
def build(variant: str, seed: int, wd: float, milestones: list[int], *, dtype: torch.dtype, eps: float,
          renorm_every: int, probe: tuple[torch.Tensor, torch.Tensor]) -> dict[str, Any]:
    """One run: model (same init for every variant of a seed), optimizer, scheduler."""
    torch.manual_seed(seed)
    model = mnist1d_bn_cnn(eps, WIDTH, HEAD_GAIN).to(dtype)
    make_scale_invariant(model)
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if variant == "step-decay-perturbed":  # ~1 ulp on about half the initial weights (float32)
        noise = torch.Generator().manual_seed(10_000 + seed)
        with torch.no_grad():
            for p in params:
                p.mul_(1 + 1e-7 * torch.randn(p.shape, generator=noise, dtype=p.dtype))
    if variant.startswith("step-decay"):
        opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=wd)
        sched: Any = torch.optim.lr_scheduler.MultiStepLR(opt, milestones, GAMMA)
    else:
        opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)
        report = check_scale_invariance(model, F.cross_entropy, probe)
        if not report.ok:
            raise RuntimeError(f"the demo network is not scale-invariant:\n{report}")
        sched = TEXP(opt, LR, wd, MOMENTUM, milestones, GAMMA, mode="paper" if variant == "texp-paper" else "exact",
                     renorm_every=renorm_every if "renorm" in variant else None,
                     norm_layers=() if variant == "texp-no-norm-layers" else report.scaled_norm_layers.values())
        if variant.startswith("texp-zero-buffer"):
            for p in params:
                opt.state[p].pop("momentum_buffer")
    return {"model": model, "opt": opt, "sched": sched, "params": params, "names": names}


def train_step(run: dict[str, Any], x: torch.Tensor, y: torch.Tensor) -> float:
    loss = F.cross_entropy(run["model"](x), y)
    run["opt"].zero_grad(set_to_none=True)
    loss.backward()
    run["opt"].step()
    run["sched"].step()
    return float(loss.detach())


@torch.no_grad()
def direction_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over tensors of || a/|a| - b/|b| ||."""
    return max(float((x / x.norm() - y / y.norm()).norm()) for x, y in zip(a, b))


def weight_scale(run: dict[str, Any]) -> float:
    return float(getattr(run["sched"], "weight_scale", 1.0))


def global_norm(params: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(p.detach().double().pow(2).sum()) for p in params))


@torch.no_grad()
def logits(model: nn.Module, x: torch.Tensor, train_mode: bool) -> torch.Tensor:
    was = model.training
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train(train_mode)
    out = model(x)
    model.load_state_dict(state)
    model.train(was)
    return out


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / a.abs().max())


# ---------------------------------------------------------------------------------------------- part 1
def part1(key: tuple) -> tuple[str, dict]:
    """Float64 exactness on the demo network, every variant in lockstep with the step-decay run."""
    _, seed, wd, steps = key
    torch.set_num_threads(1)
    x, y, x_test, _ = (t.double() if t.is_floating_point() else t for t in mnist1d_data())
    milestones = [steps // 2, steps * 5 // 6]
    probe = (x[:BATCH], y[:BATCH])
    specs = {  # name -> (variant, eps)
        "step-decay": ("step-decay", 1e-30), "texp": ("texp", 1e-30), "texp-paper": ("texp-paper", 1e-30),
        "texp-zero-buffer": ("texp-zero-buffer", 1e-30), "texp-renorm": ("texp-renorm", 1e-30),
        "texp-no-norm-layers": ("texp-no-norm-layers", 1e-30),
        "step-decay (eps 1e-5)": ("step-decay", 1e-5), "texp (eps 1e-5)": ("texp", 1e-5),
        "texp-no-norm-layers (eps 1e-5)": ("texp-no-norm-layers", 1e-5),
    }
    runs = {name: build(v, seed, wd, milestones, dtype=torch.float64, eps=eps, renorm_every=50, probe=probe)
            for name, (v, eps) in specs.items()}
    ref_of = {name: "step-decay (eps 1e-5)" if "eps 1e-5" in name else "step-decay" for name in runs}
    worst = {name: {"dir": 0.0, "scaled": 0.0} for name in runs}
    order = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    step = 0
    while step < steps:
        for idx in torch.randperm(len(x), generator=order).split(BATCH):
            if step == steps:
                break
            for run in runs.values():
                train_step(run, x[idx], y[idx])
            step += 1
            for name, run in runs.items():
                ref = runs[ref_of[name]]["params"]
                s = weight_scale(run)
                worst[name]["dir"] = max(worst[name]["dir"], direction_error(ref, run["params"]))
                with torch.no_grad():
                    scaled = max(float((b - s * a).norm() / b.norm()) for a, b in zip(ref, run["params"]))
                worst[name]["scaled"] = max(worst[name]["scaled"], scaled)
    out = {}
    for name, run in runs.items():
        ref = runs[ref_of[name]]
        out[name] = {
            **worst[name],
            "logits_train": rel(logits(ref["model"], x_test, True), logits(run["model"], x_test, True)),
            "logits_eval": rel(logits(ref["model"], x_test, False), logits(run["model"], x_test, False)),
            "final_lr": run["opt"].param_groups[0]["lr"],
            "weight_scale": weight_scale(run),
            "renorm_steps": list(getattr(run["sched"], "renorm_steps", [])),
        }
    result = {"part": 1, "seed": seed, "wd": wd, "steps": steps, "milestones": milestones, "runs": out,
              "seconds": time.perf_counter() - t0}
    return json.dumps(list(key)), result


# ---------------------------------------------------------------------------------------------- part 2
def part2() -> dict:
    """Paper vs exact LR on the PreResNet32 schedule (0.1, wd 5e-4, m 0.9, 391 steps/epoch, 300 epochs)."""
    b = 391
    out = {"alpha": growth_factor(0.1, 5e-4, 0.9), "per_epoch_growth": growth_factor(0.1, 5e-4, 0.9) ** (-2 * b)}
    for name, milestones, gamma in (("/10 at 80,120", [80, 120], 0.1), ("x0.2 at 60,120,160", [60, 120, 160], 0.2)):
        args = (0.1, 5e-4, 0.9, [m * b for m in milestones], gamma, 300 * b)
        ex, pa = texp_schedule(*args), texp_schedule(*args, mode="paper")
        dev = [abs(p / e - 1) for p, e in zip(pa.lrs, ex.lrs)]
        out[name] = {
            "max_rel_lr_dev": max(dev), "argmax_epoch": dev.index(max(dev)) / b,
            "log10_lr_epochs": {str(e): math.log10(ex.lrs[min(e * b, 300 * b) - 1]) for e in (1, 80, 120, 300)},
            "epoch_lrs_exact": [ex.lrs[e * b - 1] for e in range(1, 301)],
            "epoch_lrs_paper": [pa.lrs[e * b - 1] for e in range(1, 301)],
        }
    return out


# ---------------------------------------------------------------------------------------------- part 3
def part3(key: tuple) -> tuple[str, dict]:
    """Float32 demonstration: every variant of one seed in lockstep; one record per epoch (part 5: the control)."""
    part, seed, wd, epochs = key
    variants = VARIANTS if part == "part3" else CONTROL
    torch.set_num_threads(1)
    x, y, x_test, y_test = mnist1d_data()
    milestones = [round(0.5 * epochs) * STEPS_PER_EPOCH, round(0.75 * epochs) * STEPS_PER_EPOCH]
    runs = {v: build(v, seed, wd, milestones, dtype=torch.float32, eps=1e-5, renorm_every=STEPS_PER_EPOCH,
                     probe=(x[:BATCH], y[:BATCH])) for v in variants}
    records: dict[str, list[dict]] = {v: [] for v in variants}
    order = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for epoch in range(1, epochs + 1):
        losses: dict[str, float] = dict.fromkeys(variants, 0.0)
        batches = torch.randperm(len(x), generator=order).split(BATCH)
        for idx in batches:
            lrs_used = {v: run["opt"].param_groups[0]["lr"] for v, run in runs.items()}
            for v, run in runs.items():
                losses[v] += train_step(run, x[idx], y[idx])
        for v, run in runs.items():
            model = run["model"]
            model.eval()
            with torch.no_grad():
                out = model(x_test)
            model.train()
            records[v].append({
                "epoch": epoch, "train_loss": losses[v] / len(batches),
                "test_loss": float(F.cross_entropy(out, y_test)),
                "test_acc": float((out.argmax(1) == y_test).float().mean()),
                "lr": lrs_used[v], "wd_lr": float(getattr(run["sched"], "wd_lr", lrs_used[v])),
                "weight_norm": global_norm(run["params"]), "weight_scale": weight_scale(run),
                "dir_to_step_decay": direction_error(runs["step-decay"]["params"], run["params"]),
            })
    result = {"part": 3 if part == "part3" else 5, "seed": seed, "wd": wd, "epochs": epochs,
              "milestones_steps": milestones,
              "records": records, "seconds": time.perf_counter() - t0}
    return json.dumps(list(key)), result


# ---------------------------------------------------------------------------------------------- part 4
PART4 = {  # name -> (width, head_gain, apply the recipe)
    "width 32, head gain 1": (32, 1.0, True), "width 64, head gain 1": (64, 1.0, True),
    "width 64, head gain 2": (64, 2.0, True), "width 64, head gain 4 (the demo's)": (64, 4.0, True),
    "width 64, everything trained (not scale-invariant)": (64, 1.0, False),
}


def part4(key: tuple) -> tuple[str, dict]:
    """Step decay only (wd 5e-4, float32): what the recipe costs and why the demo's head gain is 4. One run of
    the shared loop (:func:`lrpilot.bench.loop.train`, MNIST-1D batches of 100); ``test_acc`` is its last
    record's ``test_metric``."""
    _, name, seed, epochs = key
    torch.set_num_threads(1)
    width, gain, recipe = PART4[name]

    def step_decay(model: nn.Module) -> Built:
        if recipe:
            make_scale_invariant(model)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR, momentum=MOMENTUM,
                              weight_decay=5e-4)
        milestones = [round(0.5 * epochs) * STEPS_PER_EPOCH, round(0.75 * epochs) * STEPS_PER_EPOCH]
        return Built(opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, GAMMA), "step")

    run = train(TASKS["mnist1d-cnn"], step_decay, epochs, seed, model=lambda: mnist1d_bn_cnn(1e-5, width, gain),
                stop_on_divergence=False)
    return json.dumps(list(key)), {"part": 4, "name": name, "seed": seed, "epochs": epochs, **run.result,
                                   "test_acc": run.result["records"][-1]["test_metric"]}


# ---------------------------------------------------------------------------------------------- reporting
def summarize(results: dict, seeds: int, epochs: int) -> str:
    lines = []
    p1 = [r for r in results.values() if r.get("part") == 1]
    for r in p1:
        lines.append(f"\n### Part 1: exactness, float64 (seed {r['seed']}, wd {r['wd']}, {r['steps']} steps, drops at "
                     f"steps {r['milestones']}, x{GAMMA})\n")
        lines.append("normalised-weight error = max over steps and conv tensors of ||w/|w| - w~/|w~|||; scaled = "
                     "max ||w~ - weight_scale w|| / ||w~||; logits = max |diff| / max |logit| on the 1000 test "
                     "sequences after the last step (train mode: batch statistics; eval mode: running statistics)."
                     " The eps-1e-5 rows compare with a step-decay run that also has eps 1e-5.\n")
        lines.append("| variant vs step decay | normalised weights | scaled | logits (train mode) | logits (eval mode) "
                     "| final LR | weight_scale |")
        lines.append("|---|---|---|---|---|---|---|")
        for name, s in r["runs"].items():
            if name.startswith("step-decay"):
                continue
            lines.append(f"| {name} | {s['dir']:.1e} | {s['scaled']:.1e} | {s['logits_train']:.1e} | "
                         f"{s['logits_eval']:.1e} | {s['final_lr']:.4g} | {s['weight_scale']:.4g} |")
    p2 = results.get("part2")
    if p2:
        lines.append("\n### Part 2: the paper's closed form vs the exact recursion (PreResNet32 schedule: lr 0.1, "
                     "wd 5e-4, momentum 0.9, 391 steps/epoch, 300 epochs)\n")
        lines.append(f"alpha = {p2['alpha']:.9f}; LR growth per epoch alpha^-782 = {p2['per_epoch_growth']:.4f}.\n")
        lines.append("| schedule | max relative LR difference paper vs exact | at epoch | "
                     "log10 LR at epoch 80 / 120 / 300 |")
        lines.append("|---|---|---|---|")
        for name in ("/10 at 80,120", "x0.2 at 60,120,160"):
            s = p2[name]
            le = s["log10_lr_epochs"]
            lines.append(f"| {name} | {s['max_rel_lr_dev']:.2e} | {s['argmax_epoch']:.1f} | "
                         f"{le['80']:.2f} / {le['120']:.2f} / {le['300']:.2f} |")
    for wd in PART3_WDS:
        runs = [r for r in results.values() if r.get("part") == 3 and r["wd"] == wd and r["epochs"] == epochs]
        runs.sort(key=lambda r: r["seed"])
        if not runs:
            continue
        lines.append(f"\n### Part 3: MNIST-1D BN CNN, float32, wd {wd}, {epochs} epochs, {len(runs)} seeds "
                     f"(lr {LR}, momentum {MOMENTUM}, x{GAMMA} at epochs {round(0.5 * epochs)} and "
                     f"{round(0.75 * epochs)})\n")
        lines.append("| variant | final test acc % (mean ± sd) | Δ vs step decay (pp) | per-seed Δ | max LR | "
                     "final LR | final weight norm | final weight_scale | "
                     "final normalised-weight distance to step decay |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        base = [100 * r["records"]["step-decay"][-1]["test_acc"] for r in runs]
        for v in VARIANTS:
            accs = [100 * r["records"][v][-1]["test_acc"] for r in runs]
            deltas = [a - b for a, b in zip(accs, base)]
            mean, sd = statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0
            last = [r["records"][v][-1] for r in runs]
            max_lr = max(max(rec["lr"] for rec in r["records"][v]) for r in runs)
            lines.append(
                f"| {v} | {mean:.2f} ± {sd:.2f} | {statistics.mean(deltas):+.2f} | "
                f"{', '.join(f'{d:+.1f}' for d in deltas)} | {max_lr:.3g} | "
                f"{statistics.mean(x['lr'] for x in last):.3g} | "
                f"{statistics.mean(x['weight_norm'] for x in last):.3g} | "
                f"{statistics.mean(x['weight_scale'] for x in last):.3g} | "
                f"{statistics.mean(x['dir_to_step_decay'] for x in last):.2g} |")
        control = [r for r in results.values() if r.get("part") == 5 and r["wd"] == wd and r["epochs"] == epochs]
        control.sort(key=lambda r: r["seed"])
        if control:
            accs = [100 * r["records"]["step-decay-perturbed"][-1]["test_acc"] for r in control]
            deltas = [a - 100 * r["records"]["step-decay"][-1]["test_acc"] for a, r in zip(accs, control)]
            dist = statistics.mean(r["records"]["step-decay-perturbed"][-1]["dir_to_step_decay"] for r in control)
            lines.append(f"| control: step decay, initial weights perturbed by ~1 ulp | {statistics.mean(accs):.2f} ± "
                         f"{statistics.stdev(accs) if len(accs) > 1 else 0.0:.2f} | {statistics.mean(deltas):+.2f} | "
                         f"{', '.join(f'{d:+.1f}' for d in deltas)} | | | | | {dist:.2g} |")
        secs = statistics.mean(r["seconds"] for r in runs)
        lines.append(f"\n{len(VARIANTS)} variants in lockstep: {secs:.0f} s per seed.")
    p4 = sorted((r for r in results.values() if r.get("part") == 4 and r["epochs"] == epochs),
                key=lambda r: list(PART4).index(r["name"]))
    if p4:
        lines.append(f"\n### Part 4: the network (step decay only, wd 5e-4, float32, {epochs} epochs, seed "
                     f"{p4[0]['seed']})\n")
        lines.append("| BN CNN | final test acc % |")
        lines.append("|---|---|")
        lines.extend(f"| {r['name']} | {100 * r['test_acc']:.1f} |" for r in p4)
    return "\n".join(lines) + "\n"


def plot(results: dict, epochs: int, figdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = {"step-decay": "C0", "texp": "C3", "texp-paper": "C2", "texp-renorm": "C1"}
    styles = {"step-decay": "-", "texp": "--", "texp-paper": ":", "texp-renorm": "-."}
    for wd in PART3_WDS:
        runs = [r for r in results.values() if r.get("part") == 3 and r["wd"] == wd and r["epochs"] == epochs]
        if not runs:
            continue
        fig, axes = plt.subplots(1, 4, figsize=(19, 4))
        ep = list(range(1, epochs + 1))

        def mean_of(v: str, key: str, runs: list = runs) -> list[float]:
            return [statistics.mean(r["records"][v][i][key] for r in runs) for i in range(epochs)]

        for v in VARIANTS:
            kw = {"color": colors[v], "ls": styles[v], "label": v}
            axes[0].plot(ep, [100 * a for a in mean_of(v, "test_acc")], **kw)
            axes[1].semilogy(ep, mean_of(v, "lr"), **kw)
            axes[2].semilogy(ep, mean_of(v, "weight_norm"), **kw)
            if v != "step-decay":
                axes[3].semilogy(ep, mean_of(v, "dir_to_step_decay"), **kw)
        control = [r for r in results.values() if r.get("part") == 5 and r["wd"] == wd and r["epochs"] == epochs]
        if control:
            axes[3].semilogy(ep, mean_of("step-decay-perturbed", "dir_to_step_decay", control), color="0.5",
                             label="control: step decay, init +-1 ulp")
        axes[2].semilogy(ep, [n / s for n, s in zip(mean_of("texp", "weight_norm"), mean_of("texp", "weight_scale"))],
                         color="k", lw=0.8, ls=(0, (1, 3)), label="texp norm / weight_scale")
        accs = [100 * a for a in mean_of("step-decay", "test_acc")]
        axes[0].set_ylim(max(0.0, min(accs[epochs // 5:] or accs) - 5), None)
        titles = ("test accuracy (%)", "learning rate (last step of the epoch)", "weight norm (trained convs)",
                  "normalised-weight distance to step decay")
        for ax, title in zip(axes, titles):
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=7)
        fig.suptitle(f"MNIST-1D BN CNN, SGD m{MOMENTUM}, wd {wd} + step decay vs TEXP (no wd), float32, "
                     f"mean of {len(runs)} seeds", fontsize=11)
        fig.tight_layout()
        path = figdir / f"exponential_demo_wd{wd:g}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    p2 = results.get("part2")
    if p2:
        fig, ax = plt.subplots(figsize=(6.5, 4))
        s = p2["/10 at 80,120"]
        ep = list(range(1, 301))
        ax.semilogy(ep, s["epoch_lrs_exact"], color="C3", label="TEXP exact")
        ax.semilogy(ep, s["epoch_lrs_paper"], color="C2", ls="--", label="TEXP paper (closed form)")
        ax.semilogy(ep, [0.1 if e <= 80 else 0.01 if e <= 120 else 0.001 for e in ep], color="C0", label="step decay")
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_title("PreResNet32 schedule (lr 0.1, wd 5e-4, m 0.9, 391 steps/epoch)", fontsize=10)
        ax.legend()
        fig.tight_layout()
        path = figdir / "exponential_texp_lr.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--part1-steps", type=int, default=300)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "exponential_demo.json"
    results = json.loads(cache.read_text()) if cache.exists() else {}
    t0 = time.perf_counter()
    if "part2" not in results:
        results["part2"] = part2()
    todo1 = [k for k in [("part1", 0, 5e-3, args.part1_steps)] if json.dumps(list(k)) not in results]
    todo3 = [k for k in (("part3", seed, wd, args.epochs) for wd in PART3_WDS for seed in range(args.seeds))
             if json.dumps(list(k)) not in results]
    todo4 = [k for k in (("part4", name, 0, args.epochs) for name in PART4) if json.dumps(list(k)) not in results]
    todo3 += [k for k in (("part5", seed, wd, args.epochs) for wd in PART3_WDS for seed in range(args.seeds))
              if json.dumps(list(k)) not in results]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = ([pool.submit(part1, k) for k in todo1] + [pool.submit(part3, k) for k in todo3]
                   + [pool.submit(part4, k) for k in todo4])
        for fut in futures:
            key, res = fut.result()
            results[key] = res
            write_json(cache, results)
            if res["part"] in (3, 5):
                accs = {v: round(100 * r[-1]["test_acc"], 2) for v, r in res["records"].items()}
                print(f"part {res['part']} wd {res['wd']} seed {res['seed']}: final test acc {accs} "
                      f"({res['seconds']:.0f}s)", flush=True)
            elif res["part"] == 4:
                print(f"part 4 {res['name']}: {100 * res['test_acc']:.1f}% ({res['seconds']:.0f}s)", flush=True)
            else:
                print(f"part 1: {({k: round(v['dir'], 17) for k, v in res['runs'].items()})}", flush=True)
    table = summarize(results, args.seeds, args.epochs)
    header = (f"# Exponential LR demo (measured by benchmarks/exponential_demo.py, "
              f"{time.perf_counter() - t0:.0f} s this invocation, 2-core CPU, torch {torch.__version__})\n")
    (args.out / "exponential_demo.md").write_text(header + table)
    for path in plot(results, args.epochs, args.figures):
        print(f"wrote {path}")
    print(header + table)


if __name__ == "__main__":
    main()
