"""The keys every method's config has: seeds, data, batch sizes, epochs, checkpoints, logging and
the model's performance options. `configs/lnln.py` and `configs/gear.py` start from `get_config`
and add their method's keys and presets, so that a shared key's default is written once."""

import ml_collections

from msa_jax.data.synthetic import default_path


def get_config(
  *, method: str, seeds: str, synthetic: str, batch_size: int, max_epochs: int
) -> ml_collections.ConfigDict:
  """The shared keys, with the values that differ between the methods' defaults as arguments.

  `synthetic` names the synthetic preset of the default data; it is generated at `data.path` on
  first use, and only there (`msa_jax.data.synthetic.default_path`).
  """
  c = ml_collections.ConfigDict()
  c.method = method
  c.seeds = seeds
  # Train all seeds in one program (jax.vmap over parameters, optimizer states and keys): they
  # share one data order (data_seed, or the first seed's), each keeps its own seed_N directory.
  c.vmap_seeds = False
  # >= 0: the shuffle seed of the training batches; -1: each seed's own (see vmap_seeds).
  c.data_seed = -1
  c.encoder = "tiny"

  c.data = ml_collections.ConfigDict()
  c.data.synthetic = synthetic  # generate this synthetic preset at data.path if the file is missing
  # Its benchmark version: "v1" (synth-v1) or "v2" (synth-v2), docs/methods.md §7.
  c.data.synthetic_version = "v1"
  c.data.synthetic_seed = 0
  c.data.synthetic_scale = 1.0
  c.data.path = default_path(synthetic, c.data.synthetic_seed)
  c.data.dataset = "mosi"

  c.batch_size = batch_size
  c.eval_batch_size = 128
  c.max_epochs = max_epochs
  c.checkpoint_keep = 2
  c.progress = True
  # > 0: a train-loss record every that many steps in steps.jsonl and TensorBoard.
  c.log_every_steps = 0
  c.tensorboard = True
  # JAX's persistent compilation cache: a second run loads its compiled programs instead of
  # compiling them again. "" turns it off; JAX_COMPILATION_CACHE_DIR in the environment wins.
  c.compile_cache = "~/.cache/msa_jax/xla"

  c.model = ml_collections.ConfigDict()
  # Performance options (no effect on parameters; float32 results equal up to float rounding):
  c.model.dtype = "float32"  # or "bfloat16": mixed precision (parameters stay float32)
  c.model.remat = False  # recompute BERT layers in the backward pass: less memory
  c.model.dropout_impl = "hash"  # dropout masks: "hash" (fast) or "threefry" (nn.Dropout)
  return c
