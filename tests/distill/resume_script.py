"""Training run used by test_distill_resume.py (run in a subprocess).

usage: resume_script.py WORK_DIR [--resume] [--slow SECONDS]

Distils a small MLP student with dropout (so RNG restore matters), Adam (so
optimizer state matters), a per-epoch StepLR, a pruning schedule with masks and
a FeatureLoss projection (so loss parameters matter), writing a checkpoint
every 3 steps (8 steps per epoch), then saves the final student and loss
weights to WORK_DIR/final.safetensors.
"""

import argparse
import os
import sys
import time

import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from distill_standins import StepMagnitudePruning, blobs, mlp

from slimtorch.distill import CombinedLoss, Distiller, FeatureLoss, KDLoss


class SlowDataset(torch.utils.data.Dataset):
    def __init__(self, base, delay):
        self.base, self.delay = base, delay

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        if self.delay and index % 16 == 0:
            time.sleep(self.delay)
        return self.base[index]


def run(work_dir: str, resume: bool = False, slow: float = 0.0) -> None:
    """The whole run; the test also calls it in-process (single-threaded) as the
    uninterrupted reference."""
    args = argparse.Namespace(work_dir=work_dir, resume=resume, slow=slow)
    torch.manual_seed(1234)
    teacher = mlp([8, 32, 3])
    student = mlp([8, 12, 3], dropout=0.2)
    pruning = StepMagnitudePruning([student[0], student[3]], final=0.6, start=2, end=30, every=2)
    loss = CombinedLoss([(1.0, KDLoss(2.0, 0.3)), (0.5, FeatureLoss(student, teacher, {"0": "0"}))])
    optimizer = torch.optim.Adam(list(student.parameters()) + list(loss.parameters()), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    train = SlowDataset(blobs(128, seed=1), args.slow)  # 128 / 16 = 8 steps per epoch
    distiller = Distiller(teacher, student, loss, optimizer, scheduler=scheduler, pruning=pruning,
                          checkpoint_dir=os.path.join(args.work_dir, "ckpt"), checkpoint_every=3,
                          keep_checkpoints=3, log_path=os.path.join(args.work_dir, "log.jsonl"),
                          progress=False, seed=7)
    distiller.fit(DataLoader(train, batch_size=16, shuffle=True), epochs=4,
                  val_loader=DataLoader(blobs(32, seed=2), batch_size=16), resume=args.resume)
    weights = {f"student.{k}": v.contiguous() for k, v in student.state_dict().items()}
    weights.update({f"loss.{k}": v.contiguous() for k, v in loss.state_dict().items()})
    save_file(weights, os.path.join(args.work_dir, "final.safetensors"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("work_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--slow", type=float, default=0.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(args.work_dir, args.resume, args.slow)


if __name__ == "__main__":
    main()
