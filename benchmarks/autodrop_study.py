"""AutoDrop study: does the default mode, untuned, match a hand-tuned MultiStepLR? Where does it lose?

    python benchmarks/autodrop_study.py [--seeds 3] [--epochs 60] [--jobs 2] [--out benchmarks/results]

For each task (MNIST-1D CNN, digits MLP), SGD momentum 0.9, weight decay 5e-4, `--epochs` epochs, seeds
0..N-1, it trains:
  * AutoDrop mode "trend" (default options) at lr 0.05, 0.1, 0.2, and the same without its patience
    fallback (patience=None: drop only after a significant rise), as an ablation;
  * AutoDrop modes "code" and "uai" at lr 0.1, and "trend" with the code's post-saturation window
    (extra_epochs=5, weight_average=True) as an ablation;
  * constant LR and four MultiStepLR schedules at lr 0.1; "hand-tuned" = the one with the best mean final
    test accuracy (chosen on the test set, which flatters the baseline), then run at lr 0.05 and 0.2 too.
Writes `autodrop_study.json` (every per-epoch record), `autodrop_study.md` (tables) and PNG figures to
`docs/figures/`. Each run is cached in the JSON, so an interrupted study resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from pathlib import Path

import torch

from lrpilot import AutoDrop
from lrpilot.bench.loop import train, upgrade_record, write_json
from lrpilot.bench.methods import Built
from lrpilot.bench.tasks import TASKS

MULTISTEP = {  # name -> (fractions of the budget, gamma)
    "multistep[50%,75%]x0.1": ((0.5, 0.75), 0.1),
    "multistep[33%,67%]x0.1": ((1 / 3, 2 / 3), 0.1),
    "multistep[67%,83%]x0.1": ((2 / 3, 5 / 6), 0.1),
    "multistep[33%,67%,83%]x0.2": ((1 / 3, 2 / 3, 5 / 6), 0.2),
}
AUTODROP = {
    "autodrop-trend": {"mode": "trend"},
    "autodrop-trend-nopatience": {"mode": "trend", "patience": None},
    "autodrop-code": {"mode": "code"},
    "autodrop-uai": {"mode": "uai"},
    "autodrop-trend+avg5": {"mode": "trend", "extra_epochs": 5, "weight_average": True},
}


def build(method: str, lr: float, epochs: int) -> Callable[[torch.nn.Module], Built]:
    """SGD(lr, momentum 0.9, weight decay 5e-4) with ``method``'s scheduler, stepped once per epoch."""
    def make(model: torch.nn.Module) -> Built:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        if method in AUTODROP:
            options = dict(AUTODROP[method])
            return Built(opt, AutoDrop(opt, options.pop("mode"), **options), "epoch")
        if method in MULTISTEP:
            fractions, gamma = MULTISTEP[method]
            milestones = [round(f * epochs) for f in fractions]
            return Built(opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones, gamma), "epoch")
        return Built(opt)
    return make


def run_one(key: tuple[str, str, float, int, int]) -> tuple[str, dict]:
    """One cached run: the key's fields, then :func:`lrpilot.bench.loop.train`'s result (the record format of
    ``lrpilot bench``), and for AutoDrop its saturation epochs."""
    task_name, method, lr, seed, epochs = key
    torch.set_num_threads(1)
    run = train(TASKS[task_name], build(method, lr, epochs), epochs, seed, stop_on_divergence=False)
    result = {"task": task_name, "method": method, "lr": lr, "seed": seed, "epochs": epochs, **run.result}
    if method in AUTODROP:
        result["saturation_epochs"] = list(run.built.scheduler.saturation_epochs)
    return json.dumps(key), result


def load_cache(path: Path) -> dict:
    """The cached runs, those of the former format (``test_acc``, omega NaN) converted to the current one."""
    results = json.loads(path.read_text()) if path.exists() else {}
    for res in results.values():
        res["records"] = [upgrade_record(r) for r in res["records"]]
    return results


def summarize(results: dict, tasks: list[str], seeds: int) -> tuple[str, dict]:
    lines, best = [], {}
    for task in tasks:
        rows = {}
        for res in results.values():
            if res["task"] != task:
                continue
            rows.setdefault((res["method"], res["lr"]), []).append(res)
        stat = {}
        for (method, lr), runs in rows.items():
            finals = [100 * r["records"][-1]["test_metric"] for r in runs]
            bests = [100 * max(x["test_metric"] for x in r["records"]) for r in runs]
            drops = [len(r.get("drop_epochs", [])) for r in runs]
            stat[(method, lr)] = {
                "n": len(runs),
                "final": statistics.mean(finals),
                "final_sd": statistics.stdev(finals) if len(finals) > 1 else 0,
                "best": statistics.mean(bests), "drops": drops,
                "drop_epochs": [r.get("drop_epochs") for r in runs],
                "seconds": statistics.mean(r["seconds"] for r in runs),
            }
        ms = {m: s for (m, lr), s in stat.items() if m in MULTISTEP and lr == 0.1}
        tuned = max(ms, key=lambda m: ms[m]["final"]) if ms else None
        best[task] = tuned
        lines.append(f"\n### {task} (SGD m0.9 wd5e-4, {seeds} seeds; final/best = test accuracy % at the last epoch "
                     "/ best epoch, mean ± sd of final)\n")
        lines.append("| method | lr | final acc | best acc | Δ final vs tuned MultiStep @lr | drops per seed "
                     "(epochs) | s/run |")
        lines.append("|---|---|---|---|---|---|---|")
        for (method, lr), s in sorted(stat.items(), key=lambda kv: (kv[0][1], kv[0][0])):
            ref = stat.get((tuned, lr))
            delta = f"{s['final'] - ref['final']:+.2f}" if ref else "n/a"
            mark = " (hand-tuned)" if method == tuned else ""
            drops = "; ".join(str(e) for e in s["drop_epochs"]) if method in AUTODROP else "-"
            lines.append(f"| {method}{mark} | {lr} | {s['final']:.2f} ± {s['final_sd']:.2f} | {s['best']:.2f} | "
                         f"{delta} | {drops} | {s['seconds']:.1f} |")
    return "\n".join(lines) + "\n", best


def plot(results: dict, tasks: list[str], tuned: dict, figdir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figdir.mkdir(parents=True, exist_ok=True)
    # 1. omega of the default mode, detected saturation and drops, seed 0, per task and lr.
    for task in tasks:
        runs = [r for r in results.values() if r["task"] == task and r["method"] == "autodrop-trend" and r["seed"] == 0]
        runs.sort(key=lambda r: r["lr"])
        fig, axes = plt.subplots(2, len(runs), figsize=(4.5 * len(runs), 6), sharex=True, squeeze=False)
        for col, r in enumerate(runs):
            ax, ax_lr = axes[0, col], axes[1, col]
            ep = [e for e, _ in r["omega_history"]]
            om = [w for _, w in r["omega_history"]]
            ax.plot(ep, om, ".-", color="C0", label="ω (epoch-averaged snapshots)")
            for e in r["saturation_epochs"]:
                ax.axvline(e, color="C3", ls="--", lw=1)
            ax.set_title(f"{task}, lr {r['lr']}: saturation (red) → drop")
            ax.set_ylabel("angular velocity (deg)")
            ax.legend(loc="lower right", fontsize=8)
            recs = r["records"]
            ax_lr.semilogy([x["epoch"] for x in recs], [x["lr"] for x in recs], color="C1", label="lr")
            ax_lr.set_xlabel("epoch")
            ax_lr.set_ylabel("learning rate")
            ax2 = ax_lr.twinx()
            ax2.plot([x["epoch"] for x in recs], [100 * x["test_metric"] for x in recs], color="C2", label="test acc")
            ax2.set_ylabel("test accuracy (%)")
        fig.tight_layout()
        fig.savefig(figdir / f"autodrop_trend_{task}.png", dpi=110)
        plt.close(fig)
    # 2. Why the official test does not fire: the code mode's raw per-epoch omega and |Δω| vs theta0.
    for task in tasks:
        r = results.get(json.dumps([task, "autodrop-code", 0.1, 0, next(iter(results.values()))["epochs"]]))
        if r is None:
            continue
        ep = [e for e, _ in r["omega_history"]]
        om = [w for _, w in r["omega_history"]]
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        a1.plot(ep, om, ".-")
        a1.set_title(f"{task}: ω as the official code measures it")
        a1.set_xlabel("epoch")
        a1.set_ylabel("deg")
        a2.semilogy(ep[1:], [abs(b - a) for a, b in pairwise(om)], ".", label="|Δω|")
        a2.axhline(0.01, color="C3", label="θ0 = 0.01°")
        a2.set_title(f"saturation test |Δω| < θ: fired {len(r['saturation_epochs'])}×")
        a2.set_xlabel("epoch")
        a2.legend()
        fig.tight_layout()
        fig.savefig(figdir / f"autodrop_code_{task}.png", dpi=110)
        plt.close(fig)
    # 3. Learning curves: default AutoDrop vs the hand-tuned MultiStepLR vs constant, mean over seeds.
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method, color in (("autodrop-trend", "C0"), (tuned[task], "C1"), ("constant", "C7")):
            runs = [r for r in results.values() if r["task"] == task and r["method"] == method and r["lr"] == 0.1]
            if not runs:
                continue
            n = len(runs[0]["records"])
            mean = [statistics.mean(100 * r["records"][i]["test_metric"] for r in runs) for i in range(n)]
            ax.plot(range(1, n + 1), mean, color=color, label=f"{method} ({len(runs)} seeds)")
        ax.set_title(f"{task}, lr 0.1")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        lo = min(ax.get_ylim()[1] - 10, 90)
        ax.set_ylim(lo, None)
        ax.legend()
    fig.tight_layout()
    fig.savefig(figdir / "autodrop_vs_multistep.png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--tasks", nargs="+", default=["mnist1d-cnn", "digits-mlp"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--figures", type=Path, default=Path("docs/figures"))
    parser.add_argument("--rerun", nargs="*", default=[], metavar="METHOD",
                        help="discard the cached runs of these methods (after changing their code)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "autodrop_study.json"
    results = load_cache(cache)
    results = {k: v for k, v in results.items() if v["method"] not in args.rerun}

    def keys_for(phase: int, tuned: dict) -> list:
        keys = []
        for task in args.tasks:
            for seed in range(args.seeds):
                if phase == 0:
                    for lr in (0.05, 0.1, 0.2):
                        keys.append((task, "autodrop-trend", lr, seed, args.epochs))
                        keys.append((task, "autodrop-trend-nopatience", lr, seed, args.epochs))
                    for method in ("autodrop-code", "autodrop-uai", "autodrop-trend+avg5", "constant", *MULTISTEP):
                        keys.append((task, method, 0.1, seed, args.epochs))
                else:
                    for lr in (0.05, 0.2):
                        keys.append((task, tuned[task], lr, seed, args.epochs))
        return [k for k in keys if json.dumps(list(k)) not in results]

    t0 = time.perf_counter()
    for phase in (0, 1):
        _, tuned = summarize(results, args.tasks, args.seeds)
        todo = keys_for(phase, tuned)
        with ProcessPoolExecutor(args.jobs) as pool:
            for key, res in pool.map(run_one, todo):
                results[json.dumps(json.loads(key))] = res
                write_json(cache, results)
                print(f"{res['task']:12s} {res['method']:28s} lr {res['lr']:<5} seed {res['seed']} "
                      f"final {res['records'][-1]['test_metric']:.4f} drops {res.get('drop_epochs', '-')} "
                      f"({res['seconds']:.0f}s)", flush=True)
    table, tuned = summarize(results, args.tasks, args.seeds)
    header = (f"# AutoDrop study ({args.epochs} epochs; measured by benchmarks/autodrop_study.py, "
              f"{time.perf_counter() - t0:.0f} s this invocation, 2-core CPU)\n")
    (args.out / "autodrop_study.md").write_text(header + table)
    plot(results, args.tasks, tuned, args.figures)
    print(header + table)


if __name__ == "__main__":
    main()
