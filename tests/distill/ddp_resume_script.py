"""Two-process DDP resume used by test_distill_ddp.py (under torch.distributed.run).

usage: python -m torch.distributed.run --nproc_per_node=2 ddp_resume_script.py OUT_DIR

Both ranks share one checkpoint directory (rank 0 writes it). After a first
run of 2 epochs rank 0 damages the newest checkpoint record; a fresh
Distiller's resume() must skip it on every rank (no rank raises, none waits)
and load the previous complete checkpoint; each rank saves the student it
resumed to OUT_DIR/weights-rank<r>.safetensors with the checkpoint's name
and step.
"""

import json
import os
import sys

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distill_standins import blobs, mlp

from slimtorch.distill import Distiller, KDLoss
from slimtorch.distill.checkpoint import list_checkpoints
from slimtorch.distill.distributed import init_distributed


def distiller(ckpt: str) -> Distiller:
    torch.manual_seed(7)
    teacher, student = mlp([8, 32, 3]), mlp([8, 12, 3])
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    return Distiller(teacher, student, KDLoss(2.0, 0.5), optimizer, checkpoint_dir=ckpt, checkpoint_every=2)


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    info = init_distributed()
    ckpt = os.path.join(out, "ckpt")
    loader = DataLoader(blobs(70, seed=3), batch_size=8, shuffle=True)
    distiller(ckpt).fit(loader, epochs=2)
    torch.distributed.barrier()
    if info.rank == 0:
        newest = list_checkpoints(ckpt)[-1][1]
        record = json.loads(newest.read_text())
        record["tensors_sha256"] = 12345  # a malformed value where a hex digest belongs
        with open(newest, "w") as f:
            json.dump(record, f)
    torch.distributed.barrier()
    second = distiller(ckpt)
    resumed = second.resume()
    resumed_step = second.global_step
    weights = {k: v.contiguous() for k, v in second.student.state_dict().items()}
    save_file(weights, os.path.join(out, f"weights-rank{info.rank}.safetensors"),
              metadata={"resumed": os.path.basename(str(resumed)), "step": str(resumed_step)})
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
