"""The file reader under fuzzing: mutated valid files (header JSON, metadata,
offsets, counts, varints, shapes, dtypes, raw bytes, the xz stream) either
load into a model whose forward matches a pure-torch reference or raise
ValueError, within an address-space cap (set in a subprocess so it does not
bind pytest). Fixed seed and a small budget; SLIMTORCH_FUZZ_EXAMPLES raises it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("serialization_fuzz_script.py")


def test_fuzzed_files_load_correctly_or_raise_value_error():
    examples = os.environ.get("SLIMTORCH_FUZZ_EXAMPLES", "150")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, str(SCRIPT), examples], capture_output=True, text=True, env=env,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert f"ran {examples} cases" in result.stdout, result.stdout
