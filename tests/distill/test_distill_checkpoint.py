"""safetensors + JSON checkpoints: exact round trips, atomic writes, and
damaged files rejected with a clear error."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from slimtorch._io import atomic_write, atomic_write_bytes, atomic_write_json
from slimtorch.distill import CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from slimtorch.distill.checkpoint import decode_state, encode_state, list_checkpoints


def _state() -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    shared = torch.arange(6.0)
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "misc": {"ints": [1, -2, 2**40], "inf": float("inf"), "nan": float("nan"), "none": None,
                 "tuple": (1, "a", (2.5,)), "bool": True, "a/b": 3,
                 "bf16": torch.ones(2, dtype=torch.bfloat16), "scalar": torch.tensor(7),
                 "empty": torch.zeros(0, 3), "view": shared[2:4], "again": shared,
                 "strided": torch.arange(12).reshape(3, 4).t()},
    }


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return type(a) is type(b) and a == b


def test_encode_decode_round_trip_exact() -> None:
    state = _state()
    tree, tensors = encode_state(state)
    json.dumps(tree, allow_nan=False)  # strict JSON
    assert "optimizer/state/0/exp_avg" in tensors
    assert _equal(decode_state(tree, tensors), state)


def test_encode_rejects_unknown_types() -> None:
    with pytest.raises(TypeError, match="^state: a/1"):
        encode_state({"a": [1, object()]})
    with pytest.raises(TypeError, match="key of type"):
        encode_state({"a": {(1, 2): 3}})


def test_save_load_round_trip_and_optimizer_reload(tmp_path: Path) -> None:
    state = _state()
    path = save_checkpoint(tmp_path, 12, state)
    assert path.name == "step-00000012.json"
    loaded = load_checkpoint(path)
    assert _equal(loaded, state)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters())
    optimizer.load_state_dict(loaded["optimizer"])  # the decoded form is what torch expects
    assert optimizer.param_groups[0]["betas"] == (0.8, 0.9)
    # The JSON references tensors by key; the tensor file is plain safetensors.
    record = json.loads(path.read_text())
    assert record["tensors_file"] == "step-00000012.safetensors"
    assert record["state"]["model"]["weight"] == {"__slimtorch__": "tensor", "key": "model/weight"}
    with safe_open(tmp_path / "step-00000012.safetensors", "pt") as f:
        assert torch.equal(f.get_tensor("model/weight"), state["model"]["weight"])


def test_keep_prunes_old_checkpoints_and_stray_files(tmp_path: Path) -> None:
    (tmp_path / ".step-00000001.safetensors.abc.tmp").write_bytes(b"partial")
    (tmp_path / "step-00000002.safetensors").write_bytes(b"orphan")  # commit record never written
    for step in (3, 5, 9):
        save_checkpoint(tmp_path, step, {"x": torch.tensor([step])}, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "step-00000005.json", "step-00000005.safetensors",
        "step-00000009.json", "step-00000009.safetensors"]


def _damage_cases():
    def truncate_tensors(d: Path) -> None:
        f = d / "step-00000002.safetensors"
        f.write_bytes(f.read_bytes()[:-5])

    def flip_tensor_byte(d: Path) -> None:
        f = d / "step-00000002.safetensors"
        data = bytearray(f.read_bytes())
        data[-1] ^= 0xFF
        f.write_bytes(bytes(data))

    def truncate_json(d: Path) -> None:
        f = d / "step-00000002.json"
        f.write_bytes(f.read_bytes()[:40])

    def delete_tensors(d: Path) -> None:
        (d / "step-00000002.safetensors").unlink()

    def foreign_json(d: Path) -> None:
        (d / "step-00000002.json").write_text('{"format": "other"}')

    return [(truncate_tensors, "expected"), (flip_tensor_byte, "SHA-256"),
            (truncate_json, "not valid JSON"), (delete_tensors, "cannot read its tensor file"),
            (foreign_json, "not a slimtorch.checkpoint")]


@pytest.mark.parametrize("damage, message", _damage_cases(), ids=lambda c: getattr(c, "__name__", ""))
def test_damaged_checkpoint_rejected_and_resume_falls_back(tmp_path: Path, damage, message) -> None:
    save_checkpoint(tmp_path, 1, {"w": torch.tensor([1.0])}, keep=None)
    save_checkpoint(tmp_path, 2, {"w": torch.tensor([2.0])}, keep=None)
    damage(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tmp_path / "step-00000002.json")
    # The newest complete checkpoint is used, with a warning naming the bad one.
    with pytest.warns(RuntimeWarning, match="step-00000002"):
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "step-00000001.json" and state["w"].item() == 1.0


def test_no_complete_checkpoint_is_an_error(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path) is None
    assert latest_checkpoint(tmp_path / "missing") is None
    (tmp_path / "step-00000004.json").write_text("{")
    with pytest.warns(RuntimeWarning), pytest.raises(CheckpointError, match="no complete checkpoint"):
        latest_checkpoint(tmp_path)


def test_atomic_write_failure_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def fails(handle) -> None:
        handle.write(b"new but partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_atomic_write_never_shows_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    seen = []

    def write(handle) -> None:
        handle.write(b'{"a": ')
        seen.append(target.exists())  # mid-write: the target is not there yet
        handle.write(b"1}")

    atomic_write(target, write)
    assert seen == [False] and json.loads(target.read_text()) == {"a": 1}
    atomic_write_json(target, {"b": [1, 2]})
    assert json.loads(target.read_text()) == {"b": [1, 2]}
    with pytest.raises(ValueError):
        atomic_write_json(target, {"x": float("nan")})  # strict JSON only
    assert json.loads(target.read_text()) == {"b": [1, 2]}


def test_atomic_write_permissions_follow_umask_or_existing_file(tmp_path: Path) -> None:
    previous = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "new.bin", b"x")  # a new file: 0666 less the umask, not mkstemp's 0600
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o640
        os.chmod(tmp_path / "new.bin", 0o604)
        atomic_write_bytes(tmp_path / "new.bin", b"y")  # a replaced file keeps its permissions
        assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o604
    finally:
        os.umask(previous)


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^step"):
        save_checkpoint(tmp_path, -1, {})
    with pytest.raises(ValueError, match="^keep"):
        save_checkpoint(tmp_path, 1, {}, keep=0)
    with pytest.raises(TypeError, match="^state"):
        save_checkpoint(tmp_path, 1, [1])
    with pytest.raises(TypeError, match="^directory"):
        save_checkpoint(3, 1, {})
    with pytest.raises(TypeError, match="^path"):
        atomic_write(3, lambda f: None)
    with pytest.raises(TypeError, match="^write_fn"):
        atomic_write(tmp_path / "x", None)
    with pytest.raises(ValueError, match="^path"):
        atomic_write(tmp_path / "no" / "x", lambda f: None)
    with pytest.raises(TypeError, match="^data"):
        atomic_write_bytes(tmp_path / "x", "text")
    assert list_checkpoints(tmp_path) == []


@pytest.mark.parametrize("keep, expected", [(1, [6]), (2, [4, 6]), (None, [2, 4, 6])])
def test_rewound_run_drops_later_checkpoints(tmp_path: Path, keep, expected) -> None:
    """After resuming from step 4 (say step 8 was damaged), the next save at
    step 6 replaces the abandoned steps 8 and 10 rather than hiding behind them."""
    for step in (2, 4, 8, 10):
        save_checkpoint(tmp_path, step, {"s": torch.tensor(step)}, keep=None)
    save_checkpoint(tmp_path, 6, {"s": torch.tensor(6)}, keep=keep)
    assert [s for s, _ in list_checkpoints(tmp_path)] == expected
    assert latest_checkpoint(tmp_path)[1]["s"].item() == 6


def test_atomic_write_never_touches_the_umask(tmp_path: Path, monkeypatch) -> None:
    """The umask is process-wide: changing it, even briefly, gives files other
    threads create meanwhile the wrong permissions."""
    def forbidden(mask):
        raise AssertionError("os.umask called")

    previous = os.umask(0o027)
    os.umask(previous)
    monkeypatch.setattr(os, "umask", forbidden)
    atomic_write_bytes(tmp_path / "new.bin", b"x")
    assert (tmp_path / "new.bin").stat().st_mode & 0o777 == 0o666 & ~previous
    atomic_write_json(tmp_path / "new.json", {"a": 1})
    assert json.loads((tmp_path / "new.json").read_text()) == {"a": 1}


def test_resaving_a_step_always_leaves_a_complete_checkpoint(tmp_path: Path, monkeypatch) -> None:
    import slimtorch.distill.checkpoint as checkpoint

    save_checkpoint(tmp_path, 4, {"w": torch.tensor([1.0])})
    # Crash after the new tensor file, before the new record: the old checkpoint is intact.
    real_write_json = checkpoint.atomic_write_json

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(checkpoint, "atomic_write_json", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, {"w": torch.tensor([2.0])})
    assert load_checkpoint(tmp_path / "step-00000004.json")["w"].item() == 1.0
    # Crash after the new record, before the old tensor file is removed: the new one is complete.
    monkeypatch.setattr(checkpoint, "atomic_write_json", real_write_json)
    monkeypatch.setattr(checkpoint, "_remove_old", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, 4, {"w": torch.tensor([3.0])})
    assert load_checkpoint(tmp_path / "step-00000004.json")["w"].item() == 3.0
    monkeypatch.undo()
    # The next save of the step uses the other name again and cleans up.
    save_checkpoint(tmp_path, 4, {"w": torch.tensor([4.0])})
    assert load_checkpoint(tmp_path / "step-00000004.json")["w"].item() == 4.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004.json", "step-00000004.safetensors"]
    save_checkpoint(tmp_path, 4, {"w": torch.tensor([5.0])})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004.1.safetensors", "step-00000004.json"]
    assert latest_checkpoint(tmp_path)[1]["w"].item() == 5.0


@pytest.mark.parametrize("damage", [
    lambda r: r["state"]["misc"].update({"inf": {"__slimtorch__": "float"}}),  # tagged value without its value
    lambda r: r["state"]["misc"].update({"inf": {"__slimtorch__": "float", "value": "1e999x"}}),
    lambda r: r["state"]["misc"].update({"t": {"__slimtorch__": "tuple", "items": 5}}),
    lambda r: r["state"]["misc"].update({"d": {"__slimtorch__": "dict", "items": [[1]]}}),
    lambda r: r["state"]["misc"].update({"d": {"__slimtorch__": "dict", "items": [[[1], 2]]}}),
    lambda r: r["state"]["misc"].update({"x": {"__slimtorch__": "tensor"}}),
    lambda r: r.update({"state": [1, 2]}),
])
def test_malformed_record_is_skipped_for_the_previous_one(tmp_path: Path, damage) -> None:
    save_checkpoint(tmp_path, 1, {"misc": {"step": 1}}, keep=None)
    save_checkpoint(tmp_path, 2, {"misc": {"step": 2, "inf": float("inf")}}, keep=None)
    record_path = tmp_path / "step-00000002.json"
    record = json.loads(record_path.read_text())
    damage(record)
    record_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="step-00000002"):
        load_checkpoint(record_path)
    with pytest.warns(RuntimeWarning, match="step-00000002"):
        path, state = latest_checkpoint(tmp_path)
    assert path.name == "step-00000001.json" and state["misc"]["step"] == 1


def test_deeply_nested_record_is_a_checkpoint_error(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 1, {"a": 1})
    (tmp_path / "step-00000001.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(tmp_path / "step-00000001.json")
