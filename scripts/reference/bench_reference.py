"""Times the authors' PyTorch LNLN train step on this machine (issue #8), to set beside ours.

Run in a throwaway virtualenv (torch is never a dependency of msa_jax), on the authors' code at
commit 80a052c62b7b3b7a6cb6956846e9d9c121f56eda (`scripts/reference/make_lnln_fixture.py` gives
the setup):

  /tmp/torchvenv/bin/python scripts/reference/bench_reference.py --ref /tmp/lnln_ref \
      --encoder bert-base --steps 3

What one step is: `train.py` `train()`'s loop body, unchanged in substance — the authors'
`build_model(args)` with their `configs/train_mosi.yaml` (MOSI paper sizes: text 50, vision
500×20, audio 375×5, every Transformer as configured there), `model((vision, audio, text),
(vision_m, audio_m, text_m))` on a batch, their `MultimodalLoss`, `backward()`,
`torch.optim.AdamW(lr 1e-4, weight decay 1e-4).step()`, `zero_grad()`. The BERT is random-init
(bert-base-uncased sizes, or all-MiniLM-L6-v2 sizes: hidden 384, 6 layers, 12 heads, intermediate
1536), written to a temporary directory and loaded through the authors' own `BertTextEncoder`
`from_pretrained` call. The batch is random at the paper shapes (text lengths 10–50, half the
samples with missing rate 0 as in training, frames zeroed at the sample's rate); data loading is
not timed. torch runs on `--threads` threads (default: the machine's cores).

Two modes:
- `--steps N`: `--warmup` untimed steps, then N timed; prints one JSON object (median step,
  every step, peak RSS).
- `--worker`: builds the model, prints `{"ready": ...}`, then runs one step for each `step` line on
  stdin and prints `{"step_s": ..., "cpu_s": ...}`; `rss` prints the peak RSS so far; EOF or
  `quit` ends it. `scripts/bench.py --reference-python ... --reference-repo ...` drives this to
  interleave the reference's steps with ours in one run (less exposed to the machine's drift).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import transformers
import yaml

LNLN_COMMIT = "80a052c62b7b3b7a6cb6956846e9d9c121f56eda"
ENCODERS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072),
    "minilm": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                   intermediate_size=1536),
}
TEXT_LEN, VISION, AUDIO = 50, (500, 20), (375, 5)


def write_random_bert(directory: pathlib.Path, encoder: str, seed: int) -> None:
  """A random-init BERT of `encoder`'s sizes (vocab 30522, with pooler) and a vocabulary file,
  loadable by the authors' `BertTextEncoder` (`from_pretrained(directory)`)."""
  torch.manual_seed(seed)
  config = transformers.BertConfig(vocab_size=30522, **ENCODERS[encoder])
  transformers.BertModel(config).save_pretrained(directory)
  vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
  (directory / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")


def reference_args(ref: pathlib.Path, bert_dir: pathlib.Path, encoder: str) -> dict:
  """The authors' MOSI training config, with the random BERT and its hidden size."""
  path = ref / "configs" / "train_mosi.yaml"
  if not path.is_file():
    raise SystemExit(f"{path}: not found; --ref must be a checkout of the LNLN repository")
  args = yaml.safe_load(path.read_text(encoding="utf-8"))
  fe = args["model"]["feature_extractor"]
  fe["bert_pretrained"] = str(bert_dir)
  fe["input_dims"][0] = ENCODERS[encoder]["hidden_size"]
  if (fe["input_length"], fe["input_dims"][1:]) != ([TEXT_LEN, VISION[0], AUDIO[0]],
                                                    [VISION[1], AUDIO[1]]):
    raise SystemExit(f"{path}: MOSI sizes {fe['input_length']} / {fe['input_dims']} are not the "
                     f"paper's (50, 500, 375) / (768, 20, 5)")
  return args


def random_batch(batch: int, seed: int) -> tuple[tuple, tuple, dict]:
  """(complete, incomplete, labels) as `train()` builds them, at the paper shapes."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(10, TEXT_LEN + 1, batch)
  text = np.zeros((batch, 3, TEXT_LEN), np.float32)
  for i, n in enumerate(lengths):
    text[i, 0, :n] = rng.integers(1000, 30522, n)
    text[i, 0, 0], text[i, 0, n - 1] = 101, 102
    text[i, 1, :n] = 1
  rates = rng.uniform(size=(3, batch))
  rates[:, : batch // 2] = 0.0  # half the samples complete, as the authors' training data
  text_m = text.copy()
  drop = (rng.uniform(size=(batch, TEXT_LEN)) < rates[0][:, None]) & (text[:, 1] > 0)
  text_m[:, 0][drop] = 100  # [UNK]

  def frames(shape: tuple[int, int], rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=(batch, *shape)).astype(np.float32)
    keep = rng.uniform(size=(batch, shape[0])) >= rate[:, None]
    return x, x * keep[..., None]

  vision, vision_m = frames(VISION, rates[2])
  audio, audio_m = frames(AUDIO, rates[1])
  t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
  labels = {"sentiment_labels": t(rng.uniform(-3, 3, (batch, 1)).astype(np.float32)),
            "completeness_labels": t((1.0 - rates[0]).reshape(batch, 1).astype(np.float32)),
            "effectiveness_labels": torch.cat([torch.ones(batch * 8), torch.zeros(batch * 8)]).long()}
  return (t(vision), t(audio), t(text)), (t(vision_m), t(audio_m), t(text_m)), labels


class ReferenceStep:
  """The authors' model, loss and optimizer; `step()` runs one train step, as `train()` does."""

  def __init__(self, ref: pathlib.Path, encoder: str, batch: int, seed: int):
    sys.path.insert(0, str(ref.resolve()))
    from core.losses import MultimodalLoss  # the authors' modules, unchanged
    from models.lnln import build_model

    with tempfile.TemporaryDirectory() as tmp:
      write_random_bert(pathlib.Path(tmp), encoder, seed)
      args = reference_args(ref, pathlib.Path(tmp), encoder)
      torch.manual_seed(seed)
      self.model = build_model(args)
    self.loss_fn = MultimodalLoss(args)
    self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=args["base"]["lr"],
                                       weight_decay=args["base"]["weight_decay"])
    self.complete, self.incomplete, self.labels = random_batch(batch, seed)
    self.params = sum(p.numel() for p in self.model.parameters())

  def step(self) -> float:
    self.model.train()
    out = self.model(self.complete, self.incomplete)
    loss = self.loss_fn(out, self.labels)
    loss["loss"].backward()
    self.optimizer.step()
    self.optimizer.zero_grad()
    return float(loss["loss"].item())


def peak_rss_gb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def timed(fn) -> tuple[float, float]:
  start, cpu = time.perf_counter(), time.process_time()
  fn()
  return time.perf_counter() - start, time.process_time() - cpu


def emit(obj: dict) -> None:
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--ref", type=pathlib.Path, required=True, help="the LNLN repository")
  p.add_argument("--encoder", choices=sorted(ENCODERS), default="bert-base")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  p.add_argument("--seed", type=int, default=1111)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--worker", action="store_true", help="steps on request (module docstring)")
  opts = p.parse_args(argv)
  torch.set_num_threads(opts.threads)
  start = time.perf_counter()
  runner = ReferenceStep(opts.ref, opts.encoder, opts.batch, opts.seed)
  info = {"torch": torch.__version__, "transformers": transformers.__version__,
          "threads": torch.get_num_threads(), "encoder": opts.encoder, "batch": opts.batch,
          "params": runner.params, "build_s": round(time.perf_counter() - start, 2)}
  if opts.worker:
    emit({"ready": True, **info})
    for line in sys.stdin:
      command = line.strip()
      if command == "step":
        wall, cpu = timed(runner.step)
        emit({"step_s": wall, "cpu_s": cpu})
      elif command == "rss":
        emit({"peak_rss_gb": peak_rss_gb()})
      elif command in ("quit", ""):
        break
      else:
        emit({"error": f"unknown command {command!r}: expected step, rss or quit"})
    return
  for _ in range(opts.warmup):
    runner.step()
  steps = [timed(runner.step) for _ in range(opts.steps)]
  walls = [w for w, _ in steps]
  emit({**info, "step_s_median": statistics.median(walls), "step_s": walls,
        "cpu_s": [c for _, c in steps], "peak_rss_gb": peak_rss_gb()})


if __name__ == "__main__":
  main()
