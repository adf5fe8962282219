"""The input pipeline's speed on the two on-disk forms of MOSEI-sized data (scripts/bench_input.py).

One synthetic pickle is written (`msa_jax.data.synthetic`), converted to memory-mapped `.npy`
(`msa_jax.data.ondisk.convert`) and built as a TFDS array_record dataset
(`msa_jax.data.tfds_mmsa.build`); each step's wall time and the disk size are recorded. Both are
then opened with `msa_jax.data.load` and read by the training pipeline
(`pipeline.train_dataset` + `pipeline.iterate`, as the loop reads them) in interleaved rounds, one
process, alternating which form goes first, so that the machine's load hits both alike; each round
records the load average. The result is the batches per second of each form, their median
per-round ratio and the time one batch takes to gather on one thread.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from msa_jax.bench.machine import load_average
from msa_jax.data import load, ondisk, pipeline, synthetic


def _size(path: Path) -> int:
  return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _timed(fn: Any) -> tuple[Any, float]:
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def prepare(workdir: Path, preset: str, scale: float, seed: int = 0) -> dict[str, Any]:
  """Writes the pickle, the converted directory and the TFDS build under `workdir` (each kept and
  reused when present, its time then None) -> paths, wall times (s) and sizes (bytes)."""
  from msa_jax.data import tfds_mmsa

  workdir.mkdir(parents=True, exist_ok=True)
  manual = workdir / "manual"
  pkl = manual / "unaligned_50.pkl"
  npy = workdir / "npy"
  tfds_dir = workdir / "tfds"
  times: dict[str, float | None] = {"generate": None, "convert": None, "build": None}
  if not pkl.is_file():
    manual.mkdir(exist_ok=True)
    _, times["generate"] = _timed(lambda: synthetic.write_synthetic(pkl, preset, seed, scale))
  if not ondisk.is_converted(npy):
    _, times["convert"] = _timed(lambda: ondisk.convert(pkl, npy, "mosei"))
  built = tfds_dir / "mmsa_mosei" / "unaligned_50" / "1.0.0"
  if not (built / "dataset_info.json").is_file():
    built, times["build"] = _timed(
      lambda: tfds_mmsa.build("mosei", "unaligned_50", manual, tfds_dir)
    )
  return {
    "paths": {"pickle": str(pkl), "npy": str(npy), "tfds": str(built)},
    "seconds": times,
    "bytes": {"pickle": pkl.stat().st_size, "npy": _size(npy), "tfds": _size(built)},
  }


def _rate(dataset: Any, start: int, batches: int) -> float:
  """Batches per second of the training pipeline over steps [start, start + batches)."""
  it = pipeline.iterate(dataset[start : start + batches])
  begin = time.perf_counter()
  for _ in it:
    pass
  return batches / (time.perf_counter() - begin)


def _gather_ms(dataset: Any, start: int, batches: int) -> float:
  """Mean milliseconds to gather one batch on this thread (no read-ahead)."""
  begin = time.perf_counter()
  for step in range(start, start + batches):
    dataset[step]
  return 1e3 * (time.perf_counter() - begin) / batches


def compare(
  paths: dict[str, str], batch_size: int, rounds: int, batches: int, seed: int = 0
) -> dict[str, Any]:
  """Opens both forms and times their training pipelines in interleaved rounds."""
  forms = {"npy": paths["npy"], "tfds": f"tfds:{paths['tfds']}"}
  opened, open_s = {}, {}
  for name, path in forms.items():
    opened[name], open_s[name] = _timed(lambda path=path: load(path, "mosei")["train"])
  datasets = {
    name: pipeline.train_dataset(split, batch_size, seed) for name, split in opened.items()
  }
  rates: dict[str, list[float]] = {name: [] for name in forms}
  gather: dict[str, list[float]] = {name: [] for name in forms}
  loads = []
  order = list(forms)
  for r in range(rounds):
    start = r * (batches + 8)
    for name in order if r % 2 == 0 else order[::-1]:
      rates[name].append(_rate(datasets[name], start, batches))
      gather[name].append(_gather_ms(datasets[name], start + batches, 8))
    loads.append(load_average()[0])
  ratios = [n / t for n, t in zip(rates["npy"], rates["tfds"])]
  return {
    "batch_size": batch_size,
    "rounds": rounds,
    "batches_per_round": batches,
    "open_seconds": open_s,
    "batches_per_second": {name: statistics.median(v) for name, v in rates.items()},
    "batches_per_second_rounds": rates,
    "gather_ms": {name: statistics.median(v) for name, v in gather.items()},
    "npy_over_tfds": statistics.median(ratios),
    "load_average_1min": loads,
    "cpus": os.cpu_count(),
    "read_options": {
      "num_threads": pipeline.READ_OPTIONS.num_threads,
      "prefetch_buffer_size": pipeline.READ_OPTIONS.prefetch_buffer_size,
    },
    "checksum_equal": bool(
      np.array_equal(datasets["npy"][3]["audio"], datasets["tfds"][3]["audio"])
    ),
  }
