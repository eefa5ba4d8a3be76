"""ActiveLR robustness study: is the final accuracy less sensitive to the initial learning rate?

    python benchmarks/activelr_robustness.py [--seeds 3] [--epochs 40] [--jobs 1] [--out benchmarks/results]

The paper's claim (Wadi et al., arXiv 2301.10133; spec ``shared/papers/activelr.md`` section 5: CIFAR-10
ResNet-18, 100 epochs, no LR schedule, weight decay 0) at CPU scale, on the MNIST-1D CNN
(``lrpilot.bench.tasks``, 4000 train / 1000 test, batch 100, 40 steps per epoch):

  * AdamW vs ActiveAdamW at initial lr 1e-5, 1e-4, 1e-3, 1e-2 (betas 0.9/0.999, eps 1e-8, weight decay 0);
  * SGD vs ActiveSGD (momentum 0.9, weight decay 0) at lr 1e-3, 1e-2, 1e-1, 1, and the same with momentum 0
    (torch.optim.SGD's default, with which the grid ends near the tuned LR, as the AdamW grid does);
  * ActiveLR with the paper's lr_low = 0.5, lr_high = 2.0, unbounded multipliers, ``steps_per_epoch=40``;
  * ablation: ActiveSGD with lr_low = 0.9, lr_high = 0.1, the constants hard-coded in the only official SGD
    variant (no SGD experiment of the paper is logged);
  * no LR schedule, ``--epochs`` epochs (fixed before any run: 40), seeds 0..N-1, same init and batch order
    for both members of a pair.

Reports mean +- sd of the final test accuracy per lr and the worst case over the lr range, and the step
time of ActiveAdamW / AdamW and ActiveSGD / SGD on the same model, measured in one process, interleaved,
median of ``--timing-repeats`` samples of one epoch (40 steps, so one epoch boundary is included).
Writes ``activelr_robustness.json`` (every per-epoch record; an interrupted study resumes),
``activelr_robustness.md`` and ``docs/figures/activelr_robustness.png``.
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

from lrpilot import ActiveAdamW, ActiveSGD
from lrpilot.bench.loop import train, upgrade_record, write_json
from lrpilot.bench.methods import Built
from lrpilot.bench.tasks import TASKS
from lrpilot.telemetry import effective_lrs

TASK = "mnist1d-cnn"
#: (plain, Active, ablations...) and the initial LRs. The ablation runs ActiveSGD with the constants hard-coded in
#: the only official SGD variant (code B ``optimizers/ActiveSGD.py``: lrLow 0.9, lrHigh 0.1); no SGD experiment of
#: the paper is logged, so its constants for SGD are not known (spec sections 2-3).
FAMILIES: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {
    "AdamW": (("AdamW", "ActiveAdamW"), (1e-5, 1e-4, 1e-3, 1e-2)),
    "SGD": (("SGD", "ActiveSGD", "ActiveSGD-code-0.9-0.1"), (1e-3, 1e-2, 1e-1, 1.0)),
    # torch.optim.SGD's own default (momentum 0): the same grid then ends near the tuned LR, as the AdamW grid does
    "SGD-m0": (("SGD-m0", "ActiveSGD-m0", "ActiveSGD-m0-code-0.9-0.1"), (1e-3, 1e-2, 1e-1, 1.0)),
}
LABELS = {"ActiveSGD-code-0.9-0.1": "ActiveSGD, lr_low 0.9 / lr_high 0.1 (ablation: official ActiveSGD.py constants)",
          "SGD-m0": "SGD, momentum 0", "ActiveSGD-m0": "ActiveSGD, momentum 0",
          "ActiveSGD-m0-code-0.9-0.1": "ActiveSGD, momentum 0, lr_low 0.9 / lr_high 0.1 (ablation)"}
#: momentum of the SGD methods: 0.9 (the official ActiveSGD.py default) unless the name ends in "-m0"


def steps_per_epoch() -> int:
    return TASKS[TASK].steps_per_epoch()


def make_optimizer(method: str, params: Any, lr: float, spe: int, foreach: bool | None = None) -> torch.optim.Optimizer:
    if method == "AdamW":
        return torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=foreach)
    if method == "ActiveAdamW":
        return ActiveAdamW(params, lr=lr, weight_decay=0.0, steps_per_epoch=spe, foreach=foreach)
    momentum = 0.0 if "-m0" in method else 0.9
    base = method.replace("-m0", "")
    if base == "SGD":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=foreach)
    if base == "ActiveSGD":
        return ActiveSGD(params, lr=lr, momentum=momentum, steps_per_epoch=spe, foreach=foreach)
    if base == "ActiveSGD-code-0.9-0.1":
        return ActiveSGD(params, lr=lr, momentum=momentum, steps_per_epoch=spe, foreach=foreach, lr_low=0.9,
                         lr_high=0.1)
    raise ValueError(f"unknown method {method!r}")


def run_one(key: tuple[str, float, int, int]) -> tuple[str, dict]:
    """One cached run: :func:`lrpilot.bench.loop.train`'s records (the format of ``lrpilot bench``; a diverged run
    goes on to the last epoch, as the table counts it), each with the first group's ``eff_lr_min`` and
    ``eff_lr_max`` beside the loop's ``effective_lr`` (the mean)."""
    method, lr, seed, epochs = key
    torch.set_num_threads(1)
    spe = steps_per_epoch()

    def add_range(record: dict[str, Any], built: Built) -> None:
        eff = effective_lrs(built.optimizer)[0]
        record.update(eff_lr_min=eff.min, eff_lr_max=eff.max)

    run = train(TASKS[TASK], lambda model: Built(make_optimizer(method, model.parameters(), lr, spe)), epochs, seed,
                stop_on_divergence=False, on_epoch=add_range)
    return json.dumps(list(key)), {"method": method, "lr": lr, "seed": seed, "epochs": epochs, **run.result}


def load_cache(path: Path) -> dict:
    """The cached runs and timing; runs of the former format (``test_acc``, ``eff_lr_mean``) converted."""
    results = json.loads(path.read_text()) if path.exists() else {}
    for key, res in results.items():
        if key != "timing":
            res["records"] = [upgrade_record({("effective_lr" if k == "eff_lr_mean" else k): v for k, v in r.items()})
                              for r in res["records"]]
    return results


# ----------------------------------------------------------------------------------------------- step time
def measure_step_time(repeats: int) -> dict[str, Any]:
    """Median seconds per optimizer step and per full training step, interleaved over the methods."""
    torch.set_num_threads(1)
    task = TASKS[TASK]
    x, y, _, _ = task.data()
    spe = steps_per_epoch()
    batches = [(x[i:i + task.batch_size], y[i:i + task.batch_size]) for i in range(0, len(x), task.batch_size)]
    variants = [(m, fe) for fe in (None, True) for m in ("AdamW", "ActiveAdamW", "SGD", "ActiveSGD")]
    setups = {}
    for method, foreach in variants:
        torch.manual_seed(0)
        model = task.model()
        # a small lr keeps the repeatedly stepped weights far from overflow and subnormals; the work is the same
        opt = make_optimizer(method, model.parameters(), 1e-5, spe, foreach=foreach)
        setups[(method, foreach)] = (model, opt)
    samples: dict[tuple[str, bool | None], dict[str, list[float]]] = {v: {"step": [], "train": []} for v in variants}
    for r in range(repeats + 2):  # two warm-up rounds, discarded
        for variant in variants:
            model, opt = setups[variant]
            # optimizer step only: gradients of one batch, stepped once per batch of an epoch
            F.cross_entropy(model(batches[0][0]), batches[0][1]).backward()
            t0 = time.perf_counter()
            for _ in range(spe):
                opt.step()
            step_time = (time.perf_counter() - t0) / spe
            # full training step: zero_grad, forward, backward, step
            t0 = time.perf_counter()
            for xb, yb in batches:
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            train_time = (time.perf_counter() - t0) / len(batches)
            opt.zero_grad(set_to_none=True)
            if r >= 2:
                samples[variant]["step"].append(step_time)
                samples[variant]["train"].append(train_time)
    medians = {f"{m}|{fe}": {k: statistics.median(v) for k, v in s.items()} for (m, fe), s in samples.items()}
    ratios = {}
    for fe in (None, True):
        for plain, active in (("AdamW", "ActiveAdamW"), ("SGD", "ActiveSGD")):
            a, p = medians[f"{active}|{fe}"], medians[f"{plain}|{fe}"]
            ratios[f"{active}/{plain}|{fe}"] = {k: a[k] / p[k] for k in ("step", "train")}
    return {"repeats": repeats, "medians": medians, "ratios": ratios, "threads": torch.get_num_threads()}


# ----------------------------------------------------------------------------------------------- reporting
def stats(results: dict, method: str, lr: float) -> dict[str, Any] | None:
    runs = [r for r in results.values() if isinstance(r, dict) and r.get("method") == method and r["lr"] == lr]
    if not runs:
        return None
    finals = [100 * r["records"][-1]["test_metric"] for r in runs]
    bests = [100 * max(rec["test_metric"] for rec in r["records"]) for r in runs]
    diverged = sum(not math.isfinite(r["records"][-1]["train_loss"]) for r in runs)
    sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
    return {"n": len(runs), "final": statistics.mean(finals), "sd": sd,
            "worst_seed": min(finals), "best": statistics.mean(bests), "diverged": diverged,
            "eff_lr_final": statistics.mean(r["records"][-1]["effective_lr"] for r in runs)}


def summarize(results: dict, epochs: int, seeds: int) -> str:
    lines = []
    for methods, lrs in FAMILIES.values():
        plain, active = (LABELS.get(m, m) for m in methods[:2])
        lines.append(f"\n### {plain} vs {active} (MNIST-1D CNN, {epochs} epochs, {seeds} seeds; final test "
                     "accuracy %, mean ± sd)\n")
        lines.append("| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | worst lr (mean) | worst run |")
        lines.append("|---|" + "---|" * (len(lrs) + 2))
        for method in methods:
            cells, means, worst_runs = [], [], []
            for lr in lrs:
                s = stats(results, method, lr)
                if s is None:
                    cells.append("–")
                    continue
                mark = f" ({s['diverged']} diverged)" if s["diverged"] else ""
                cells.append(f"{s['final']:.1f} ± {s['sd']:.1f}{mark}")
                means.append(s["final"])
                worst_runs.append(s["worst_seed"])
            worst = f"{min(means):.1f}" if means else "–"
            worst_run = f"{min(worst_runs):.1f}" if worst_runs else "–"
            lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + f" | **{worst}** | {worst_run} |")
        lines.append("")
        lines.append("Best-epoch accuracy (mean over seeds) and, for ActiveLR, lr x mean multiplier after the last "
                     "epoch:\n")
        lines.append("| method | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |")
        lines.append("|---|" + "---|" * len(lrs))
        for method in methods:
            cells = []
            for lr in lrs:
                s = stats(results, method, lr)
                if s is None:
                    cells.append("–")
                elif method.startswith("Active"):
                    cells.append(f"{s['best']:.1f} (eff. lr {s['eff_lr_final']:.2g})")
                else:
                    cells.append(f"{s['best']:.1f}")
            lines.append(f"| {LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def timing_table(timing: dict) -> str:
    lines = [f"\n### Step time (same model and batches, interleaved, median of {timing['repeats']} samples, "
             f"{timing['threads']} thread)\n",
             "| ratio | foreach | optimizer.step() | full training step |", "|---|---|---|---|"]
    for key, value in timing["ratios"].items():
        name, fe = key.split("|")
        label = "default (for-loop on CPU)" if fe == "None" else "foreach=True"
        lines.append(f"| {name} | {label} | {value['step']:.2f} | {value['train']:.2f} |")
    lines.append("")
    lines.append("| method | foreach | µs per optimizer.step() | µs per training step |")
    lines.append("|---|---|---|---|")
    for key, value in timing["medians"].items():
        name, fe = key.split("|")
        label = "default" if fe == "None" else "True"
        lines.append(f"| {name} | {label} | {1e6 * value['step']:.0f} | {1e6 * value['train']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, figdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, len(FAMILIES), figsize=(5.5 * len(FAMILIES), 8))
    for col, (methods, lrs) in enumerate(FAMILIES.values()):
        ax = axes[0, col]
        for method, color, style in zip(methods, ("C7", "C0", "C1"), ("-", "-", "--")):
            pts = [(lr, stats(results, method, lr)) for lr in lrs]
            pts = [(lr, s) for lr, s in pts if s is not None]
            label = "ActiveSGD (0.9 / 0.1, ablation)" if "code" in method else LABELS.get(method, method)
            ax.errorbar([lr for lr, _ in pts], [s["final"] for _, s in pts], yerr=[s["sd"] for _, s in pts],
                        marker="o", capsize=3, color=color, ls=style, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("initial learning rate")
        ax.set_ylabel("final test accuracy (%)")
        ax.set_title(f"MNIST-1D CNN: {LABELS.get(methods[0], methods[0])} vs {LABELS.get(methods[1], methods[1])}",
                     fontsize=9)
        ax.legend()
        ax = axes[1, col]
        for i, lr in enumerate(lrs):
            runs = [r for r in results.values() if isinstance(r, dict) and r.get("method") == methods[1]
                    and r["lr"] == lr and r["seed"] == 0]
            if not runs:
                continue
            recs = runs[0]["records"]
            ep = [rec["epoch"] for rec in recs]
            ax.semilogy(ep, [rec["effective_lr"] for rec in recs], color=f"C{i}", label=f"lr {lr:g}: lr x mean gai")
            ax.fill_between(ep, [rec["eff_lr_min"] for rec in recs], [rec["eff_lr_max"] for rec in recs],
                            color=f"C{i}", alpha=0.12)
        ax.set_xlabel("epoch")
        ax.set_ylabel("effective learning rate")
        ax.set_title(f"{LABELS.get(methods[1], methods[1])}, seed 0: mean (line), min-max (band)", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figdir / "activelr_robustness.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--timing-repeats", type=int, default=30)
    parser.add_argument("--retime", action="store_true", help="measure the step time again even if cached")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "activelr_robustness.json"
    results = load_cache(cache)
    t0 = time.perf_counter()
    todo = [(method, lr, seed, args.epochs) for methods, lrs in FAMILIES.values() for lr in lrs
            for seed in range(args.seeds) for method in methods]
    todo = [k for k in todo if json.dumps(list(k)) not in results]
    with ProcessPoolExecutor(args.jobs) as pool:
        for key, res in pool.map(run_one, todo):
            results[key] = res
            write_json(cache, results)
            last = res["records"][-1]
            print(f"{res['method']:12s} lr {res['lr']:<6g} seed {res['seed']} final acc {last['test_metric']:.4f} "
                  f"eff lr {last['effective_lr']:.3g} ({res['seconds']:.0f}s)", flush=True)
    if args.retime or "timing" not in results:
        results["timing"] = measure_step_time(args.timing_repeats)
        write_json(cache, results)
    runs = {k: v for k, v in results.items() if k != "timing" and v["epochs"] == args.epochs}
    train_seconds = sum(r["seconds"] for r in runs.values())
    header = (f"# ActiveLR robustness to the initial LR (measured by benchmarks/activelr_robustness.py: {len(runs)} "
              f"runs, {train_seconds:.0f} s of training in total, {time.perf_counter() - t0:.0f} s this invocation; "
              "2-core CPU shared with other jobs, 1 thread per run)\n")
    report = header + summarize(runs, args.epochs, args.seeds) + timing_table(results["timing"])
    (args.out / "activelr_robustness.md").write_text(report)
    plot(runs, args.figures)
    print(report)


if __name__ == "__main__":
    main()
