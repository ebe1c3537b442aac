"""Two CPU processes under torch.distributed.run (gloo): the ranks end with
identical weights, and only rank 0 writes checkpoints and logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

import slimtorch
from slimtorch.distill import load_checkpoint
from slimtorch.distill.checkpoint import list_checkpoints

SCRIPT = Path(__file__).with_name("ddp_script.py")
# The subprocesses import the same slimtorch as this process (source tree or installed).
PACKAGE_PARENT = Path(slimtorch.__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_two_ranks(script: Path, out: Path) -> subprocess.CompletedProcess:
    """``script OUT`` under torch.distributed.run on 2 CPU processes; must exit 0."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
         "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(out)],
        env=env, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-3000:]
    return result


def test_two_process_ddp_identical_weights_rank0_writes(tmp_path: Path) -> None:
    result = _run_two_ranks(SCRIPT, tmp_path)

    rank0 = load_file(tmp_path / "weights-rank0.safetensors")
    rank1 = load_file(tmp_path / "weights-rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # 70 samples over 2 ranks, padded to 35 each, batches of 8: 5 steps per epoch.
    accuracies = []
    for rank in (0, 1):
        with safe_open(tmp_path / f"weights-rank{rank}.safetensors", "pt") as f:
            assert f.metadata()["steps"] == "10"
            accuracies.append(float(f.metadata()["val_accuracy"]))

    # Only rank 0 wrote: rank 1's paths were never created.
    assert not (tmp_path / "rank1").exists()
    log = [json.loads(line) for line in (tmp_path / "rank0" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    # Validation is sharded (11 + 10 of 21 samples) and reduced: every rank
    # gets the same whole-set accuracy, a multiple of 1/21.
    assert accuracies[0] == accuracies[1] == log[-1]["val_accuracy"]
    assert abs(accuracies[0] * 21 - round(accuracies[0] * 21)) < 1e-9
    found = list_checkpoints(tmp_path / "rank0" / "ckpt")
    assert [step for step, _ in found] == [8, 10]
    final = load_checkpoint(found[-1][1])
    assert set(final["rng"]) == {"rank0", "rank1"}
    for key in rank0:
        if key.startswith("student."):
            assert torch.equal(final["model"][key.removeprefix("student.")], rank0[key]), key
    # tqdm ran on rank 0 only (stderr is not a TTY here but progress=True forces it).
    assert result.stderr.decode().count("epoch 2/2") >= 1


RESUME_SCRIPT = Path(__file__).with_name("ddp_resume_script.py")


def test_two_process_resume_skips_a_damaged_newest_checkpoint_on_every_rank(tmp_path: Path) -> None:
    result = _run_two_ranks(RESUME_SCRIPT, tmp_path)
    found = list_checkpoints(tmp_path / "ckpt")
    previous_step, previous_path = found[-2]
    metadata = []
    for rank in (0, 1):
        with safe_open(tmp_path / f"weights-rank{rank}.safetensors", "pt") as f:
            metadata.append(f.metadata())
    # Both ranks resumed the previous complete checkpoint, not the damaged newest one.
    assert [m["resumed"] for m in metadata] == [previous_path.name] * 2
    assert [m["step"] for m in metadata] == [str(previous_step)] * 2
    rank0 = load_file(tmp_path / "weights-rank0.safetensors")
    rank1 = load_file(tmp_path / "weights-rank1.safetensors")
    saved = load_checkpoint(previous_path)["model"]
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]) and torch.equal(rank0[key], saved[key]), key
    assert b"skipping" in result.stderr.lower() or b"skip" in result.stderr.lower()
