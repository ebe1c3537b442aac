"""Exact resume: a run killed (SIGKILL) after a mid-epoch checkpoint and
resumed ends with the same weights, bit for bit, as a run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

import slimtorch
from slimtorch.distill import load_checkpoint
from slimtorch.distill.checkpoint import list_checkpoints

SCRIPT = Path(__file__).with_name("resume_script.py")
# The subprocesses import the same slimtorch as this process (source tree or installed).
PACKAGE_PARENT = Path(slimtorch.__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_PARENT), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _start(work: Path, *args: str) -> subprocess.Popen:
    work.mkdir()
    return subprocess.Popen([sys.executable, str(SCRIPT), str(work), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _run_in_process(work: Path) -> None:
    """The uninterrupted reference, in this process (saves a process start):
    single-threaded like the subprocesses, so the arithmetic is the same."""
    work.mkdir()
    sys.path.insert(0, str(SCRIPT.parent))
    threads = torch.get_num_threads()
    try:
        import resume_script

        torch.set_num_threads(1)
        with torch.random.fork_rng():
            resume_script.run(str(work))
    finally:
        torch.set_num_threads(threads)
        sys.path.remove(str(SCRIPT.parent))


def test_killed_mid_epoch_resumes_bit_exact(tmp_path: Path) -> None:
    victim = _start(tmp_path / "killed", "--slow", "0.05")
    _run_in_process(tmp_path / "uninterrupted")
    ckpt = tmp_path / "killed" / "ckpt"
    # Checkpoints come every 3 steps (8 steps per epoch): steps 9..15 are in
    # the middle of epoch 2. Kill as soon as step 9's commit record shows up.
    deadline = time.monotonic() + 90
    while not (ckpt / "step-00000009.json").exists():
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint at step 9"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    # Every committed checkpoint left behind by the kill is complete.
    found = list_checkpoints(ckpt)
    assert found
    positions = [load_checkpoint(path)["position"] for _, path in found]
    latest = positions[-1]
    assert 9 <= latest["global_step"] < 16 and latest["batch"] > 0, latest
    assert not (tmp_path / "killed" / "final.safetensors").exists()

    resumed = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "killed"), "--resume"],
                             env=_env(), capture_output=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout.decode() + resumed.stderr.decode()

    expected = load_file(tmp_path / "uninterrupted" / "final.safetensors")
    actual = load_file(tmp_path / "killed" / "final.safetensors")
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    # The pruning masks were really in play, and the log has one line per epoch.
    assert (expected["student.0.parametrizations.weight.0.mask"] == 0).any()
    log = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    reference_log = [json.loads(line) for line in
                     (tmp_path / "uninterrupted" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    assert log == reference_log
    # No temporary files are left in the checkpoint directory.
    assert not [p for p in ckpt.iterdir() if p.name.endswith(".tmp")]
