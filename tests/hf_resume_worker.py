"""New-process half of test_integrations_huggingface: resume every kind of checkpoint (hf_helpers.KINDS) in a
fresh interpreter and save each run's summary. Usage: python hf_resume_worker.py WORKDIR KIND[,KIND...]"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from hf_helpers import KINDS, autodrop_callback, fit, summary


def main(workdir: Path, kinds: list[str]) -> None:
    for kind in kinds:
        spec = KINDS[kind]
        callback = autodrop_callback(kind)
        args = {k: v for k, v in spec["args"].items() if k not in ("save_strategy", "save_steps")}
        trainer = fit(workdir / kind / "resumed", [callback], resume=str(workdir / kind / "part" /
                                                                        f"checkpoint-{spec['stop']}"), **args)
        torch.save(summary(trainer, callback), workdir / kind / "resumed.pt")


if __name__ == "__main__":
    # the parent's thread count: the reductions of a multi-threaded matmul are not bitwise the same across
    # thread counts, and earlier tests in the parent process may have pinned it (the bench runs at 1 thread)
    torch.set_num_threads(int(sys.argv[3]))
    main(Path(sys.argv[1]), sys.argv[2].split(","))
