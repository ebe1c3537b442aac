"""`slimtorch demo`'s pipeline with tiny settings (seconds): every file is
written, the saved int8 student loads back into kernel layers that give the
accuracy the table reports, and pruning reaches the requested sparsity."""

from __future__ import annotations

import os

import pytest
import torch

import slimtorch
from slimtorch import cli, demo
from slimtorch.nn import SparseLinear


@pytest.fixture(scope="module")
def data():
    return demo.load_digits_data(seed=0)


def test_prune_student_reaches_sparsity(data):
    torch.manual_seed(0)
    dense = demo.student_lenet()
    teacher = demo.teacher_mlp(hidden=(32,))
    for t in (teacher, None):
        pruned, curve = demo.prune_student(dense, t, data, final_sparsity=0.9, epochs=2, seed=0)
        assert len(curve) == 2 and curve[-1][0] == 0.9 and curve[0][0] < 0.9
        weights = [m.weight for m in pruned if isinstance(m, torch.nn.Linear)]
        zeros = sum(int((w == 0).sum()) for w in weights)
        assert zeros == round(0.9 * sum(w.numel() for w in weights))
        assert all(0 <= acc <= 1 for _, acc in curve)
    assert all(torch.count_nonzero(m.weight) == m.weight.numel() for m in dense if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match="^epochs"):
        demo.prune_student(dense, None, data, final_sparsity=0.9, epochs=0)


def test_to_kernel_layers_swaps_every_linear(data):
    torch.manual_seed(0)
    model = demo.student_lenet()
    slimtorch.prune_(model, 0.9)
    x = data.test.tensors[0][:7]
    want = model(x)
    demo.to_kernel_layers(model, torch.float32)
    assert [type(m) for m in model if not isinstance(m, torch.nn.ReLU)] == [SparseLinear] * 3
    torch.testing.assert_close(model(x), want, rtol=1e-5, atol=1e-5)


def test_to_kernel_layers_rounds_biases(data):
    torch.manual_seed(0)
    model = demo.student_lenet()
    biases = [model[i].bias.detach().clone() for i in (0, 2, 4)]
    demo.to_kernel_layers(model, torch.int8, bias_dtype=torch.bfloat16)
    for i, bias in zip((0, 2, 4), biases):
        assert torch.equal(model[i].bias, bias.bfloat16().float()) and model[i].bias.dtype == torch.float32
    with pytest.raises(TypeError, match="^bias_dtype"):
        demo.to_kernel_layers(demo.student_lenet(), bias_dtype=torch.int8)


def test_quick_demo_end_to_end(tmp_path, capsys, threads):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for row in ("dense student (fp32)", "pruned student (sparse fp32)", "pruned + int8 (kernel layers)",
                "with distillation", "hard labels only"):
        assert row in printed
    names = {"dense_student.safetensors", "student_sparse_fp32.safetensors.xz", "student_int8.safetensors.xz",
             "accuracy_vs_sparsity.png"}
    assert names <= set(os.listdir(out))
    assert (out / "accuracy_vs_sparsity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the int8 file loads into kernel layers of a fresh student; the table's accuracy is theirs
    loaded = slimtorch.load_(demo.student_lenet(), out / "student_int8.safetensors.xz")
    assert all(isinstance(loaded[i], SparseLinear) and loaded[i].values.dtype == torch.int8 for i in (0, 2, 4))
    accuracy = demo.evaluate_accuracy(loaded, demo.load_digits_data(seed=0).test_loader)
    assert f"{100 * accuracy:.2f}%" in next(line for line in printed.splitlines() if "int8 (kernel" in line)
    dense_bytes = os.path.getsize(out / "dense_student.safetensors")
    assert 50_610 * 4 < dense_bytes < 50_610 * 4 + 1024
    assert os.path.getsize(out / "student_int8.safetensors.xz") < dense_bytes / 8
    assert (out / "student_int8.safetensors.xz").read_bytes()[:6] == b"\xfd7zXZ\x00"
    # biases rounded to float16 precision, so the file stores them as float16
    assert all(torch.equal(loaded[i].bias, loaded[i].bias.half().float()) for i in (0, 2, 4))


def test_run_demo_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="^out_dir"):
        demo.run_demo(3)
    with pytest.raises(ValueError, match="^final_sparsity"):
        demo.run_demo(str(tmp_path), final_sparsity=1.5)
    with pytest.raises(ValueError, match="^seeds"):
        demo.run_demo(str(tmp_path), seeds=0)


def test_random_shift_moves_every_pixel_by_one_offset():
    x = torch.arange(1, 65, dtype=torch.float32).reshape(1, 64).repeat(3, 1)
    for seed in range(20):
        shifted = demo.random_shift(x, torch.Generator().manual_seed(seed)).reshape(3, 8, 8)
        image = x.reshape(3, 8, 8)
        # Find the offset from where pixel (3, 3) went; every other pixel must agree.
        (dy, dx), = [(r - 3, c - 3) for r in range(8) for c in range(8) if shifted[0, r, c] == image[0, 3, 3]]
        assert -1 <= dy <= 1 and -1 <= dx <= 1
        for r in range(8):
            for c in range(8):
                inside = 0 <= r - dy < 8 and 0 <= c - dx < 8
                expected = image[:, r - dy, c - dx] if inside else torch.zeros(3)
                assert torch.equal(shifted[:, r, c], expected)


def test_train_classifier_depends_only_on_its_seed(data):
    def train() -> torch.Tensor:
        torch.manual_seed(123)
        model = demo.train_classifier(demo.student_lenet(), data.train_loader, epochs=1, seed=3, augment=True)
        return model[0].weight.detach().clone()

    first = train()
    next(iter(data.train_loader))  # consumes the shared loader's generator
    assert torch.equal(first, train())
