"""The `slimtorch` command: --help of every command, `inspect` on good and bad
files (exit code 2, one line, no traceback), `bench` argument handling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import slimtorch
from slimtorch import cli
from slimtorch.benchmark import SUITES
from slimtorch.nn import SparseLinear

COMMANDS = ["demo", "bench", "inspect", "info"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: slimtorch {command}")


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(command in out for command in COMMANDS)


def test_info(capsys):
    assert cli.main(["info"]) == 0
    assert "version" in capsys.readouterr().out


def _saved_model(tmp_path: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))
    model[0] = SparseLinear.from_dense(model[0], sparsity=0.95, values_dtype=torch.int8)
    model[2] = SparseLinear.from_dense(model[2], sparsity=0.9)
    slimtorch.prune_(model[4], 0.5)  # a pruned dense layer
    path = tmp_path / "model.safetensors"
    slimtorch.save(model, path)
    return path, model


def test_inspect_saved_model(tmp_path, capsys):
    path, model = _saved_model(tmp_path)
    assert cli.main(["inspect", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert rows["0"][1:4] == ["sparse_int8", "300x64", "95.0%"]
    assert rows["2"][1:4] == ["sparse", "100x300", "90.0%"]
    assert rows["4"][1:4] == ["pruned", "10x100", "50.0%"]
    with safetensors.safe_open(path, "pt") as f:
        # safe_open is not iterable: only .keys() lists the tensors
        data_bytes = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size() for k in f.keys())  # noqa: SIM118
    per_layer = sum(int(row[-1].replace(",", "")) for row in rows.values())
    assert per_layer == data_bytes
    assert lines[-1].endswith(f"= {os.path.getsize(path):,d} bytes on disk")
    assert f"{data_bytes:,d} bytes of tensor data" in lines[-1]
    packed = tmp_path / "model.safetensors.xz"
    slimtorch.save(model, packed, compress=True)
    assert cli.main(["inspect", str(packed)]) == 0
    compressed_lines = capsys.readouterr().out.splitlines()
    assert compressed_lines[1:-1] == lines[1:-1]  # the same per-layer rows
    assert compressed_lines[-1] == (lines[-1].removesuffix(" on disk")
                                    + f", xz-compressed to {os.path.getsize(packed):,d} bytes on disk")
    (tmp_path / "cut.xz").write_bytes(packed.read_bytes()[:30])
    assert "truncated" in _one_line_error(capsys, ["inspect", str(tmp_path / "cut.xz")])


def _one_line_error(capsys, argv) -> str:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_inspect_bad_files(tmp_path, capsys):
    path, _ = _saved_model(tmp_path)
    data = path.read_bytes()
    cases = {
        "missing.safetensors": None,
        "empty.bin": b"",
        "short.bin": b"abc",
        "truncated.safetensors": data[: 8 + 10],
        "garbage.bin": os.urandom(200),
        "badjson.safetensors": data[:8] + b"}" + data[9:],
        "lying.safetensors": (2**40).to_bytes(8, "little") + data[8:],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        message = _one_line_error(capsys, ["inspect", str(tmp_path / name)])
        assert message.startswith("slimtorch: error: inspect: ") and name in message
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(3)}, plain)
    assert "not one written by slimtorch.save" in _one_line_error(capsys, ["inspect", str(plain)])
    # a tensor entry pointing past the data
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + header_len])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"] = [0, 10**9]
    text = json.dumps(header).encode()
    bad = tmp_path / "offsets.safetensors"
    bad.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + header_len:])
    assert "corrupt" in _one_line_error(capsys, ["inspect", str(bad)])


def test_inspect_runs_as_a_process(tmp_path):
    """The installed entry point's path: `python -m slimtorch.cli`, exit code 2 on a bad file."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-m", "slimtorch.cli", "inspect", str(tmp_path / "nope")],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr and "cannot read" in result.stderr


REPOSITORY = Path(__file__).resolve().parents[1]


def test_bench_runs_the_checkout_suites(capsys, monkeypatch, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["bench", "gpu"])
    assert exit_info.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert all((REPOSITORY / "benchmarks" / f"bench_{suite}.py").is_file() for suite in SUITES)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda command, cwd: calls.append((command, cwd)) or
                        subprocess.CompletedProcess(command, 0))
    assert cli.main(["bench", "--source", str(REPOSITORY), "--quick", "--out", str(tmp_path)]) == 0
    (command, cwd), = calls
    assert cwd == REPOSITORY and command[1:3] == ["-m", "benchmarks"]
    assert command[3:] == [*(s for s in SUITES if s != "break_even"), "--quick", "--results", str(tmp_path)]
    assert cli.main(["bench", "break_even", "--source", str(REPOSITORY)]) == 0
    assert calls[-1][0][3:] == ["break_even"]
    capsys.readouterr()
    monkeypatch.setattr(subprocess, "run", lambda command, cwd: subprocess.CompletedProcess(command, 1))
    assert cli.main(["bench", "qgemm", "--source", str(REPOSITORY)]) == 2
    assert "the benchmarks failed" in capsys.readouterr().err
    assert "source checkout" in _one_line_error(capsys, ["bench", "qgemm", "--source", str(tmp_path)])
    monkeypatch.setitem(sys.modules, "pytest_benchmark", None)  # as if not installed
    assert "pip install" in _one_line_error(capsys, ["bench", "spmm"])


def test_demo_passes_its_arguments(monkeypatch, tmp_path, capsys):
    from slimtorch import demo

    seen = {}

    class Result:
        files = {"plot": "p.png"}

        def table(self):
            return "table"

    monkeypatch.setattr(demo, "run_demo", lambda out, **kwargs: seen.update(out=out, **kwargs) or Result())
    previous = torch.get_num_threads()
    try:
        assert cli.main(["demo", "--out", str(tmp_path), "--sparsity", "0.8", "--alpha", "0.25",
                         "--temperature", "3", "--seeds", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    assert seen == {"out": str(tmp_path), "final_sparsity": 0.8, "temperature": 3.0, "alpha": 0.25, "seeds": 2}
    assert "table" in capsys.readouterr().out


@pytest.mark.parametrize("missing", ["sklearn", "matplotlib"])
def test_demo_without_the_extra_says_how_to_install_it(missing, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed
    message = _one_line_error(capsys, ["demo", "--out", str(tmp_path)])
    assert "pip install 'slimtorch[demo]'" in message and missing in message
    assert not (tmp_path / "dense_student.safetensors").exists()


@pytest.mark.parametrize("bad", [["--sparsity", "1.5"], ["--alpha", "-0.1"], ["--temperature", "0"],
                                 ["--seeds", "0"], ["--threads", "0"]])
def test_demo_rejects_out_of_range_arguments(bad, capsys, tmp_path):
    message = _one_line_error(capsys, ["demo", "--out", str(tmp_path), *bad])
    assert bad[0] in message
