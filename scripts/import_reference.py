"""Convert a state_dict of the authors' PyTorch LNLN or GEAR model into msa_jax parameters.

    python scripts/import_reference.py --method lnln --weights lnln_mosi.safetensors --out lnln_mosi
    python scripts/import_reference.py --method gear --weights gear_mosi.safetensors \
        --out gear_mosi --text-heads 12

Input: a safetensors file holding the reference model's `state_dict()` under the reference's own
parameter names (LNLN: github.com/Haoyu-ha/LNLN `models/lnln.py`; GEAR: github.com/Teng-Sun/GEAR
`IFL_ES`). The authors save torch pickles (`.pth`); turn one into safetensors once, in an
environment that has torch (msa_jax never imports it):

    python scripts/reference/pth_to_safetensors.py model.pth model.safetensors

Output, next to each other: OUT.msgpack (the Flax parameter tree under 'params', written with
`flax.serialization.msgpack_serialize`) and OUT.json (the method, the model config the weights
imply, the source file and the name of every converted tensor). Existing outputs are kept unless
--overwrite is given; both files are written atomically. The name tables are in
`msa_jax/reference/lnln.py` and `msa_jax/reference/gear.py`.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from msa_jax import cli  # noqa: E402
from msa_jax.io import atomic_file, write_json_atomic  # noqa: E402
from msa_jax.reference import ReferenceConversionError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--method", required=True, choices=("lnln", "gear"))
  p.add_argument("--weights", required=True, type=pathlib.Path, help="state_dict as .safetensors")
  p.add_argument(
    "--out", required=True, type=pathlib.Path, help="output stem: OUT.msgpack + OUT.json"
  )
  p.add_argument(
    "--bert-heads",
    type=int,
    default=None,
    help="LNLN: BERT attention heads (default hidden size // 64: bert-base, bert-base-chinese)",
  )
  p.add_argument("--hyper-heads", type=int, default=8, help="LNLN: HyperLayer heads (reference: 8)")
  p.add_argument(
    "--text-heads", type=int, default=12, help="GEAR: BERT attention heads (bert-base: 12)"
  )
  p.add_argument(
    "--fusion-heads", type=int, default=4, help="GEAR: fusion Transformer heads (run.py: 4)"
  )
  p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
  return p.parse_args(argv)


def read_weights(weights: pathlib.Path) -> dict[str, Any]:
  """The tensors of a safetensors file; ValueError (one line) for a file that is not safetensors
  or a tensor holding NaN or infinity."""
  import numpy as np
  from safetensors import SafetensorError
  from safetensors.numpy import load_file

  try:
    state = load_file(str(weights))
  except SafetensorError as e:
    raise ValueError(f"{weights}: not a safetensors file ({e})") from None
  for name, tensor in state.items():
    bad = int(np.size(tensor) - np.count_nonzero(np.isfinite(tensor)))
    if bad:
      raise ValueError(f"{weights}: tensor {name!r} holds {bad} non-finite values (NaN or inf)")
  return state


def convert_file(
  method: str,
  weights: pathlib.Path,
  *,
  bert_heads: int | None = None,
  hyper_heads: int = 8,
  text_heads: int = 12,
  fusion_heads: int = 4,
) -> tuple[dict[str, Any], Any]:
  """(params, model config) from a reference safetensors file; ReferenceConversionError if it does
  not fill our model exactly, ValueError if it is not safetensors or holds non-finite values."""
  state = read_weights(weights)
  if method == "lnln":
    from msa_jax.reference import lnln

    return lnln.convert(state, bert_heads=bert_heads, hyper_heads=hyper_heads, source=str(weights))
  from msa_jax.reference import gear

  config = gear.config_from_state_dict(
    state, text_heads=text_heads, fusion_heads=fusion_heads, source=str(weights)
  )
  return gear.convert(state, config, source=str(weights)), config


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  msgpack_path = args.out.with_name(args.out.name + ".msgpack")
  json_path = args.out.with_name(args.out.name + ".json")
  if not args.weights.is_file():
    print(f"error: --weights {args.weights} is not a file", file=sys.stderr)
    return 1
  existing = [str(p) for p in (msgpack_path, json_path) if p.exists()]
  if existing and not args.overwrite:
    print(f"error: {', '.join(existing)} exist(s); pass --overwrite to replace", file=sys.stderr)
    return 1
  try:
    params, config = convert_file(
      args.method,
      args.weights,
      bert_heads=args.bert_heads,
      hyper_heads=args.hyper_heads,
      text_heads=args.text_heads,
      fusion_heads=args.fusion_heads,
    )
  except (ReferenceConversionError, ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  import flax.serialization
  import jax

  with atomic_file(msgpack_path, "wb") as f:
    f.write(flax.serialization.msgpack_serialize(params))
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  write_json_atomic(
    json_path,
    {
      "method": args.method,
      "source": str(args.weights.resolve()),
      "config": dataclasses.asdict(config),
      "parameters": {jax.tree_util.keystr(k): list(v.shape) for k, v in leaves},
      "parameter_count": int(sum(v.size for _, v in leaves)),
    },
  )
  print(
    f"wrote {msgpack_path} ({len(leaves)} tensors, {sum(v.size for _, v in leaves):,} parameters) "
    f"and {json_path}"
  )
  return 0


if __name__ == "__main__":
  sys.exit(cli.run_script(main))
