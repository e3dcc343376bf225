"""The one-way import rule of ARCHITECTURE.md, checked on the source of every module.

Every `import` and `from ... import` of every module under adacorr/ is read with `ast`
(function-level imports included). A module may import modules of lower layers and
of its own package; an import of a higher layer or of another package of the same
layer fails, as does an import cycle (between packages or inside one) and the import
of a private name (`_x`) from another module.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# ARCHITECTURE.md's layers, bottom to top.
LAYERS = (
    ("adacorr.core",),
    ("adacorr.parallel", "adacorr.models", "adacorr.corruptions"),
    ("adacorr.data", "adacorr.augment", "adacorr.perceptual"),
    ("adacorr.attacks", "adacorr.metrics"),
    ("adacorr.methods",),
    ("adacorr.train",),
    ("adacorr.evaluation",),
    ("adacorr.run",),
)


def module_files(root: pathlib.Path, package: str) -> dict[str, pathlib.Path]:
  """`{dotted module name: path}` of every .py file of `package` under `root`."""
  out = {}
  for path in sorted((root / package.replace(".", "/")).rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    out[".".join(parts)] = path
  return out


def imports_of(name: str, path: pathlib.Path, modules) -> list[tuple[str, str | None, int]]:
  """`(imported module, imported name or None, line)` for each adacorr import in `path`."""
  tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
  package = name if path.name == "__init__.py" else name.rpartition(".")[0]
  out = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out += [(a.name, None, node.lineno) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        parent = package.split(".")[:len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([base] if base else []))
      for a in node.names:
        sub = f"{base}.{a.name}"
        out.append((sub, None, node.lineno) if sub in modules else (base, a.name, node.lineno))
  return [o for o in out if o[0].split(".")[0] == "adacorr"]


def layer_of(module: str, layers=LAYERS) -> tuple[int, str] | None:
  """`(layer index, package)` of a module, or None for the top-level `adacorr`."""
  for i, packages in enumerate(layers):
    for p in packages:
      if module == p or module.startswith(p + "."):
        return i, p
  return None


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """The strongly connected components with more than one node (Tarjan)."""
  index, low, stack, on, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      comp = []
      while True:
        w = stack.pop()
        on.discard(w)
        comp.append(w)
        if w == v:
          break
      if len(comp) > 1:
        out.append(sorted(comp))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return out


def violations(root: pathlib.Path, layers=LAYERS, top: str = "adacorr") -> list[str]:
  """Every breach of the import rule in the package `top` under `root`, as text."""
  modules = module_files(root, top)
  problems, graph = [], {m: set() for m in modules}
  for name, path in modules.items():
    where = layer_of(name, layers)
    for target, imported, line in imports_of(name, path, modules):
      loc = f"{path.relative_to(root)}:{line}"
      if target not in modules:
        problems.append(f"{loc}: imports {target}, which is not a module")
        continue
      graph[name].add(target)
      if imported and imported.startswith("_") and not imported.startswith("__"):
        problems.append(f"{loc}: imports the private name {imported} from {target}")
      there = layer_of(target, layers)
      if where is None or there is None:
        if where is None and name != top:
          problems.append(f"{loc}: {name} is in no layer of ARCHITECTURE.md")
        continue
      if there[0] > where[0]:
        problems.append(f"{loc}: {name} (layer {where[0]}) imports {target} from the higher "
                        f"layer {there[0]}")
      elif there[0] == where[0] and there[1] != where[1]:
        problems.append(f"{loc}: {name} imports {target}, another package of its layer "
                        f"{where[0]}")
  # A package's __init__ importing its own modules is not a cycle by itself.
  graph = {m: {t for t in ts if not (m.startswith(t + ".") and modules[t].name == "__init__.py")}
           for m, ts in graph.items()}
  for cycle in find_cycles(graph):
    problems.append("import cycle: " + " <-> ".join(cycle))
  return problems


def test_adacorr_follows_the_import_rule():
  problems = violations(ROOT)
  assert not problems, "\n".join(problems)


def test_every_package_is_in_a_layer():
  packages = {p.parent.name for p in (ROOT / "adacorr").glob("*/__init__.py")}
  packages |= {p.stem for p in (ROOT / "adacorr").glob("*.py") if p.stem != "__init__"}
  placed = {p.split(".")[1] for layer in LAYERS for p in layer}
  assert packages <= placed, f"not in LAYERS (add them to ARCHITECTURE.md too): {packages - placed}"


def test_architecture_md_lists_the_layers():
  text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
  for layer in LAYERS:
    for package in layer:
      assert f"`{package}`" in text, f"ARCHITECTURE.md does not name {package}"


def _write_package(root: pathlib.Path, files: dict[str, str]) -> None:
  for rel, text in files.items():
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


_CLEAN = {
    "adacorr/__init__.py": "",
    "adacorr/core/__init__.py": "from adacorr.core.keys import split\n",
    "adacorr/core/keys.py": "def split(): pass\n",
    "adacorr/attacks/__init__.py": "",
    "adacorr/attacks/lp.py": "from adacorr.core import keys\n",
    "adacorr/methods/__init__.py": "",
    "adacorr/methods/at.py": "from adacorr.attacks import lp\n",
}


def test_the_checker_passes_a_clean_tree(tmp_path):
  _write_package(tmp_path, _CLEAN)
  assert violations(tmp_path) == []


@pytest.mark.parametrize("change, expected", [
    # an upward import inside a function (a "lazy" import) still counts
    ({"adacorr/attacks/lp.py": "def f():\n  from adacorr.methods import at\n"},
     "from the higher layer"),
    # a cycle inside one package
    ({"adacorr/attacks/a.py": "from adacorr.attacks import b\n",
      "adacorr/attacks/b.py": "from adacorr.attacks import a\n"}, "import cycle"),
    # a private name across modules
    ({"adacorr/attacks/pgd.py": "from adacorr.attacks.lp import _tiny\n"}, "private name _tiny"),
    # two packages of one layer
    ({"adacorr/metrics/__init__.py": "", "adacorr/metrics/m.py": "import adacorr.attacks.lp\n"},
     "another package of its layer"),
])
def test_the_checker_fails_on_a_reintroduced_breach(tmp_path, change, expected):
  _write_package(tmp_path, {**_CLEAN, **change})
  problems = violations(tmp_path)
  assert any(expected in p for p in problems), problems


def test_model_default_statistics_equal_the_dataset_registry():
  # models/ (layer 1) states the numbers itself rather than importing data/ (layer 2).
  from adacorr import data, models  # pylint: disable=import-outside-toplevel
  from adacorr.models import common  # pylint: disable=import-outside-toplevel
  for name, mean, std in (("cifar10", models.CIFAR10_MEAN, models.CIFAR10_STD),
                          ("imagenet100", common.IMAGENET_MEAN, common.IMAGENET_STD),
                          ("fashion_mnist", common.FASHION_MNIST_MEAN, common.FASHION_MNIST_STD)):
    assert tuple(mean) == tuple(data.DATASETS[name].mean), name
    assert tuple(std) == tuple(data.DATASETS[name].std), name
