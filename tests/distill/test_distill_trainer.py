"""Distiller: training behaviour, frozen teacher, bf16, clipping, logs,
in-process resume, and argument validation."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, SubsetRandomSampler

sys.path.insert(0, str(Path(__file__).parent))
from distill_standins import StepMagnitudePruning, blobs, mlp

from slimtorch.distill import CombinedLoss, Distiller, EmbeddingLoss, FeatureLoss, KDLoss, StepSchedule, accuracy
from slimtorch.distill.checkpoint import list_checkpoints


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    """A teacher trained with plain cross-entropy on the blobs."""
    torch.manual_seed(0)
    model = mlp([8, 32, 3])
    x, y = blobs(256, seed=10).tensors
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def _loaders(n_train: int = 96, batch: int = 16):
    return (DataLoader(blobs(n_train, seed=1), batch_size=batch, shuffle=True),
            DataLoader(blobs(48, seed=2), batch_size=16))


def _distiller(teacher, **kwargs):
    torch.manual_seed(1)
    student = mlp([8, 8, 3])
    loss = kwargs.pop("loss", KDLoss(2.0, 0.5))
    params = list(student.parameters()) + list(loss.parameters())
    optimizer = kwargs.pop("optimizer", None) or torch.optim.Adam(params, lr=0.02)
    return Distiller(copy.deepcopy(teacher), student, loss, optimizer, progress=False, **kwargs)


def test_distillation_reduces_loss_and_learns(teacher) -> None:
    train, val = _loaders()
    distiller = _distiller(teacher)
    before = distiller.evaluate(val)
    history = distiller.fit(train, epochs=4, val_loader=val)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    assert [r["step"] for r in history] == [6, 12, 18, 24]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["val_loss"] < 0.5 * before["val_loss"]
    assert history[-1]["val_accuracy"] >= 0.9 > before["val_accuracy"]


def test_teacher_frozen_and_in_eval_mode(teacher) -> None:
    train, val = _loaders()
    mutable = copy.deepcopy(teacher).train()
    mutable.append(nn.BatchNorm1d(3))  # running stats would move in train mode
    reference = copy.deepcopy(mutable.state_dict())
    student = mlp([8, 8, 3])
    distiller = Distiller(mutable, student, KDLoss(2.0, 0.0), torch.optim.SGD(student.parameters(), lr=0.1),
                          progress=False)
    distiller.fit(train, epochs=1, val_loader=val)
    assert not mutable.training and not any(m.training for m in mutable.modules())
    assert all(not p.requires_grad and p.grad is None for p in mutable.parameters())
    for key, value in mutable.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_bf16_autocast_path(teacher) -> None:
    seen = []

    class Recorder(nn.Module):
        def forward(self, x):
            seen.append((torch.is_autocast_enabled("cpu"), x.dtype))
            return x

    train, val = _loaders(32)
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), Recorder())
    distiller = Distiller(copy.deepcopy(teacher), student, KDLoss(2.0, 0.5),
                          torch.optim.Adam(student.parameters(), lr=0.02), bf16=True, progress=False)
    history = distiller.fit(train, epochs=2, val_loader=val)
    assert seen and all(enabled and dtype == torch.bfloat16 for enabled, dtype in seen)
    assert all(p.dtype == torch.float32 for p in student.parameters())  # master weights stay fp32
    assert history[-1]["train_loss"] < history[0]["train_loss"]


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_gradient_clipping(teacher, clip) -> None:
    train, _ = _loaders(16)
    torch.manual_seed(1)
    student = mlp([8, 8, 3])
    loss = FeatureLoss(student, teacher, {"0": "0"})  # its projection is clipped too
    params = list(student.parameters()) + list(loss.parameters())
    before = [p.detach().clone() for p in params]
    distiller = Distiller(copy.deepcopy(teacher), student, loss, torch.optim.SGD(params, lr=1.0),
                          clip_grad_norm=clip, progress=False)
    distiller.fit(train, epochs=1)  # one step of plain SGD with lr 1: the update is the gradient
    update = torch.cat([(p.detach() - b).flatten() for p, b in zip(params, before)]).norm().item()
    if clip is None:
        assert update > 0.01
    else:
        assert update == pytest.approx(clip, rel=1e-3)


def test_pruning_steps_after_optimizer_and_jsonl_log(teacher, tmp_path: Path) -> None:
    train, val = _loaders()
    torch.manual_seed(1)
    student = mlp([8, 8, 3])
    pruning = StepMagnitudePruning([student[0], student[2]], final=0.5, start=0, end=12, every=3)
    assert isinstance(pruning, StepSchedule)
    scheduler_optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(scheduler_optimizer, step_size=1, gamma=0.5)
    log = tmp_path / "logs" / "run.jsonl"
    distiller = Distiller(copy.deepcopy(teacher), student, KDLoss(2.0, 0.5), scheduler_optimizer,
                          scheduler=scheduler, pruning=pruning, log_path=log, progress=False)
    distiller.fit(train, epochs=3, val_loader=val)
    assert pruning.steps == 18  # once per optimizer step
    for layer in (student[0], student[2]):
        assert (layer.weight == 0).sum().item() == round(0.5 * layer.weight.numel())
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert [r["lr"] for r in records] == [0.1, 0.05, 0.025]  # the lr each epoch ran with
    assert records[-1]["sparsity"] == 0.5
    for record in records:
        assert {"epoch", "step", "train_loss", "lr", "val_loss", "val_accuracy", "sparsity"} <= record.keys()


def test_scheduler_per_step(teacher) -> None:
    train, _ = _loaders()
    student = mlp([8, 8, 3])
    optimizer = torch.optim.SGD(student.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    Distiller(copy.deepcopy(teacher), student, KDLoss(), optimizer, scheduler=scheduler,
              scheduler_interval="step", progress=False).fit(train, epochs=1)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1.0 / 7)


def test_custom_metrics_and_embedding_loss_without_targets(teacher) -> None:
    x = blobs(32, seed=1).tensors[0]
    train = DataLoader(x, batch_size=8, shuffle=False)  # batches are inputs only
    torch.manual_seed(1)
    student = mlp([8, 8, 3])
    loss = EmbeddingLoss("mse")
    distiller = Distiller(copy.deepcopy(teacher), student, loss, torch.optim.Adam(student.parameters(), lr=0.02),
                          metrics={"mean_output": lambda out, targets: out.mean()}, progress=False)
    history = distiller.fit(train, epochs=3, val_loader=DataLoader(x, batch_size=5))
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    with torch.no_grad():
        assert history[-1]["val_mean_output"] == pytest.approx(student(x).mean().item(), rel=1e-4)


def test_default_accuracy_metric_explains_non_classifiers(teacher) -> None:
    x = blobs(16, seed=1).tensors[0]
    student = mlp([8, 8, 3])
    distiller = Distiller(copy.deepcopy(teacher), student, EmbeddingLoss(),
                          torch.optim.SGD(student.parameters(), lr=0.1), progress=False)
    with pytest.raises(ValueError, match=r"metrics=\{\}|targets"):
        distiller.evaluate(DataLoader(x, batch_size=8))
    assert accuracy(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), torch.tensor([1, 1])) == 0.5


def test_in_process_crash_and_resume_matches_uninterrupted(teacher, tmp_path: Path) -> None:
    train, val = _loaders(80)  # 5 steps per epoch; checkpoints every 2 steps

    def make(checkpoint_dir, crash_at=None):
        torch.manual_seed(3)
        student = mlp([8, 8, 3], dropout=0.3)
        kd = KDLoss(2.0, 0.5)
        feature = FeatureLoss(student, teacher, {"0": "0"})
        calls = [0]

        class Crashing(CombinedLoss):
            def forward(self, *args):
                calls[0] += 1
                if crash_at is not None and calls[0] == crash_at:
                    raise KeyboardInterrupt("simulated crash")
                return super().forward(*args)

        loss = Crashing([(1.0, kd), (0.3, feature)])
        optimizer = torch.optim.AdamW(list(student.parameters()) + list(loss.parameters()), lr=0.01)
        return student, Distiller(copy.deepcopy(teacher), student, loss, optimizer,
                                  checkpoint_dir=checkpoint_dir, checkpoint_every=2, progress=False)

    ref_student, ref = make(tmp_path / "ref")
    ref_history = ref.fit(train, epochs=3, val_loader=val)

    _, crashing = make(tmp_path / "run", crash_at=8)  # step 8 = epoch 2, batch 3
    with pytest.raises(KeyboardInterrupt):
        crashing.fit(train, epochs=3, val_loader=val)
    student, resumed = make(tmp_path / "run")
    history = resumed.fit(train, epochs=3, val_loader=val, resume=True)
    assert resumed.global_step == 15
    for key, value in ref_student.state_dict().items():
        assert torch.equal(student.state_dict()[key], value), key
    assert history == ref_history


def test_resume_without_checkpoint_starts_fresh(teacher, tmp_path: Path) -> None:
    train, _ = _loaders(32)
    distiller = _distiller(teacher, checkpoint_dir=tmp_path / "none-yet")
    assert distiller.fit(train, epochs=1, resume=True)[0]["step"] == 2
    # Already complete: a second resume does no more training.
    again = _distiller(teacher, checkpoint_dir=tmp_path / "none-yet")
    assert again.fit(train, epochs=1, resume=True)[0]["step"] == 2 and again.global_step == 2
    other_seed = _distiller(teacher, checkpoint_dir=tmp_path / "none-yet", seed=5)
    with pytest.raises(ValueError, match="^seed"):
        other_seed.fit(train, epochs=2, resume=True)


def test_non_finite_loss_is_an_error(teacher) -> None:
    _train, _ = _loaders(32)
    bad = torch.utils.data.TensorDataset(torch.full((16, 8), float("nan")), torch.zeros(16, dtype=torch.long))
    distiller = _distiller(teacher)
    with pytest.raises(FloatingPointError, match="^loss"):
        distiller.fit(DataLoader(bad, batch_size=8), epochs=1)


def test_progress_bar_only_when_asked(teacher, capfd) -> None:
    train, _ = _loaders(32)
    _distiller(teacher).fit(train, epochs=1)  # progress=False
    assert "epoch 1/1" not in capfd.readouterr().err
    distiller = _distiller(teacher)
    distiller.progress = None  # auto: stderr is not a TTY under pytest
    distiller.fit(train, epochs=1)
    assert "epoch 1/1" not in capfd.readouterr().err
    distiller = _distiller(teacher)
    distiller.progress = True
    distiller.fit(train, epochs=1)
    assert "epoch 1/1" in capfd.readouterr().err
    distiller.rank = 1  # bars are never shown on other ranks, even when asked
    assert not distiller._show_progress()


class _Iterable(IterableDataset):
    def __iter__(self):
        return iter([])


class _Plain(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(8), 0


def test_bad_constructor_arguments(teacher) -> None:
    student = mlp([8, 8, 3])
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    t = copy.deepcopy(teacher)
    good = dict(teacher=t, student=student, loss=KDLoss(), optimizer=opt)
    cases = [
        ({"teacher": "x"}, TypeError, "teacher"),
        ({"student": None}, TypeError, "student"),
        ({"student": t}, ValueError, "student"),
        ({"loss": 3}, TypeError, "loss"),
        ({"optimizer": "sgd"}, TypeError, "optimizer"),
        ({"optimizer": torch.optim.SGD(t.parameters(), lr=0.1)}, ValueError, "optimizer"),
        ({"loss": FeatureLoss(student, t, {"0": "0"})}, ValueError, "optimizer"),
        ({"scheduler": object()}, TypeError, "scheduler"),
        ({"scheduler": torch.optim.lr_scheduler.StepLR(torch.optim.SGD(mlp([2, 2]).parameters(), lr=1), 1)},
         ValueError, "scheduler"),
        ({"scheduler_interval": "batch"}, ValueError, "scheduler_interval"),
        ({"pruning": object()}, TypeError, "pruning"),
        ({"metrics": [accuracy]}, TypeError, "metrics"),
        ({"metrics": {"acc": 1}}, TypeError, "metrics"),
        ({"metrics": {"": accuracy}}, ValueError, "metrics"),
        ({"metrics": {1: accuracy}}, TypeError, "metrics"),
        ({"bf16": 1}, TypeError, "bf16"),
        ({"clip_grad_norm": 0.0}, ValueError, "clip_grad_norm"),
        ({"clip_grad_norm": float("nan")}, ValueError, "clip_grad_norm"),
        ({"clip_grad_norm": "1"}, TypeError, "clip_grad_norm"),
        ({"checkpoint_dir": 5}, TypeError, "checkpoint_dir"),
        ({"checkpoint_every": 10}, ValueError, "checkpoint_every"),
        ({"checkpoint_dir": "d", "checkpoint_every": 0}, ValueError, "checkpoint_every"),
        ({"keep_checkpoints": 0}, ValueError, "keep_checkpoints"),
        ({"log_path": 1.5}, TypeError, "log_path"),
        ({"progress": "yes"}, TypeError, "progress"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 1.0}, TypeError, "seed"),
        ({"device": "nonsense"}, ValueError, "device"),
        ({"ddp_kwargs": ["find_unused_parameters"]}, TypeError, "ddp_kwargs"),
    ]
    for change, error, name in cases:
        with pytest.raises(error, match=f"^{name}"):
            Distiller(**{**good, **change})


def test_bad_fit_arguments(teacher) -> None:
    distiller = _distiller(teacher)
    train, _val = _loaders(32)
    dataset = blobs(32)
    cases = [
        ((dataset, 1), {}, TypeError, "train_loader"),
        ((DataLoader(_Iterable(), batch_size=2), 1), {}, ValueError, "train_loader"),
        ((DataLoader(dataset, batch_size=None), 1), {}, ValueError, "train_loader"),
        ((DataLoader(dataset, batch_size=4, sampler=SubsetRandomSampler(range(8))), 1), {}, ValueError,
         "train_loader"),
        ((train, 0), {}, ValueError, "epochs"),
        ((train, 1.5), {}, TypeError, "epochs"),
        ((train, 1, [1, 2]), {}, TypeError, "val_loader"),
        ((train, 1), {"resume": "yes"}, TypeError, "resume"),
        ((train, 1), {"resume": True}, ValueError, "resume"),
    ]
    for args, kwargs, error, name in cases:
        with pytest.raises(error, match=f"^{name}"):
            distiller.fit(*args, **kwargs)
    with pytest.raises(ValueError, match="^train_loader"):
        distiller.fit(DataLoader(_Plain(), batch_size=2, collate_fn=lambda b: (b, b, b)), 1)


def test_quantization_aware_student_trains_and_resumes(teacher, tmp_path: Path) -> None:
    """A QAT student (fake-quant modules with observer buffers) trains, and its
    observer state survives a checkpoint: 1 epoch + resume == 2 epochs."""
    from torch.ao.quantization import FakeQuantize

    train, val = _loaders(48)

    def make(directory):
        torch.manual_seed(4)
        student = nn.Sequential(FakeQuantize(), nn.Linear(8, 8), nn.ReLU(), FakeQuantize(), nn.Linear(8, 3))
        distiller = Distiller(copy.deepcopy(teacher), student, KDLoss(2.0, 0.5),
                              torch.optim.Adam(student.parameters(), lr=0.02),
                              checkpoint_dir=directory, progress=False)
        return student, distiller

    reference, distiller = make(tmp_path / "a")
    distiller.fit(train, epochs=2, val_loader=val)
    assert reference[0].scale.item() != 1.0  # the observers did run
    _, first = make(tmp_path / "b")
    first.fit(train, epochs=1, val_loader=val)
    student, second = make(tmp_path / "b")
    second.fit(train, epochs=2, val_loader=val, resume=True)
    for key, value in reference.state_dict().items():
        assert torch.equal(student.state_dict()[key], value), key


def test_fresh_run_refuses_a_directory_with_another_runs_checkpoints(teacher, tmp_path: Path) -> None:
    train, _ = _loaders(32)
    _distiller(teacher, checkpoint_dir=tmp_path).fit(train, epochs=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="^checkpoint_dir: .*already holds checkpoints .*step 4.*overwrite=True"):
        _distiller(teacher, checkpoint_dir=tmp_path).fit(train, epochs=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing deleted
    with pytest.raises(TypeError, match="^overwrite"):
        _distiller(teacher, checkpoint_dir=tmp_path).fit(train, epochs=1, overwrite=1)
    # The same Distiller may go on writing into its own directory.
    own = _distiller(teacher, checkpoint_dir=tmp_path / "own")
    own.fit(train, epochs=1)
    assert own.fit(train, epochs=2)[-1]["step"] == 4
    # Asked to overwrite, a fresh run replaces the old checkpoints.
    fresh = _distiller(teacher, checkpoint_dir=tmp_path)
    assert fresh.fit(train, epochs=1, overwrite=True)[-1]["step"] == 2
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2]


@pytest.mark.parametrize("damage", [
    lambda r: r["state"]["position"].pop("epoch"),
    lambda r: r["state"]["position"].update({"global_step": "four"}),
    lambda r: r["state"]["position"].update({"batch": -1}),
    lambda r: r["state"].pop("optimizer"),
    lambda r: r["state"]["rng"].update({"rank0": 3}),
    lambda r: r["state"].update({"history": {"epoch": 1}}),
])
def test_resume_skips_a_malformed_record_for_the_previous_checkpoint(teacher, tmp_path: Path, damage) -> None:
    train, _ = _loaders(32)
    _distiller(teacher, checkpoint_dir=tmp_path).fit(train, epochs=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 4]
    record_path = tmp_path / "step-00000004.json"
    record = json.loads(record_path.read_text())
    damage(record)
    record_path.write_text(json.dumps(record))
    resumed = _distiller(teacher, checkpoint_dir=tmp_path)
    with pytest.warns(RuntimeWarning, match="skipping damaged checkpoint: .*step-00000004"):
        assert resumed.resume().name == "step-00000002.json"
    assert resumed.global_step == 2 and resumed.epoch == 1


class _Encoder(nn.Module):
    """Takes keyword inputs only and returns an object with last_hidden_state,
    as a Hugging Face encoder does."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 8)
        self.mix = nn.Linear(8, 8)

    def forward(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        from types import SimpleNamespace

        hidden = self.mix(torch.tanh(self.embed(input_ids)))
        return SimpleNamespace(last_hidden_state=hidden * attention_mask.unsqueeze(-1))


def _token_batches(count: int, seed: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(count):
        length = int(torch.randint(2, 7, (1,), generator=g))
        mask = torch.zeros(6, dtype=torch.long)
        mask[:length] = 1
        samples.append({"input_ids": torch.randint(0, 20, (6,), generator=g) * mask, "attention_mask": mask})
    return samples


def test_mapping_batches_are_keyword_inputs_and_the_loss_sees_the_mask() -> None:
    import slimtorch
    from slimtorch.api.pruning import weight_mask

    torch.manual_seed(3)
    teacher, student = _Encoder(), _Encoder()
    slimtorch.prune_(student, 0.5, scope="row", filter_fn=lambda m, n: isinstance(m, nn.Linear))
    mask = weight_mask(student.mix).clone()
    seen = []
    metrics = {"tokens": lambda out, targets: seen.append(targets) or targets["attention_mask"].sum()}
    distiller = Distiller(teacher, student, EmbeddingLoss(pooling="mean"),
                          torch.optim.Adam(student.parameters(), lr=0.05), metrics=metrics, progress=False)
    train = DataLoader(_token_batches(32, seed=1), batch_size=8, shuffle=True)
    val = DataLoader(_token_batches(16, seed=2), batch_size=8)
    before = distiller.evaluate(val)
    history = distiller.fit(train, epochs=6, val_loader=val)
    assert history[-1]["val_loss"] < 0.5 * before["val_loss"]
    assert isinstance(seen[-1], dict) and set(seen[-1]) == {"input_ids", "attention_mask"}
    tokens = sum(int(s["attention_mask"].sum()) for s in _token_batches(16, seed=2))
    assert history[-1]["val_tokens"] == pytest.approx(tokens / 2)  # per-batch sums, sample-weighted over 2 batches
    # Distillation trains the pruned student without reviving a weight.
    assert torch.equal(weight_mask(student.mix), mask)
    assert bool((student.mix.weight[~mask] == 0).all())
