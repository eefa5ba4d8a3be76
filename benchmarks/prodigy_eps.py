"""Does the weight of Adam's ``eps`` in Prodigy matter? The paper's ``d_k eps`` against the authors' ``d_{k+1} eps``.

    python benchmarks/prodigy_eps.py [--tasks digits-mlp mnist1d-cnn ...] [--seeds 3] [--perturbations 5]
        [--out benchmarks/results] [--jobs 2]

Prodigy's Adam update divides by ``sqrt(v_k) + d eps``. The paper (Mishchenko & Defazio, ICML 2024,
arXiv:2306.06101, the Adam version of the algorithm) writes ``d_k``, the estimate the step uses; the authors'
``prodigyopt`` (1.1.2, and its ``prodigy_reference.py``) adds ``d_{k+1} eps``, the estimate already updated in the
same step. ``lrpilot.Pilot`` follows the paper (``tests/test_pilot_reference.py``: with :func:`paper_eps_prodigy`
Pilot's anytime run is prodigyopt's to float64 rounding at the default ``eps``). This script trains both forms of
prodigyopt, at their defaults and without a schedule, on the bench's classification tasks, with seeds
``0..seeds-1`` on each of ``perturbations`` copies of the task's data (``benchmarks/perturbation.py``: the training
inputs multiplied by ``1 + 1e-6 N(0, 1)``; copy 0 is the task itself), and writes ``prodigy_eps.md`` and ``.json``
under ``--out``: per task and form the 3-seed mean on each copy, their mean and range, and the difference of the
means.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import statistics
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from lrpilot.bench.loop import one_thread, train, write_json
from lrpilot.bench.methods import Built

TASKS = ("digits-mlp", "digits-mlp-noisy", "mnist1d-cnn", "mnist1d-cnn-noisy", "mnist1d-bncnn")
FORMS = ("prodigyopt", "paper-eps")
# prodigyopt's denominator; ``dlr / (lr * bias_correction)`` is the d of the step (``dlr = d * lr * bias_correction``
# is computed before the estimate is updated)
AUTHORS_LINE = "denom = exp_avg_sq.sqrt().add_(d * eps)"
PAPER_LINE = "denom = exp_avg_sq.sqrt().add_(dlr / (lr * bias_correction) * eps)"


@functools.lru_cache(maxsize=1)
def paper_eps_prodigy() -> type[torch.optim.Optimizer]:
    """``prodigyopt.Prodigy`` with the paper's ``d_k eps`` in its denominator: the installed package's source with
    that one line changed, executed as a module of its own once per process (``RuntimeError`` if the line is not
    there, as in a release that changed it)."""
    spec = importlib.util.find_spec("prodigyopt.prodigy")
    if spec is None or spec.origin is None:
        raise RuntimeError("prodigyopt is not installed: pip install -e '.[bench]'")
    source = Path(spec.origin).read_text()
    if source.count(AUTHORS_LINE) != 1:
        raise RuntimeError(f"prodigyopt's source ({spec.origin}) no longer holds {AUTHORS_LINE!r} once")
    module = ModuleType("prodigy_paper_eps")
    exec(compile(source.replace(AUTHORS_LINE, PAPER_LINE), spec.origin, "exec"), module.__dict__)
    return module.Prodigy


def build(form: str):
    def make(model: torch.nn.Module) -> Built:
        params = [p for p in model.parameters() if p.requires_grad]
        if form == "prodigyopt":
            import prodigyopt

            return Built(prodigyopt.Prodigy(params, lr=1.0))
        return Built(paper_eps_prodigy()(params, lr=1.0))
    return make


def final_metric(args: tuple[str, str, int, int]) -> float:
    """The final test accuracy of one run: (task, form, perturbation, seed), the task's full budget."""
    name, form, perturbation, seed = args
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # once per worker process
        sys.path.insert(0, here)
    from perturbation import perturbed_task  # the sibling script's perturbed copies

    task = perturbed_task(name, perturbation, 1e-6)
    with one_thread():
        run = train(task, build(form), task.epochs, seed)
    return float(run.result["records"][-1]["test_metric"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--perturbations", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    if args.seeds < 1 or args.perturbations < 1:
        parser.error(f"--seeds and --perturbations must be >= 1, got {args.seeds} and {args.perturbations}")
    paper_eps_prodigy()  # fails here, not in a worker
    runs = [(t, f, k, s) for t in args.tasks for f in FORMS for k in range(args.perturbations)
            for s in range(args.seeds)]
    start = time.perf_counter()
    with Pool(args.jobs) as pool:
        finals = dict(zip(runs, pool.map(final_metric, runs)))
    seconds = time.perf_counter() - start
    summary: dict[str, dict[str, Any]] = {}
    for t in args.tasks:
        summary[t] = {}
        for f in FORMS:
            means = [statistics.mean(finals[(t, f, k, s)] for s in range(args.seeds))
                     for k in range(args.perturbations)]
            summary[t][f] = {"means": means, "mean": statistics.mean(means), "min": min(means), "max": max(means)}
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["# Prodigy's eps weight: the paper's d_k against prodigyopt's d_{k+1} (benchmarks/prodigy_eps.py)", "",
             f"{len(runs)} runs (each task's full budget, seeds 0-{args.seeds - 1}, {args.perturbations} copies of "
             f"the data 1e-6 apart), {seconds:.0f} s wall on {args.jobs} process(es) of 1 thread. Final test "
             "accuracy %, the 3-seed mean on each copy; prodigyopt 1.1 at its defaults, no schedule.", "",
             "| task | form | " + " | ".join(f"p{k}" for k in range(args.perturbations))
             + " | mean | range | paper - prodigyopt |", "|---|---|" + "---|" * (args.perturbations + 3)]
    for t in args.tasks:
        diff = 100 * (summary[t]["paper-eps"]["mean"] - summary[t]["prodigyopt"]["mean"])
        for f in FORMS:
            row = summary[t][f]
            lines.append(f"| {t} | {f} | " + " | ".join(pct(v) for v in row["means"])
                         + f" | {pct(row['mean'])} | {pct(row['min'])}-{pct(row['max'])} | "
                         + (f"{diff:+.1f} |" if f == "paper-eps" else " |"))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "prodigy_eps.md").write_text("\n".join(lines) + "\n")
    write_json(args.out / "prodigy_eps.json", {"seeds": args.seeds, "perturbations": args.perturbations,
                                               "seconds": seconds, "summary": summary,
                                               "finals": [[*r, v] for r, v in finals.items()]})
    print("\n".join(lines))


if __name__ == "__main__":
    main()
