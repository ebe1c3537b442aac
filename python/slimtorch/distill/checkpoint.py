"""Training checkpoints as safetensors (tensors) + JSON (everything else).

Nothing here uses pickle, so loading a checkpoint cannot run code.

A checkpoint for global step ``S`` in a directory is two files:

``step-0000000S.safetensors`` (``step-0000000S.1.safetensors`` when a
step is saved again: see below)
    every tensor of the state, under structured keys that spell its place in
    the state tree (``model/fc1.weight``, ``optimizer/state/3/exp_avg``,
    ``rng/rank0/torch``).
``step-0000000S.json``
    the rest of the state tree (numbers, strings, lists; each tensor replaced
    by a reference to its key), plus the size and SHA-256 of the tensor file.

Both files are written atomically (:func:`slimtorch._io.atomic_write`), the
tensor file first. The JSON file is the commit record: a checkpoint exists once
its JSON file exists, and it is *complete* when the tensor file it names has
the recorded size and hash. A run killed at any moment therefore leaves only
complete checkpoints behind (plus possibly an orphan tensor file or a
``.tmp`` file, which the next save removes). Saving a step that already has a
checkpoint writes the new tensor file under the other of the two names, then
the new record, and only then removes the old tensor file, so the step has a
complete checkpoint at every moment.

Corruption policy: :func:`load_checkpoint` on a damaged checkpoint raises
:class:`CheckpointError` naming the file and the problem.
:func:`latest_checkpoint` skips damaged checkpoints with a warning and returns
the newest complete one (older ones are kept, ``keep`` at a time, for exactly
this case); it raises :class:`CheckpointError` when checkpoints exist but none
is complete, rather than silently starting from scratch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save

from slimtorch._io import TMP_SUFFIX, atomic_write_bytes, atomic_write_json

__all__ = [
    "CheckpointError",
    "encode_state",
    "decode_state",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
]

FORMAT = "slimtorch.checkpoint"
VERSION = 1
_NAME = re.compile(r"^step-(\d{8,})\.json$")
_FILE = re.compile(r"^step-(\d{8,})(?:\.1)?\.(json|safetensors)$")
# Marks an encoded non-JSON value in the tree; a dict with this key is never user data.
_TAG = "__slimtorch__"


class CheckpointError(ValueError):
    """A checkpoint file is missing, truncated, corrupt or of an unknown format."""


# ---------------------------------------------------------------------------
# State tree <-> (JSON tree, flat tensor dict)


def encode_state(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Splits a state tree into a JSON-serialisable tree and a flat tensor dict.

    The tree may hold dicts, lists, tuples, str, int, float (including inf/NaN),
    bool, None and tensors. Tensors are moved to CPU, made contiguous and stored
    under a key made of their path (``/``-joined); the JSON tree keeps a
    reference to that key. Tuples and dicts with non-str keys (an optimizer's
    ``state`` is keyed by int) are tagged so that :func:`decode_state` restores
    them exactly.

    Raises:
        TypeError: a value of another type, naming its path in the tree.
    """
    tensors: dict[str, torch.Tensor] = {}
    storages: set[tuple[int, int]] = set()

    def add_tensor(path: str, tensor: torch.Tensor) -> dict[str, str]:
        if tensor.is_quantized or tensor.is_sparse or tensor.layout != torch.strided:
            raise TypeError(f"state: {path or '<root>'} is a {tensor.layout} / quantized tensor; "
                            "only dense tensors can be stored")
        data = tensor.detach().to("cpu").contiguous()
        # safetensors refuses tensors that share memory (tied weights, views):
        # give every stored tensor its own storage.
        storage = (data.untyped_storage().data_ptr(), data.untyped_storage().nbytes())
        if storage in storages or data.storage_offset() != 0 or \
                data.untyped_storage().nbytes() != data.numel() * data.element_size():
            data = data.clone()
        storages.add((data.untyped_storage().data_ptr(), data.untyped_storage().nbytes()))
        key = path or "<root>"
        tensors[key] = data
        return {_TAG: "tensor", "key": key}

    def encode(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            return add_tensor(path, value)
        if value is None or isinstance(value, (bool, str, int)):
            return value
        if isinstance(value, float):
            if math.isfinite(value):
                return value
            return {_TAG: "float", "value": repr(value)}  # 'inf', '-inf', 'nan'
        if isinstance(value, tuple):
            return {_TAG: "tuple", "items": [encode(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [encode(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, Mapping):
            if all(isinstance(k, str) for k in value) and _TAG not in value:
                for k in value:
                    if "/" in k:
                        # keep paths unambiguous; fall back to the tagged form
                        break
                else:
                    return {k: encode(v, f"{path}/{k}" if path else k) for k, v in value.items()}
            items = []
            for k, v in value.items():
                if not (k is None or isinstance(k, (bool, str, int))):
                    raise TypeError(f"state: {path or '<root>'} has a key of type "
                                    f"{type(k).__name__}; expected str or int keys")
                safe = str(k).replace("/", "|")
                items.append([k, encode(v, f"{path}/{safe}" if path else safe)])
            return {_TAG: "dict", "items": items}
        if hasattr(value, "item") and hasattr(value, "dtype"):  # numpy scalar
            return encode(value.item(), path)
        raise TypeError(f"state: {path or '<root>'} is a {type(value).__name__}; expected "
                        "tensors, numbers, strings, None, lists, tuples or dicts")

    return encode(state, ""), tensors


def decode_state(tree: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_state`.

    Raises:
        CheckpointError: a tensor reference names a key that ``tensors`` lacks,
            or a tagged value is malformed.
    """

    def decode(value: Any) -> Any:
        if isinstance(value, list):
            return [decode(v) for v in value]
        if isinstance(value, dict):
            tag = value.get(_TAG)
            if tag is None:
                return {k: decode(v) for k, v in value.items()}
            if tag == "tensor":
                key = value.get("key")
                if key not in tensors:
                    raise CheckpointError(f"checkpoint: tensor {key!r} is missing from the tensor file")
                return tensors[key]
            if tag == "float":
                if value.get("value") not in ("inf", "-inf", "nan"):
                    raise CheckpointError(f"checkpoint: malformed float {str(value.get('value'))[:40]!r}")
                return float(value["value"])
            if tag == "tuple":
                return tuple(decode(v) for v in value["items"])
            if tag == "dict":
                return {k: decode(v) for k, v in value["items"]}  # a malformed item raises, caught below
            raise CheckpointError(f"checkpoint: unknown tagged value {tag!r}")
        return value

    try:
        return decode(tree)
    except (KeyError, TypeError, ValueError, IndexError, RecursionError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint: malformed state tree ({type(error).__name__}: {error})") from None


# ---------------------------------------------------------------------------
# Files


def _stem(step: int) -> str:
    return f"step-{step:08d}"


def _check_directory(directory: object) -> Path:
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory: expected a str or os.PathLike, got {type(directory).__name__}")
    return Path(directory)


def save_checkpoint(directory: str | os.PathLike[str], step: int, state: Mapping[str, Any],
                    *, keep: int | None = 2) -> Path:
    """Writes the checkpoint of global step ``step`` into ``directory``.

    Args:
        directory: created if missing.
        step: non-negative int; names the files (a later step sorts later).
        state: the state tree (see :func:`encode_state`).
        keep: how many checkpoints to keep: this one and the ``keep - 1``
            newest before it (``None``: all before it). Older checkpoints,
            orphan tensor files and stray temporary files are removed after the
            new one is committed, and so are checkpoints of *later* steps: they
            belong to a run that was rewound (resumed from an earlier
            checkpoint) and would otherwise shadow the new one.

    Returns:
        The path of the JSON commit record.
    """
    directory = _check_directory(directory)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step: expected a non-negative int, got {step!r}")
    if not isinstance(state, Mapping):
        raise TypeError(f"state: expected a mapping, got {type(state).__name__}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep: expected None or an int >= 1, got {keep!r}")
    directory.mkdir(parents=True, exist_ok=True)
    tree, tensors = encode_state(dict(state))
    blob = _st_save(tensors, metadata={"format": FORMAT})
    stem = _stem(step)
    # Re-saving a step writes the tensors under the name its current record
    # does not use, so the old checkpoint stays complete until the new record
    # replaces it; the old tensor file is removed after that.
    names = (f"{stem}.safetensors", f"{stem}.1.safetensors")
    tensors_name = names[1] if _tensors_file(directory / f"{stem}.json") == names[0] else names[0]
    atomic_write_bytes(directory / tensors_name, blob)
    record = {
        "format": FORMAT,
        "version": VERSION,
        "step": step,
        "tensors_file": tensors_name,
        "tensors_bytes": len(blob),
        "tensors_sha256": hashlib.sha256(blob).hexdigest(),
        "state": tree,
    }
    path = atomic_write_json(directory / f"{stem}.json", record)
    _remove_old(directory, step, keep)
    return path


def _tensors_file(record_path: Path) -> str | None:
    """The tensor file a commit record names; None when there is no readable record."""
    try:
        record = json.loads(record_path.read_bytes())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    name = record.get("tensors_file") if isinstance(record, dict) else None
    return name if isinstance(name, str) else None


def _remove_old(directory: Path, step: int, keep: int | None) -> None:
    earlier = [s for s, _ in list_checkpoints(directory) if s < step]
    if keep is not None:
        earlier = earlier[-(keep - 1):] if keep > 1 else []
    kept = {step, *earlier}
    # Tensor files of kept checkpoints that their record does not name are
    # leftovers of a re-save; a kept step whose record cannot be read keeps all.
    named = {s: _tensors_file(directory / f"{_stem(s)}.json") for s in kept}
    for entry in directory.iterdir():
        name = entry.name
        if name.startswith(".step-") and name.endswith(TMP_SUFFIX):
            entry.unlink(missing_ok=True)  # left by a writer that was killed
            continue
        match = _FILE.match(name)
        if not match:
            continue
        file_step = int(match.group(1))
        if file_step not in kept or (match.group(2) == "safetensors" and named[file_step] is not None
                                     and named[file_step] != name):
            entry.unlink(missing_ok=True)


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """``(step, json path)`` of every committed checkpoint, oldest first (not verified)."""
    directory = _check_directory(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reads and verifies one checkpoint (its JSON commit record path).

    Returns:
        The state tree given to :func:`save_checkpoint`, tensors on CPU.

    Raises:
        CheckpointError: a file is missing, truncated, corrupt (size or SHA-256
            mismatch, invalid JSON or safetensors) or of another format.
    """
    path = _check_directory(path)
    try:
        text = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot read ({error})") from None
    try:
        record = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: not valid JSON, truncated or corrupt ({error})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {str(path)!r}: not a {FORMAT} file")
    if record.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r}: format version {record.get('version')!r}, "
                              f"this slimtorch reads version {VERSION}")
    tensors_name = record.get("tensors_file")
    if not isinstance(tensors_name, str) or "/" in tensors_name or "\\" in tensors_name:
        raise CheckpointError(f"checkpoint {str(path)!r}: bad tensors_file entry {tensors_name!r}")
    tensors_path = path.parent / tensors_name
    try:
        blob = tensors_path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: cannot read its tensor file ({error})") from None
    if len(blob) != record.get("tensors_bytes"):
        raise CheckpointError(f"checkpoint {str(path)!r}: tensor file {tensors_name} has {len(blob)} bytes, "
                              f"expected {record.get('tensors_bytes')} (truncated or replaced)")
    if hashlib.sha256(blob).hexdigest() != record.get("tensors_sha256"):
        raise CheckpointError(f"checkpoint {str(path)!r}: tensor file {tensors_name} fails its SHA-256 check (corrupt)")
    try:
        tensors = _st_load(blob)
    except (SafetensorError, ValueError) as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: tensor file {tensors_name} is not valid safetensors "
                              f"({error})") from None
    try:
        state = decode_state(record.get("state"), tensors)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {str(path)!r}: {str(error).removeprefix('checkpoint: ')}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {str(path)!r}: state is not a mapping")
    return state


def latest_checkpoint(directory: str | os.PathLike[str], validate: Callable[[dict[str, Any]], None] | None = None
                      ) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint in ``directory`` and its state, or ``None``.

    Damaged checkpoints are skipped with a ``RuntimeWarning`` (see the module
    docstring), and so are those whose state ``validate(state)`` rejects by
    raising ``ValueError`` (a record that is whole but not what the caller
    needs). Raises :class:`CheckpointError` when there are checkpoints but
    none of them is usable.
    """
    found = list_checkpoints(directory)
    errors = []
    for _, path in reversed(found):
        try:
            state = load_checkpoint(path)
            if validate is not None:
                validate(state)
            return path, state
        except ValueError as error:
            message = str(error) if isinstance(error, CheckpointError) else f"checkpoint {str(path)!r}: {error}"
            errors.append(message)
            warnings.warn(f"skipping damaged checkpoint: {message}", RuntimeWarning, stacklevel=2)
    if errors:
        raise CheckpointError(f"directory {str(directory)!r}: no complete checkpoint; " + "; ".join(errors))
    return None
