"""The data/training part of the demo: a deterministic digits split, a teacher
trained with cross-entropy, a LeNet-300-100-shaped student distilled from it."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")

from slimtorch import demo


def test_split_is_deterministic_disjoint_and_complete() -> None:
    a, b = demo.load_digits_data(seed=0), demo.load_digits_data(seed=0)
    sizes = [len(a.train), len(a.val), len(a.test)]
    assert sum(sizes) == 1797 and sizes == [1077, 360, 360]
    for split_a, split_b in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(split_a.tensors[0], split_b.tensors[0])
    rows = {tuple(r) for s in (a.train, a.val, a.test) for r in s.tensors[0].mul(16).round().int().tolist()}
    assert len(rows) > 1700  # (the digits set has a few duplicate images)
    assert a.train.tensors[0].min() >= 0.0 and a.train.tensors[0].max() <= 1.0
    # stratified: every class in every split
    for split in (a.train, a.val, a.test):
        assert set(split.tensors[1].tolist()) == set(range(10))
    other = demo.load_digits_data(seed=1)
    assert not torch.equal(other.test.tensors[0], a.test.tensors[0])


def test_teacher_and_distilled_student_learn() -> None:
    data = demo.load_digits_data(seed=0)
    torch.manual_seed(0)
    teacher = demo.train_classifier(demo.teacher_mlp(hidden=(128,)), data.train_loader, epochs=8, lr=3e-3)
    assert not teacher.training
    teacher_accuracy = demo.evaluate_accuracy(teacher, data.test_loader)
    assert teacher_accuracy > 0.9
    student = demo.student_lenet()
    assert [m.out_features for m in student if isinstance(m, torch.nn.Linear)] == [300, 100, 10]
    history = demo.distill_student(teacher, student, data, epochs=6, lr=3e-3, progress=False)
    assert len(history) == 6 and history[-1]["val_accuracy"] > 0.85
    assert demo.evaluate_accuracy(student, data.test_loader) > 0.85


def test_demo_bad_arguments() -> None:
    with pytest.raises(ValueError, match="^batch_size"):
        demo.load_digits_data(batch_size=0)
    with pytest.raises(ValueError, match="^test_fraction"):
        demo.load_digits_data(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ValueError, match="^seed"):
        demo.load_digits_data(seed=-1)
    with pytest.raises(TypeError, match="^model"):
        demo.train_classifier("m", demo.load_digits_data().train_loader)
    with pytest.raises(ValueError, match="^epochs"):
        demo.train_classifier(demo.student_lenet(), demo.load_digits_data().train_loader, epochs=0)
    with pytest.raises(TypeError, match="^data"):
        demo.distill_student(demo.teacher_mlp(), demo.student_lenet(), None)
