"""The package's layering, checked on its import graph (docs/architecture.md draws the same layers).

A module may import modules of its own layer or of lower layers only, and the graph has no cycle.
The layer order below is the one place (besides the picture in docs/architecture.md) where it is
written down; a new module must be added here, so that its place is a decision, not an accident.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "rediffuse"

# lowest first; a module may import from its own layer and the ones before it
LAYERS: list[tuple[str, set[str]]] = [
    ("core", {"paths", "runtime", "atomic", "imageio", "groups", "weights", "orientation"}),
    ("equivariant layers", {"bases", "bconv", "layers", "equivariance"}),
    ("models", {"unet", "diffusion", "defocus", "tiling"}),
    ("data and metrics", {"data", "synthesis", "degradations", "metrics", "baselines", "peers", "align", "evidence",
                          "exposure"}),
    ("checkpoints", {"checkpoint"}),
    ("pipelines", {"stack", "maps", "fusion_model", "fuse", "train", "resources"}),
    ("studies", {"evaluate", "fewstep", "restore", "ablation", "theory", "sample_efficiency"}),
    ("presentation", {"viz", "tutorial", "tutorial_solutions", "report"}),
    ("interface", {"cli", "__main__", ""}),  # "" = the package itself (its public API)
]
# optional third-party packages: the only imports allowed inside functions of the library (traitlets,
# zmq and jupyter_client arrive with papermill: the tutorial configures the kernels it starts)
OPTIONAL = {"papermill", "ipywidgets", "tifffile", "traitlets", "zmq", "jupyter_client"}
# heavy modules that only a rarely used path needs, imported where it runs so that `rediffuse fuse`
# does not pay for them at start-up: scipy.signal (about a second; the disk blur of synthetic pairs);
# scikit-image's registration (phase correlation starts a registration), sample photos and resize
# (synthetic pairs): `rediffuse fuse` imports none of them before it needs them
LAZY = {"scipy.signal", "skimage.registration", "skimage.data", "skimage.transform"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Package modules that ``name`` imports (relative or absolute), as names relative to the package."""
    tree = ast.parse(path.read_text())
    base = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = [b for b in base if b]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            pkg = base[: len(base) - (node.level - 1)]
            target = ".".join(pkg + ([node.module] if node.module else []))
            if node.module is None:  # from . import x: x is a module or a name of the package
                for alias in node.names:
                    full = ".".join(filter(None, [target, alias.name]))
                    out.add(full if full in known else target)
            else:
                out.add(target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "rediffuse" or alias.name.startswith("rediffuse."):
                    out.add(alias.name.removeprefix("rediffuse").lstrip("."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rediffuse"):
            out.add(node.module.removeprefix("rediffuse").lstrip("."))
    out.discard(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(m, p, set(mods)) for m, p in mods.items()}


def _layer(module: str) -> int:
    top = module.split(".")[0]
    for i, (_, members) in enumerate(LAYERS):
        if top in members:
            return i
    raise AssertionError(f"rediffuse.{module} is in no layer: add it to LAYERS in tests/test_architecture.py "
                         "and to docs/architecture.md")


def test_every_module_has_a_layer():
    for m in _graph():
        _layer(m)


def test_no_module_imports_from_a_higher_layer():
    bad = []
    for m, deps in _graph().items():
        for d in deps:
            # a package's __init__ re-exporting its own submodules is fine
            if d.startswith(m + ".") if m else False:
                continue
            if _layer(d) > _layer(m):
                bad.append(f"rediffuse.{m} ({LAYERS[_layer(m)][0]}) imports rediffuse.{d} ({LAYERS[_layer(d)][0]})")
    assert not bad, "\n".join(bad)


def test_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            if d not in graph:
                continue
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                raise AssertionError("import cycle: " + " -> ".join(f"rediffuse.{c}" for c in cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_function_level_imports_in_the_library():
    """Imports sit at module level, except optional packages and the command-line modules (each command
    loads its library module when it runs, so `rediffuse --help` stays instant and `rediffuse fuse`
    never loads the trainer)."""
    bad = []
    for m, path in _modules().items():
        if m.split(".")[0] in ("cli", "__main__"):
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                for n in names:
                    if n.split(".")[0] not in OPTIONAL and n not in LAZY:
                        bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno} imports {n} inside {fn.name}()")
    assert not bad, "\n".join(bad)


def test_equivariance_checker_is_small_and_standalone():
    path = PKG / "equivariance.py"
    assert len(path.read_text().splitlines()) <= 200
    assert _graph()["equivariance"] <= {"groups", "runtime"}


def _loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=PKG.parent)
    return set(out.stdout.split())


@pytest.mark.slow
def test_the_inference_path_loads_no_trainer():
    """`import rediffuse.fuse` loads neither the trainer nor any torch.distributed module beyond what
    `import torch` itself loads, nor scikit-image (see LAZY)."""
    torch_only = _loaded_after("import torch")
    fuse = _loaded_after("import rediffuse.fuse")
    assert "rediffuse.train" not in fuse
    assert not {m for m in fuse if m.split(".")[0] == "skimage"}
    extra_dist = {m for m in fuse - torch_only if m.startswith("torch.distributed")}
    assert not extra_dist, sorted(extra_dist)


def test_architecture_document_names_every_layer():
    text = (PKG.parent / "docs" / "architecture.md").read_text()
    for name, members in LAYERS:
        assert name in text, name
        for member in members - {""}:
            assert f"`{member}`" in text, f"docs/architecture.md does not mention `{member}`"


# Size limits: a module longer than this, or a function, is split unless docs/architecture.md lists it
# under "Size limits" with its reason ("- `path` (N lines): why" or "- `path:function` (N lines): why").
MODULE_LINES = 600
FUNCTION_LINES = 80


def _size_exceptions() -> dict[str, int]:
    import re

    text = (PKG.parent / "docs" / "architecture.md").read_text()
    section = text.split("## Size limits", 1)[1].split("\n## ", 1)[0] if "## Size limits" in text else ""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^- `([^`]+)` \((\d+) lines\): \S", section, re.M)}


def _sizes() -> dict[str, int]:
    """Lines of every module (``rediffuse/x.py``) and function (``rediffuse/x.py:name``, methods as
    ``Class.name``) of the package."""
    out: dict[str, int] = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG.parent))
        out[rel] = len(path.read_text().splitlines())
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", [])
            for fn in body if isinstance(body, list) else []:
                if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    owner = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
                    out[f"{rel}:{owner}{fn.name}"] = fn.end_lineno - fn.lineno + 1
    return out


def test_modules_and_functions_stay_small():
    allowed = _size_exceptions()
    too_big = []
    for name, lines in _sizes().items():
        limit = MODULE_LINES if ":" not in name else FUNCTION_LINES
        if lines > max(limit, allowed.get(name, 0)):
            too_big.append(f"{name}: {lines} lines (limit {allowed.get(name, limit)})")
    assert not too_big, ("split these, or list them with a reason under 'Size limits' in docs/architecture.md:\n"
                         + "\n".join(too_big))


def test_size_exceptions_are_still_needed():
    sizes = _sizes()
    for name, limit in _size_exceptions().items():
        assert name in sizes, f"docs/architecture.md lists {name}, which does not exist"
        default = MODULE_LINES if ":" not in name else FUNCTION_LINES
        assert sizes[name] > default, f"{name} is {sizes[name]} lines now: remove it from the exceptions"
