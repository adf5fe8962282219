"""Turn an authors' PyTorch checkpoint (.pth) into a safetensors state_dict for import_reference.py.

Runs only where torch is installed (never a dependency of msa_jax), e.g. a throwaway virtualenv:

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0 safetensors
    /tmp/torchvenv/bin/python scripts/reference/pth_to_safetensors.py model.pth model.safetensors

Accepts a bare state_dict or a dict holding one under 'state_dict' / 'model' (LNLN saves
{'state_dict': ...}). Loads with `weights_only=True`, so the checkpoint cannot run code.
"""

import sys

import torch
from safetensors.torch import save_file


def main(src: str, dst: str) -> None:
  obj = torch.load(src, map_location="cpu", weights_only=True)
  for key in ("state_dict", "model"):
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
      obj = obj[key]
  tensors = {k: v.detach().float().contiguous() for k, v in obj.items() if torch.is_tensor(v)}
  skipped = sorted(k for k, v in obj.items() if not torch.is_tensor(v))
  save_file(tensors, dst)
  print(
    f"wrote {dst}: {len(tensors)} tensors" + (f"; skipped non-tensors {skipped}" if skipped else "")
  )


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  main(sys.argv[1], sys.argv[2])
