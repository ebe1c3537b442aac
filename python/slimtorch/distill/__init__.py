"""Knowledge distillation: losses, the :class:`Distiller` trainer, resumable
safetensors + JSON checkpoints, and DDP helpers.

A minimal run::

    loss = KDLoss(temperature=4.0, alpha=0.5)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)
    Distiller(teacher, student, loss, optimizer, checkpoint_dir="ckpt",
              log_path="ckpt/log.jsonl").fit(train_loader, epochs=5, val_loader=val_loader,
                                             resume=True)
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
