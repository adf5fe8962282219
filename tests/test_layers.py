"""The package's import graph keeps its layers and has no cycles.

Every module of msa_jax/ is parsed (no import runs) and every import statement in it counts,
function-level ones included. The layers:
- utilities at the package root (io, text, modalities, errors, sharding, xla, ...) import no other
  part of msa_jax except each other;
- metrics is plain numpy and losses is pure JAX: neither imports anything of msa_jax;
- data imports no models / train / evaluate / report / reference;
- models import no data / train / evaluate / report;
- evaluate imports no train / report; report imports no train;
- reference (conversion of the authors' checkpoints) imports no data / train / evaluate / report;
- inference (restoring, predicting with and exporting a trained model) reads what a run wrote
  through data / models / evaluate and the method glue of train, never the training loop (checked
  on every module it reaches); only bench and the package's lazy `msa_jax.restore` import it;
- bench (speed and memory measurement) sits on top, like the scripts: nothing imports it.
"""

from __future__ import annotations

import ast
import pathlib
import sys

import pytest

PACKAGE = "msa_jax"
ROOT = pathlib.Path(__file__).resolve().parents[1] / PACKAGE
LAYERS = ("data", "models", "train", "evaluate", "report", "reference", "inference", "bench")
ALL = frozenset(LAYERS) | {"utility", "metrics", "losses"}
# Layer -> the layers it must not import.
FORBIDDEN = {
  "utility": ALL - {"utility"},
  "metrics": ALL,
  "losses": ALL,
  "data": frozenset({"models", "train", "evaluate", "report", "reference", "inference", "bench"}),
  "models": frozenset({"data", "train", "evaluate", "report", "inference", "bench"}),
  "evaluate": frozenset({"train", "report", "inference", "bench"}),
  "report": frozenset({"train", "inference", "bench"}),
  "reference": frozenset({"data", "train", "evaluate", "report", "inference", "bench"}),
  "train": frozenset({"inference", "bench"}),
  "inference": frozenset({"report", "bench"}),
  "bench": frozenset(),
  "package": frozenset({"bench"}),
}
# Modules that must not reach the training loop through any chain of imports.
LOOP = "msa_jax.train.loop"
LOOP_FREE = ("msa_jax.inference",)
# What metrics (plain numpy) and losses (pure JAX) may import besides the standard library.
THIRD_PARTY_ALLOWED = {"metrics": {"numpy"}, "losses": {"jax"}}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  parts = [root.name, *path.relative_to(root).with_suffix("").parts]
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  """Every module of the package: dotted name -> file."""
  return {module_name(p, root): p for p in sorted(root.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
  if not node.level:
    return node.module or ""
  base = module.split(".") if is_package else module.split(".")[:-1]
  base = base[: len(base) - node.level + 1]
  return ".".join(base + ([node.module] if node.module else []))


def imports_of(
  source: str, module: str, is_package: bool, modules: set[str]
) -> tuple[set[str], set[str]]:
  """(the package modules `source` imports, the top-level names of everything it imports).

  `from a.b import c` is an import of module `a.b.c` when that is a module of the package, else of
  `a.b`; imports inside functions count like any other.
  """
  internal, top = set(), set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = _absolute(node, module, is_package)
      names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    else:
      continue
    for name in names:
      top.add(name.split(".")[0])
      if name.split(".")[0] == PACKAGE:
        while name not in modules and "." in name:  # `import a.b.c` of a name inside a module
          name = name.rsplit(".", 1)[0]
        internal.add(name)
  return internal, top


def import_graph(root: pathlib.Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
  """(module -> package modules it imports, module -> top-level packages it imports)."""
  files = package_modules(root)
  graph, tops = {}, {}
  for name, path in files.items():
    graph[name], tops[name] = imports_of(
      path.read_text(encoding="utf-8"), name, path.name == "__init__.py", set(files)
    )
    graph[name].discard(name)
  return graph, tops


def layer(module: str) -> str:
  parts = module.split(".")
  if len(parts) == 1:
    return "package"
  if parts[1] in LAYERS:
    return parts[1]
  return parts[1] if parts[1] in ("metrics", "losses") else "utility"


def layer_violations(graph: dict[str, set[str]], tops: dict[str, set[str]]) -> list[str]:
  """Every import that crosses a forbidden layer boundary, as "a -> b (rule)"."""
  out = []
  for module, deps in sorted(graph.items()):
    for dep in sorted(deps):
      if layer(dep) in FORBIDDEN[layer(module)]:
        out.append(f"{module} -> {dep} ({layer(module)} must not import {layer(dep)})")
  for module, names in sorted(tops.items()):
    allowed = THIRD_PARTY_ALLOWED.get(layer(module))
    if allowed is not None:
      others = names - set(sys.stdlib_module_names) - {"__future__", PACKAGE} - allowed
      out += [
        f"{module} -> {n} ({layer(module)} may import only {sorted(allowed)} besides the "
        "standard library)"
        for n in sorted(others)
      ]
  return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index, low, on_stack, stack, out = {}, {}, set(), [], []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def test_every_module_is_seen_with_its_imports():
  graph, _ = import_graph()
  assert len(graph) > 30 and "msa_jax.train.loop" in graph
  # A function-level import counts: the loop's lazy import of the synthetic benchmark.
  assert "msa_jax.data.synthetic" in graph["msa_jax.train.loop"]


def test_imports_keep_the_layers():
  assert layer_violations(*import_graph()) == []


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
  """Every module `start` imports directly or through other modules."""
  seen, todo = set(), [start]
  while todo:
    for dep in graph.get(todo.pop(), ()):
      if dep not in seen:
        seen.add(dep)
        todo.append(dep)
  return seen


def test_inference_never_reaches_the_training_loop():
  graph, _ = import_graph()
  for module in LOOP_FREE:
    assert module in graph
    assert "msa_jax.train.lnln" in reachable(graph, module)  # the method glue it does use
    assert LOOP not in reachable(graph, module), f"{module} reaches {LOOP}"


def test_the_reachability_check_catches_a_planted_chain():
  graph = {"a": {"b"}, "b": {"c"}, "c": {LOOP}}
  assert LOOP in reachable(graph, "a") and reachable(graph, "c") == {LOOP}


def test_no_import_cycles():
  assert cycles(import_graph()[0]) == []


@pytest.mark.parametrize(
  "module, source, violation",
  [
    ("msa_jax.data.x", "def f():\n  from msa_jax.models import bert\n", "-> msa_jax.models.bert"),
    ("msa_jax.models.x", "from msa_jax.data.split import Split\n", "-> msa_jax.data.split"),
    ("msa_jax.evaluate.x", "import msa_jax.train.loop\n", "-> msa_jax.train.loop"),
    ("msa_jax.metrics", "import jax.numpy as jnp\n", "-> jax"),
    ("msa_jax.io", "from msa_jax import metrics\n", "-> msa_jax.metrics"),
  ],
)
def test_the_checks_catch_a_planted_violation(module, source, violation):
  modules = {
    "msa_jax",
    "msa_jax.metrics",
    "msa_jax.io",
    "msa_jax.models.bert",
    "msa_jax.data.split",
    "msa_jax.train.loop",
    module,
  }
  internal, top = imports_of(source, module, False, modules)
  found = layer_violations({module: internal}, {module: top})
  assert len(found) == 1 and found[0].startswith(f"{module} {violation}"), found


def test_the_checks_catch_a_planted_cycle():
  modules = {"msa_jax.data", "msa_jax.data.a", "msa_jax.data.b"}
  sources = {
    "msa_jax.data.a": "from msa_jax.data import b\n",
    "msa_jax.data.b": "def f():\n  from . import a\n",
  }
  graph = {m: imports_of(src, m, False, modules)[0] for m, src in sources.items()}
  assert cycles(graph) == [["msa_jax.data.a", "msa_jax.data.b"]]
