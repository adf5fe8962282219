"""Compiled HLO text read for attribution: each instruction's opcode, its source op_name, the
computation it calls and the one it is in; op_names classified into model parts."""

from __future__ import annotations

import collections
import re

Instructions = dict[str, tuple[str, str | None, str | None, str | None]]

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_OPCODE = re.compile(r"\s([a-z][a-z0-9\-]*)\(")
_COMP = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_TRANSFORMS = re.compile(
  r"\b(?:jit|jvp|transpose|vmap|checkpoint|remat|pjit|while|body|cond|"
  r"rematted_computation)\(([^()]*)\)"
)
_CORE = re.compile(r"(^|/)(attn|self|attention_core)($|/)")
_PROJECTION = re.compile(r"/(to_q|to_k|to_v|to_out|query|key|value|to_k_a|to_v_a|to_k_v|to_v_v)$")


def parse_hlo(hlo: str) -> tuple[Instructions, dict[str, list[str]]]:
  """HLO text -> ({instruction: (opcode, op_name or None, called computation or None, the
  computation it is in)}, {computation: op_names of its instructions})."""
  instrs, comps, current = {}, collections.defaultdict(list), None
  for line in hlo.splitlines():
    m = _COMP.match(line)
    if m and "=" not in line.split("{")[0]:
      current = m.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, rest = m.groups()
    op = _OPCODE.search(" " + rest.split(", metadata=")[0])
    op_name = re.search(r'op_name="([^"]*)"', rest)
    calls = re.search(r"calls=%?([\w.\-]+)", rest)
    instrs[name] = (
      op.group(1) if op else "?",
      op_name.group(1) if op_name else None,
      calls.group(1) if calls else None,
      current,
    )
    if current and op_name:
      comps[current].append(op_name.group(1))
  return instrs, comps


def classify_op(op_name: str | None) -> tuple[str, str, str]:
  """op_name metadata -> (forward/backward, top-level module, kind: attention core / dense /
  other)."""
  if not op_name:
    return "?", "?", "other"
  phase = "backward" if "transpose(" in op_name else "forward"
  path, previous = op_name, None
  while path != previous:  # unwrap nested transforms: transpose(jvp(LNLN)) -> LNLN
    previous = path
    path = _TRANSFORMS.sub(r"\1", path)
  parts = [p for p in path.split("/") if p]
  # Drop everything up to the model's class name (LNLN, GEAR) where present.
  for i, p in enumerate(parts):
    if p in ("LNLN", "GEAR"):
      parts = parts[i + 1 :]
      break
  else:
    parts = parts[1:]
  module = parts[0] if len(parts) > 1 else "(top)"
  inner = "/".join(parts[:-1])
  leaf = parts[-1] if parts else ""
  is_dot = "dot_general" in leaf or "einsum" in leaf
  core = _CORE.search(inner) is not None and not _PROJECTION.search(inner)
  if core or "hyper" in module and is_dot and not re.search(r"/to_", inner):
    kind = "attention core"
  elif is_dot:
    kind = "dense"
  else:
    kind = "other"
  return phase, module, kind


def instruction_op_name(name: str, instrs: Instructions, comps: dict[str, list[str]]) -> str | None:
  """The op_name an instruction's time is attributed to: its own, else that of the computation it
  calls (the dots first), else the most common one of the computation it is in (a loop body)."""
  opcode, op_name, calls, parent = instrs[name]
  for comp in (calls, None if op_name else parent):
    if comp and comps.get(comp):
      names = comps[comp]
      dots = [n for n in names if "dot_general" in n]
      return collections.Counter(dots or names).most_common(1)[0][0]
  return op_name
