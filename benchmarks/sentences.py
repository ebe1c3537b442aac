"""English sentences from text already installed with Python, nothing downloaded.

Two sources, so that the evaluation set is not drawn from the text a model
was trained or calibrated on:

- ``docstring_sentences()``: the prose of docstrings (module, class and
  function) in the source files of the Python standard library and numpy,
  read with ``ast`` (no module is imported, so nothing runs).
  Only unindented paragraphs are kept: argument lists, examples and code
  blocks are indented or fenced in these docstrings.
- ``reference_sentences()``: the Python Language Reference shipped as
  ``pydoc_data.topics`` (the text ``help()`` shows), without its indented
  grammar and code examples.

Both keep sentences that read as prose (see ``_is_prose``), drop duplicates
and are returned in one fixed order; ``splits()`` shuffles them with a seed
and removes from the docstring side every sentence that also occurs in the
reference, so the three splits share no sentence.
"""

from __future__ import annotations

import ast
import importlib.util
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

# Sentence ends: . ! ? followed by space and a capital letter (keeps "e.g. x" whole).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
# Marks of code, markup or tables rather than prose.
_CODE_MARKS = re.compile(r"[=`{}\[\]<>|\\#@$~^]|::|\w\(|__|\.\w+\(|\w_\w|->|--|\*\*|https?:|\.py\b|\s-\w")
_WORD = re.compile(r"^[A-Za-z][a-z]*[,.;:!?'\"]*$|^[,\"'(]?[a-z]+[,.;:!?'\")]*$")


def _is_prose(sentence: str) -> bool:
    if not 40 <= len(sentence) <= 240 or sentence[-1] not in ".!?" or not sentence[0].isupper():
        return False
    if _CODE_MARKS.search(sentence) or sentence.endswith(("i.e.", "e.g.", "etc.")):
        return False
    words = sentence.split()
    # Mostly plain words: identifiers, numbers and symbols make a line code-like.
    return len(words) >= 6 and sum(bool(_WORD.match(w)) for w in words) >= 0.85 * len(words)


def _prose_sentences(paragraphs: list[str]) -> list[str]:
    found = []
    for paragraph in paragraphs:
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            if _is_prose(sentence):
                found.append(sentence)
    return found


def _unindented_paragraphs(text: str) -> list[str]:
    """Blank-line separated paragraphs of ``text`` whose lines all start at
    column 0 (after the docstring's common indentation is removed)."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line for line in block.split("\n") if line.strip()]
        if lines and all(not line[0].isspace() for line in lines) and not lines[0].startswith((">>>", "..")):
            paragraphs.append("\n".join(lines))
    return paragraphs


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    nodes = [tree, *(n for n in ast.walk(tree)
                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]
    return [doc for node in nodes if (doc := ast.get_docstring(node, clean=True))]


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def _unique(sentences: list[str]) -> list[str]:
    seen, kept = set(), []
    for sentence in sentences:
        key = sentence.lower()
        if key not in seen:
            seen.add(key)
            kept.append(sentence)
    return kept


def docstring_sentences() -> list[str]:
    """Prose sentences of the docstrings of the standard library and numpy,
    in sorted file order."""
    # torch and transformers would add as many again, at four times the parsing time.
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    roots += [d for d in map(_package_dir, ("numpy",)) if d is not None]
    sentences = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            parts = set(path.relative_to(root).parts)
            if parts & {"site-packages", "test", "tests", "testing", "idlelib", "lib2to3", "_vendor"}:
                continue
            for doc in _docstrings(path):
                sentences += _prose_sentences(_unindented_paragraphs(doc))
    return _unique(sentences)


def reference_sentences() -> list[str]:
    """Prose sentences of the Python Language Reference (``pydoc_data``)."""
    from pydoc_data.topics import topics

    paragraphs = []
    for name in sorted(topics):
        paragraphs += _unindented_paragraphs(topics[name])
    return _unique(_prose_sentences(paragraphs))


@dataclass(frozen=True)
class Splits:
    train: list[str]
    calibration: list[str]
    evaluation: list[str]


def splits(train: int = 4096, calibration: int = 128, evaluation: int = 640, seed: int = 0) -> Splits:
    """Disjoint, seeded splits: train and calibration from docstrings,
    evaluation from the language reference."""
    held_out = reference_sentences()
    random.Random(seed).shuffle(held_out)
    held_out = held_out[:evaluation]
    taken = {s.lower() for s in reference_sentences()}
    pool = [s for s in docstring_sentences() if s.lower() not in taken]
    random.Random(seed + 1).shuffle(pool)
    if len(pool) < train + calibration or len(held_out) < evaluation:
        raise ValueError(f"train: only {len(pool)} docstring and {len(held_out)} reference sentences found")
    return Splits(train=pool[calibration:calibration + train], calibration=pool[:calibration], evaluation=held_out)


if __name__ == "__main__":
    found = splits()
    for name in ("train", "calibration", "evaluation"):
        sample = getattr(found, name)
        print(f"{name}: {len(sample)} sentences, e.g.")
        for sentence in sample[:8]:
            print("   ", sentence)
