"""Two-process DDP run used by test_distill_ddp.py (under torch.distributed.run).

usage: python -m torch.distributed.run --nproc_per_node=2 ddp_script.py OUT_DIR

Each rank gets its own checkpoint/log paths (OUT_DIR/rank<r>/...), so the test
can see that only rank 0 wrote; each rank saves its final weights to
OUT_DIR/weights-rank<r>.safetensors.
"""

import os
import sys

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distill_standins import StepMagnitudePruning, blobs, mlp

from slimtorch.distill import CombinedLoss, Distiller, FeatureLoss, KDLoss
from slimtorch.distill.distributed import init_distributed


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    info = init_distributed()
    assert info.world_size == 2, info
    # Different initial weights per rank: DDP must broadcast rank 0's.
    torch.manual_seed(100 + info.rank)
    teacher = mlp([8, 32, 3])
    student = mlp([8, 12, 3], dropout=0.1)
    pruning = StepMagnitudePruning([student[0]], final=0.5, start=1, end=8, every=1)
    loss = CombinedLoss([(1.0, KDLoss(2.0, 0.5)), (0.5, FeatureLoss(student, teacher, {"0": "0"}))])
    # The loss's projection is outside DDP: same start on every rank from here.
    torch.manual_seed(5)
    for p in loss.parameters():
        torch.nn.init.normal_(p)
    teacher.load_state_dict(mlp([8, 32, 3]).state_dict())
    optimizer = torch.optim.SGD(list(student.parameters()) + list(loss.parameters()), lr=0.05, momentum=0.9)
    rank_dir = os.path.join(out, f"rank{info.rank}")
    distiller = Distiller(teacher, student, loss, optimizer, pruning=pruning,
                          checkpoint_dir=os.path.join(rank_dir, "ckpt"), checkpoint_every=2,
                          log_path=os.path.join(rank_dir, "log.jsonl"), progress=True,
                          ddp_kwargs={"broadcast_buffers": True})
    history = distiller.fit(DataLoader(blobs(70, seed=3), batch_size=8, shuffle=True), epochs=2,
                            val_loader=DataLoader(blobs(21, seed=4), batch_size=4))
    weights = {f"student.{k}": v.contiguous() for k, v in student.state_dict().items()}
    weights.update({f"loss.{k}": v.contiguous() for k, v in loss.state_dict().items()})
    save_file(weights, os.path.join(out, f"weights-rank{info.rank}.safetensors"),
              metadata={"val_accuracy": repr(history[-1]["val_accuracy"]),
                        "steps": str(distiller.global_step)})
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
