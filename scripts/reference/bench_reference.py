"""Times the authors' PyTorch LNLN or GEAR train step on this machine, to set beside ours.

Run in a throwaway virtualenv (torch is never a dependency of msa_jax), on the authors' code at
LNLN commit 80a052c62b7b3b7a6cb6956846e9d9c121f56eda / GEAR commit
cab45ac62bd7f7880b5abadd15ff5136cad91761:

  python -m venv /tmp/torchvenv
  /tmp/torchvenv/bin/pip install torch transformers safetensors numpy einops pyyaml scikit-learn \
      tqdm
  git clone https://github.com/Haoyu-ha/LNLN /tmp/lnln_ref
  git clone https://github.com/Teng-Sun/GEAR /tmp/gear_ref
  /tmp/torchvenv/bin/python scripts/reference/bench_reference.py --ref /tmp/lnln_ref \
      --encoder bert-base --steps 3
  /tmp/torchvenv/bin/python scripts/reference/bench_reference.py --method gear --ref /tmp/gear_ref \
      --encoder bert-base --steps 4

The BERTs are random-init (bert-base-uncased sizes, or all-MiniLM-L6-v2 sizes: hidden 384, 6
layers, 12 heads, intermediate 1536), written to a temporary directory and loaded through the
authors' own `BertTextEncoder` `from_pretrained` calls. Batches are random at the MOSI paper shapes
(text 50 tokens of lengths 10–50, audio 375×5, vision 500×20); data loading is not timed. torch
runs on `--threads` threads (default: the machine's cores).

What one step is:
- LNLN: `train.py` `train()`'s loop body, unchanged in substance — the authors' `build_model(args)`
  with their `configs/train_mosi.yaml` (every size as configured there), `model((vision, audio,
  text), (vision_m, audio_m, text_m))`, their `MultimodalLoss`, `backward()`,
  `torch.optim.AdamW(lr 1e-4, weight decay 1e-4).step()`, `zero_grad()`. Half the samples have
  missing rate 0, as in their training data; the others drop tokens ([UNK]) and zero frames at the
  sample's rate.
- GEAR: one micro-batch of `trains.py` `Train.do_train` — the authors' `IFL_ES(args)` at the MOSI
  sizes of their config_regression.json / run.py (LSTM hidden 16 / 32, outputs 16 / 32, swap_dim
  32, fusion 2 layers × 4 heads, post-fusion 128, dropouts as there), the forward and loss as
  `do_train` computes them at epoch 6 (swap on; GMAE tanh with q 0.7, IPW min: msa_jax's
  setting; `make_gear_fixture.training_loss`), `backward()`, and on every second call the four
  Adam optimizers that their `Train.get_optimizer_*` build stepping and then zeroing (their
  `update_epochs = 2` accumulation) — so a step is one micro-batch plus half an update, as
  msa_jax's GEAR step. Their `utils` package imports `pynvml` (GPU selection) at import time; a
  stub module stands in for it, as nothing here uses a GPU.

Three modes:
- `--steps N`: `--warmup` untimed steps, then N timed; prints one JSON object (median step,
  every step, peak RSS, and `sgemm_gflops`: torch's float32 `--sgemm-n`³ matmul rate in this
  process, measured once the model is built).
- `--profile FILE --steps N`: after the warm-up, N steps under `torch.profiler`; writes the
  operator table (self CPU time per aten op, with input shapes) to FILE and prints the JSON too.

`--data FILE` (LNLN): each step takes the next batch of the authors' own `MMDataLoader` over an
MMSA-format pickle (e.g. msa_jax's synthetic MOSI file), with their `num_workers` (8) and their
per-epoch missing-rate masking, and the wait for that batch is timed with the step, as their
`train()` loop runs it: what a user of their script sees per step.
- `--worker`: builds the model, prints `{"ready": ...}` (with `sgemm_gflops`), then runs one
  step for each `step` line on stdin and prints `{"step_s": ..., "cpu_s": ...}`; `rss` prints
  the peak RSS so far; EOF or `quit` ends it. `scripts/bench.py --reference-python ...
  --reference-repo ...` drives this to interleave the reference's steps with ours in one run
  (less exposed to the machine's drift).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
import types

import numpy as np
import torch
import transformers
import yaml


def _load_bench_module(name: str) -> types.ModuleType:
  """msa_jax/bench/<name>.py loaded by path: `timing` and `memory` import only the standard
  library, while importing the msa_jax package would need jax, which this virtualenv lacks."""
  path = pathlib.Path(__file__).resolve().parents[2] / "msa_jax" / "bench" / f"{name}.py"
  spec = importlib.util.spec_from_file_location(f"msa_jax_bench_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


timing, memory = _load_bench_module("timing"), _load_bench_module("memory")


ENCODERS = {
  "bert-base": dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072
  ),
  "minilm": dict(
    hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
  ),
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
  if (fe["input_length"], fe["input_dims"][1:]) != (
    [TEXT_LEN, VISION[0], AUDIO[0]],
    [VISION[1], AUDIO[1]],
  ):
    raise SystemExit(
      f"{path}: MOSI sizes {fe['input_length']} / {fe['input_dims']} are not the "
      f"paper's (50, 500, 375) / (768, 20, 5)"
    )
  return args


def random_text(rng: np.random.Generator, batch: int) -> np.ndarray:
  """(B, 3, 50) float32, as MMSA stores text_bert: ids ([CLS] … [SEP], lengths 10–50), mask,
  segments 0."""
  lengths = rng.integers(10, TEXT_LEN + 1, batch)
  text = np.zeros((batch, 3, TEXT_LEN), np.float32)
  for i, n in enumerate(lengths):
    text[i, 0, :n] = rng.integers(1000, 30522, n)
    text[i, 0, 0], text[i, 0, n - 1] = 101, 102
    text[i, 1, :n] = 1
  return text


def random_batch(batch: int, seed: int) -> tuple[tuple, tuple, dict]:
  """(complete, incomplete, labels) as `train()` builds them, at the paper shapes."""
  rng = np.random.default_rng(seed)
  text = random_text(rng, batch)
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
  labels = {
    "sentiment_labels": t(rng.uniform(-3, 3, (batch, 1)).astype(np.float32)),
    "completeness_labels": t((1.0 - rates[0]).reshape(batch, 1).astype(np.float32)),
    "effectiveness_labels": torch.cat([torch.ones(batch * 8), torch.zeros(batch * 8)]).long(),
  }
  return (t(vision), t(audio), t(text)), (t(vision_m), t(audio_m), t(text_m)), labels


class LNLNStep:
  """The authors' LNLN model, loss and optimizer; `step()` runs one train step, as `train()`
  does."""

  def __init__(
    self, ref: pathlib.Path, encoder: str, batch: int, seed: int, data: pathlib.Path | None = None
  ):
    sys.path.insert(0, str(ref.resolve()))
    from core.dataset import MMDataLoader  # the authors' modules, unchanged
    from core.losses import MultimodalLoss
    from models.lnln import build_model

    with tempfile.TemporaryDirectory() as tmp:
      write_random_bert(pathlib.Path(tmp), encoder, seed)
      args = reference_args(ref, pathlib.Path(tmp), encoder)
      torch.manual_seed(seed)
      self.model = build_model(args)
    self.loader = None
    if data is not None:
      args["dataset"]["dataPath"] = str(data)
      args["base"]["batch_size"] = batch
      self.train_loader = MMDataLoader(args)["train"]
      self.loader = iter(self.train_loader)
    self.loss_fn = MultimodalLoss(args)
    self.optimizer = torch.optim.AdamW(
      self.model.parameters(), lr=args["base"]["lr"], weight_decay=args["base"]["weight_decay"]
    )
    self.complete, self.incomplete, self.labels = random_batch(batch, seed)
    self.params = sum(p.numel() for p in self.model.parameters())

  def _next_batch(self) -> tuple[tuple, tuple, dict]:
    """The next batch of the authors' loader, as their `train()` unpacks it (a new epoch after
    the last batch)."""
    data = next(self.loader, None)
    if data is None:
      self.loader = iter(self.train_loader)
      data = next(self.loader)
    labels = data["labels"]["M"]
    return (
      (data["vision"], data["audio"], data["text"]),
      (data["vision_m"], data["audio_m"], data["text_m"]),
      {
        "sentiment_labels": labels,
        "completeness_labels": 1.0 - data["labels"]["missing_rate_l"],
        "effectiveness_labels": torch.cat(
          [torch.ones(len(labels) * 8), torch.zeros(len(labels) * 8)]
        ).long(),
      },
    )

  def step(self) -> float:
    if self.loader is not None:
      self.complete, self.incomplete, self.labels = self._next_batch()
    self.model.train()
    out = self.model(self.complete, self.incomplete)
    loss = self.loss_fn(out, self.labels)
    loss["loss"].backward()
    self.optimizer.step()
    self.optimizer.zero_grad()
    return float(loss["loss"].item())


def gear_args(bert_dir: pathlib.Path, encoder: str) -> types.SimpleNamespace:
  """The `args` the authors' GEAR modules and `Train.get_optimizer_*` read, at MOSI sizes
  (config_regression.json `ifl_es` mosi, run.py defaults for what it leaves out)."""
  hidden = ENCODERS[encoder]["hidden_size"]
  return types.SimpleNamespace(
    need_data_aligned=False,
    use_finetune=True,
    transformers="bert",
    pretrained=str(bert_dir),
    feature_dims=[hidden, AUDIO[1], VISION[1]],
    text_out=hidden,
    swap_dim=32,
    a_lstm_hidden_size=16,
    v_lstm_hidden_size=32,
    audio_out=16,
    video_out=32,
    a_lstm_layers=1,
    v_lstm_layers=1,
    a_lstm_dropout=0.0,
    v_lstm_dropout=0.0,
    post_text_dropout=0.1,
    post_audio_dropout=0.1,
    post_video_dropout=0.0,
    post_fusion_dropout=0.0,
    post_fusion_dim=128,
    trans_layers=2,
    trans_heads=4,
    q=0.7,
    lambda_dis=15,
    lambda_swap=1.0,
    swap_epochs=5,
    gce="tanh",
    weight="min",
    device="cpu",
    train_mode="regression",
    update_epochs=2,
    learning_rate_bert=5e-5,
    learning_rate_audio=0.005,
    learning_rate_video=0.005,
    learning_rate_other=0.001,
    weight_decay_bert=0.001,
    weight_decay_audio=0.001,
    weight_decay_video=0.001,
    weight_decay_other=0.001,
    weight_decay=0.0,
  )


def gear_batch(batch: int, seed: int) -> dict[str, torch.Tensor]:
  """A GEAR training batch at the paper shapes: text (B, 3, 50) as MMSA's float array, frames
  zero-padded past each sample's length, int64 lengths, labels (B,)."""
  rng = np.random.default_rng(seed)
  out = {"text_bert": torch.from_numpy(random_text(rng, batch))}
  for name, (frames, dim) in (("audio", AUDIO), ("vision", VISION)):
    lengths = rng.integers(frames // 4, frames + 1, batch)
    x = rng.normal(size=(batch, frames, dim)).astype(np.float32)
    x[np.arange(frames)[None, :] >= lengths[:, None]] = 0.0
    out[name] = torch.from_numpy(x)
    out[f"{name}_lengths"] = torch.from_numpy(lengths.astype(np.int64))
  out["labels"] = torch.from_numpy(rng.uniform(-3, 3, batch).astype(np.float32))
  return out


class GEARStep:
  """The authors' GEAR model and optimizers; `step()` runs one micro-batch as `do_train` does,
  and on every second call the optimizer update (module docstring)."""

  SWAP_EPOCH = 6  # > swap_epochs: the swap terms are on, as for most of training

  def __init__(self, ref: pathlib.Path, encoder: str, batch: int, seed: int):
    src = ref.resolve() / "src"
    if not (src / "models" / "IFL_ES.py").is_file():
      raise SystemExit(
        f"{src / 'models' / 'IFL_ES.py'}: not found; --ref must be a checkout of "
        f"the GEAR repository"
      )
    sys.path.insert(0, str(src))
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    sys.modules.setdefault("pynvml", types.ModuleType("pynvml"))  # imported by their utils only
    from make_gear_fixture import training_loss  # do_train's forward and loss, transcribed there
    from models.IFL_ES import IFL_ES  # the authors' modules, unchanged
    from trains import Train

    with tempfile.TemporaryDirectory() as tmp:
      write_random_bert(pathlib.Path(tmp), encoder, seed)
      self.args = gear_args(pathlib.Path(tmp), encoder)
      torch.manual_seed(seed)
      self.model = IFL_ES(self.args)
    owner = types.SimpleNamespace(args=self.args)  # `self` of Train's optimizer builders
    m = self.model
    self.optimizers = [
      Train.get_optimizer_text(owner, m.text_model),
      Train.get_optimizer_audio(owner, m.audio_model),
      Train.get_optimizer_video(owner, m.video_model),
      Train.get_optimizer(owner, m.fusion_model),
    ]
    self.training_loss = training_loss
    self.batch = gear_batch(batch, seed)
    self.params = sum(p.numel() for p in self.model.parameters())
    self.calls = 0

  def step(self) -> float:
    self.model.train()
    if self.calls % self.args.update_epochs == 0:
      for opt in self.optimizers:
        opt.zero_grad()
    loss = self.training_loss(self.model, self.args, self.batch, self.SWAP_EPOCH)["total"]
    loss.backward()
    self.calls += 1
    if self.calls % self.args.update_epochs == 0:
      for opt in self.optimizers:
        opt.step()
    return float(loss.item())


def torch_sgemm_gflops(n: int, runs: int = 5) -> float:
  """A float32 (n, n) @ (n, n) matmul's rate in this process (torch's own kernels on its
  threads), median of `runs` calls after a warm-up: the counterpart of the sgemm rate bench.py
  measures in ours, so that each side's step can be set against its own matmul rate."""
  a, b = torch.randn(n, n), torch.randn(n, n)
  a @ b
  times = [timing.timed(lambda: a @ b)[1] for _ in range(runs)]
  return 2.0 * n**3 / statistics.median(times) / 1e9


def emit(obj: dict) -> None:
  sys.stdout.write(json.dumps(obj) + "\n")
  sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--method", choices=("lnln", "gear"), default="lnln")
  p.add_argument(
    "--ref",
    type=pathlib.Path,
    required=True,
    help="the authors' repository of --method (LNLN or GEAR checkout)",
  )
  p.add_argument("--encoder", choices=sorted(ENCODERS), default="bert-base")
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  p.add_argument("--seed", type=int, default=1111)
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--sgemm-n", type=int, default=2048, help="size of the reference matmul")
  p.add_argument("--warmup", type=int, default=1)
  p.add_argument("--worker", action="store_true", help="steps on request (module docstring)")
  p.add_argument("--profile", type=pathlib.Path, help="write torch.profiler's op table here")
  p.add_argument(
    "--data",
    type=pathlib.Path,
    help="LNLN: batches from the authors' MMDataLoader over this MMSA pickle (docstring)",
  )
  opts = p.parse_args(argv)
  torch.set_num_threads(opts.threads)
  start = time.perf_counter()
  if opts.data is not None and opts.method != "lnln":
    p.error("--data: only for --method lnln (the authors' LNLN data loader)")
  if opts.method == "lnln":
    runner = LNLNStep(opts.ref, opts.encoder, opts.batch, opts.seed, opts.data)
  else:
    runner = GEARStep(opts.ref, opts.encoder, opts.batch, opts.seed)
  info = {
    "method": opts.method,
    "torch": torch.__version__,
    "transformers": transformers.__version__,
    "threads": torch.get_num_threads(),
    "encoder": opts.encoder,
    "batch": opts.batch,
    "params": runner.params,
    "build_s": round(time.perf_counter() - start, 2),
    "sgemm_gflops": torch_sgemm_gflops(opts.sgemm_n),
    "data": str(opts.data) if opts.data else "random batch, reused",
  }
  if opts.worker:
    emit({"ready": True, **info})
    for line in sys.stdin:
      command = line.strip()
      if command == "step":
        _, wall, cpu = timing.timed(runner.step)
        emit({"step_s": wall, "cpu_s": cpu})
      elif command == "rss":
        emit({"peak_rss_gb": memory.max_rss_bytes() / 1e9})
      elif command in ("quit", ""):
        break
      else:
        emit({"error": f"unknown command {command!r}: expected step, rss or quit"})
    return
  for _ in range(opts.warmup):
    runner.step()
  from torch.profiler import ProfilerActivity, profile

  tracer = (
    profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    if opts.profile
    else contextlib.nullcontext()
  )
  with tracer as prof:
    steps = [timing.timed(runner.step)[1:] for _ in range(opts.steps)]
  if opts.profile:
    table = prof.key_averages(group_by_input_shape=True).table(
      sort_by="self_cpu_time_total", row_limit=60, max_name_column_width=40
    )
    totals = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    opts.profile.write_text(f"{info}\n\n{totals}\n\n{table}\n", encoding="utf-8")
  walls = [w for w, _ in steps]
  emit(
    {
      **info,
      "step_s_median": statistics.median(walls),
      "step_s": walls,
      "cpu_s": [c for _, c in steps],
      "peak_rss_gb": memory.max_rss_bytes() / 1e9,
    }
  )


if __name__ == "__main__":
  main()
