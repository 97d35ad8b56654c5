"""Docstrings and ``--help`` texts hold no measured numbers: results live in docs/results.md, rendered
from the benchmarks' JSON, where a rerun updates them. A decimal number in a docstring or help text is
allowed only where it cannot go stale: a literal of the same module's code (a default, a limit, a
constant), a default or an example value of an option, a reference to the paper (Theorem 3.4, §3.3),
or one of the definitions listed below with its source."""
from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rediffuse"
DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")
# what comes right before a number that names a part of a paper, not a value
REFERENCE = re.compile(r"(§|Eqs?\.?|Table|Section|Fig(ure|\.)?|Theorems?|Corollar(y|ies)|Lemma)"
                       r"[\s.]*(\d+\.\d+\s*(-|–|/|and|or)\s*|\d+\.\d+ \([^)]*\) or )?$")
# a default or an example of an option's value
OPTION_VALUE = re.compile(r"(default:? |--[a-z-]+ |×)$")

# Definitions that are not literals of their module's code, each with its source.
DEFINITIONS = {
    ("data/__init__.py", "127.5"): "the [-1, 1] scaling written out (data.colour holds the code)",
    ("data/__init__.py", "0.299"): "BT.601 luma coefficients (JPEG/JFIF)",
    ("data/__init__.py", "0.587"): "BT.601", ("data/__init__.py", "0.114"): "BT.601",
    ("data/__init__.py", "0.5"): "BT.601 chroma scale", ("data/__init__.py", "0.886"): "BT.601 (1 − K_B)",
    ("data/__init__.py", "0.701"): "BT.601 (1 − K_R)",
    ("metrics/grey.py", "0.298936"): "MATLAB rgb2gray's coefficients",
    ("metrics/grey.py", "0.587043"): "MATLAB rgb2gray", ("metrics/grey.py", "0.114021"): "MATLAB rgb2gray",
    ("metrics/structural.py", "0.0448"): "MS-SSIM scale weights (Wang et al. 2003)",
    ("metrics/structural.py", "0.2856"): "MS-SSIM", ("metrics/structural.py", "0.3001"): "MS-SSIM",
    ("metrics/structural.py", "0.2363"): "MS-SSIM", ("metrics/structural.py", "0.1333"): "MS-SSIM",
    ("metrics/structural.py", "0.01"): "SSIM's K1", ("metrics/structural.py", "0.03"): "SSIM's K2",
    ("theory/fields.py", "0.75"): "torch's bicubic coefficient a = −0.75",
    ("theory/networks.py", "1.65"): "the radius beyond which the test fields' bumps vanish, from their definition",
    ("resources.py", "1.5"): "an example of the formatting (1536 bytes → 1.5 KiB)",
    ("tutorial.py", "0.5"): "an example of a command-line literal",
}


def _texts(tree: ast.AST, cli: bool):
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc
        if cli and isinstance(node, ast.keyword) and node.arg in ("help", "description", "epilog"):
            yield ast.unparse(node.value)
        if cli and isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in ("DESCRIPTION", "EPILOG") for t in node.targets):
            yield ast.unparse(node.value)


def _code_numbers(tree: ast.AST) -> set[float]:
    return {float(n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool)}


def test_docstrings_and_help_hold_no_measured_numbers():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        tree = ast.parse(path.read_text())
        code = _code_numbers(tree)
        for text in _texts(tree, cli=rel.startswith("cli/")):
            for m in DECIMAL.finditer(text):
                before = text[max(0, m.start() - 40):m.start()]
                if REFERENCE.search(before) or OPTION_VALUE.search(before) or float(m.group(1)) in code:
                    continue
                if (rel, m.group(1)) in DEFINITIONS:
                    continue
                found.append(f"rediffuse/{rel}: {m.group(1)} in '…{text[max(0, m.start() - 50):m.end() + 20]}…'")
    assert not found, ("measured numbers in docstrings or --help (move them to docs/results.md, or list a "
                       "definition in DEFINITIONS):\n" + "\n".join(found))


def test_the_check_finds_a_measured_number():
    tree = ast.parse('def f():\n    """Lytro QMI 1.1826, within 0.0001 of quality."""\n')
    texts = list(_texts(tree, cli=False))
    assert [m.group(1) for t in texts for m in DECIMAL.finditer(t)] == ["1.1826", "0.0001"]
