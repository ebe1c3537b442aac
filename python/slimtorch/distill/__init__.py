"""Knowledge distillation: losses, the :class:`Distiller` trainer, resumable
safetensors + JSON checkpoints, and DDP helpers.

A minimal run::

    loss = KDLoss(temperature=4.0, alpha=0.5)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    Distiller(teacher, student, loss, optimizer, checkpoint_dir="ckpt",
              log_path="ckpt/log.jsonl").fit(train_loader, epochs=5, val_loader=val_loader,
                                             resume=True)

The same script runs under ``torchrun --nproc_per_node=N script.py`` when it
calls :func:`slimtorch.distill.distributed.init_distributed` before building
the ``Distiller`` (gloo on CPU, nccl on CUDA; rank 0 writes the files).
Checkpoints are safetensors + JSON and never unpickled; see
:mod:`slimtorch.distill.checkpoint` for the format and the corruption policy.
"""

from slimtorch.distill import distributed
from slimtorch.distill.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from slimtorch.distill.losses import CombinedLoss, EmbeddingLoss, FeatureLoss, KDLoss
from slimtorch.distill.trainer import Distiller, StepSchedule, accuracy

__all__ = [
    "KDLoss",
    "FeatureLoss",
    "EmbeddingLoss",
    "CombinedLoss",
    "Distiller",
    "StepSchedule",
    "accuracy",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "distributed",
]
