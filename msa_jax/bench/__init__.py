"""Speed and memory of LNLN's and GEAR's training step and evaluation (`scripts/bench.py`).

What is measured builds the real `Method` (msa_jax.train.{lnln,gear}.build) from the method's
config, with the benchmark's encoder, batch sizes, dtype and attention options, and jit-compiles
the train step exactly as `msa_jax.train.loop` does (same shardings, state donated), so the figures
are those of training. Data are random arrays of the chosen shapes (`paper`: MOSI, text 50 tokens,
audio 375×5, vision 500×20, MOSI split sizes; `default`: the shapes of the config's synthetic
preset).

Per configuration (`run.run_one`; each in its own subprocess when several are asked for, so that
peak memory is per configuration):
  - compile: `jit(...).lower()` and `.compile()` times of the train step and of the evaluation;
  - train step (`train_step`): warm-up steps, then timed ones (block_until_ready), median, min /
    max, quartiles, mean; FLOPs per step from XLA's cost analysis (`flops`) and the achieved
    GFLOP/s, beside an f32 matmul (sgemm) rate measured in the same process (`machine`);
  - GEAR: a step is one micro-batch (forward + backward) plus half an optimizer update (it sums 2
    micro-batches per update), so an even number of steps is timed; its four LSTM scans (audio and
    vision, robust and bias) are timed separately, forward + backward;
  - evaluation (`evaluation`): the training loop's prediction (LNLN's 10 sweep rates in one
    program, `eval_rates_per_pass` of them vmapped at a time as in training; GEAR one rate) on a
    number of test samples; throughput in sample-evaluations per second, and the full MOSI
    evaluation extrapolated from it;
  - memory (`memory`): the process's peak resident set, the peak of each phase, and on an
    accelerator the device's peak bytes in use.
Every figure is tagged {"kind": "measured" | "extrapolated" | "quoted"} (`figures`); the authors'
PyTorch figures (`quoted`, from quoted.json, which states their source) and the ratios reference /
ours are added where the configuration matches theirs (paper shapes, batch 64, float32).

`compare` times config variants of one configuration interleaved in one process, optionally with
the authors' PyTorch train step as one more variant (`reference`); `alternate` runs the same
variants each in a fresh process of its own, one at a time, round after round; the reference's
processes measure torch's own matmul rate beside ours. `profile` attributes traced op time to
model parts and reports the traced time with no op running (where XLA:CPU's asynchronous dot
thunks do their work). `output` formats the tables. `data_formats`
(scripts/bench_input.py) times the input pipeline over the two on-disk forms of MOSEI-sized data,
memory-mapped `.npy` and a TFDS build. docs/benchmarks.md has the measured tables and how to
reproduce them.

`timing` and `memory` import only the standard library: scripts/reference/bench_reference.py loads
them by path in a virtualenv that has torch and no jax. Nothing is imported here for that reason.
"""
