"""The in-memory form of one data split (docs/methods.md §1), shared by every loader and the
pipeline."""

from __future__ import annotations

import dataclasses

import numpy as np

# Split names: MMSA's three, the OOD test splits of GEAR (docs/methods.md §1, §6), and OOD splits
# of the validation split (the same cue reversals applied to `valid`; synthetic files from synth-v2
# on, docs/methods.md §7). Only `OOD_SPLITS` are evaluated as OOD test splits.
IID_SPLITS = ("train", "valid", "test")
OOD_SPLITS = ("ood_text", "ood_audio", "ood_vision", "ood_all")
OOD_VALID_SPLITS = ("ood_valid_text", "ood_valid_audio", "ood_valid_vision", "ood_valid_all")
# Every split name a loader reads; other top-level keys of a data file are ignored.
SPLITS = IID_SPLITS + OOD_SPLITS + OOD_VALID_SPLITS


@dataclasses.dataclass(frozen=True)
class Split:
  """One split of an MSA data set, N samples, as validated numpy arrays.

  Attributes:
    text_bert: (N, 3, L) int32 — token ids, attention mask, segment ids.
    audio: (N, Ta, Da) float32 — acoustic frames, non-finite values already set to 0.
    vision: (N, Tv, Dv) float32 — visual frames.
    audio_lengths: (N,) int32 in [1, Ta] — valid audio frames (Ta for aligned files).
    vision_lengths: (N,) int32 in [1, Tv].
    labels: (N,) float32 — regression sentiment labels.
    text: optional (N, L, Dt) float32 frozen BERT features (used by the OOD builder).
    labels_T, labels_A, labels_V: optional (N,) float32 unimodal labels (SIMS).
    ids: optional (N,) str sample ids (`video$_$clip`).
    raw_text: optional (N,) str transcripts.
    cue_signs: optional (N, 3) int8 ±1 — the sign of the planted spurious cue per modality
      (columns text, audio, vision; synthetic files from synth-v2 on). A sample is cue-aligned in
      a modality when the sign equals sign(labels).
  """

  text_bert: np.ndarray
  audio: np.ndarray
  vision: np.ndarray
  audio_lengths: np.ndarray
  vision_lengths: np.ndarray
  labels: np.ndarray
  text: np.ndarray | None = None
  labels_T: np.ndarray | None = None
  labels_A: np.ndarray | None = None
  labels_V: np.ndarray | None = None
  ids: np.ndarray | None = None
  raw_text: np.ndarray | None = None
  cue_signs: np.ndarray | None = None

  def __len__(self) -> int:
    return int(self.labels.shape[0])

  @property
  def text_len(self) -> int:
    return int(self.text_bert.shape[2])

  @property
  def audio_shape(self) -> tuple[int, int]:
    return int(self.audio.shape[1]), int(self.audio.shape[2])

  @property
  def vision_shape(self) -> tuple[int, int]:
    return int(self.vision.shape[1]), int(self.vision.shape[2])

  def take(self, indices: np.ndarray) -> Split:
    """A new Split holding the samples at `indices` (e.g. an OOD subset of test)."""
    idx = np.asarray(indices)
    return Split(
      **{
        f.name: (None if getattr(self, f.name) is None else getattr(self, f.name)[idx])
        for f in dataclasses.fields(self)
      }
    )

  def model_arrays(self) -> dict[str, np.ndarray]:
    """The arrays a model batch is built from (the keys of a pipeline batch)."""
    return {
      "text_bert": self.text_bert,
      "audio": self.audio,
      "vision": self.vision,
      "audio_lengths": self.audio_lengths,
      "vision_lengths": self.vision_lengths,
      "labels": self.labels,
    }
