"""The ``rediffuse`` command line as a whole: entry points, help, import hygiene, and ``rediffuse.runtime``."""
import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rediffuse import cli, runtime
from rediffuse.cli import common

CLI_DIR = Path(cli.__file__).parent
COMMANDS = ["tutorial", "train", "evaluate", "fuse"]


def python(*args, code=None):
    argv = [sys.executable, *(["-c", code] if code else []), *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ----------------------------------------------------------------------------- entry points


def test_python_dash_m_help():
    r = python("-m", "rediffuse", "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: rediffuse ") and all(c in r.stdout for c in COMMANDS)
    r = python("-m", "rediffuse", "fuse", "--help")
    assert r.returncode == 0, r.stderr
    assert "usage: rediffuse fuse" in r.stdout and "rediffuse fuse near.jpg far.jpg -o fused.png" in r.stdout


def test_python_dash_m_cli_for_torchrun():
    r = python("-m", "rediffuse.cli", "train", "--help")
    assert r.returncode == 0 and "usage: rediffuse train" in r.stdout, r.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_the_runtime_options(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: rediffuse {command}" in text and "examples:" in text
    assert "--device {auto,cpu,cuda}" in text
    assert ("--threads N" in text) == (command != "tutorial")


def test_train_examples_stay_one_per_line(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert "  rediffuse train -o runs/rot --resume     # continue after an interruption" in lines
    assert "(default: 16)" in " ".join(lines)  # defaults still shown


def test_training_flags_are_all_there():
    p = cli.build_parser()
    args = p.parse_args(["train", "-o", "r", "--layered", "3", "--photos", "P", "--loss", "l1_grad",
                         "--attention", "2", "--layout", "fusiondiff", "--rgb", "--threads", "1"])
    assert (args.layered, args.photos, args.loss, args.attention, args.layout, args.rgb, args.threads) == \
        (3, "P", "l1_grad", 2, "fusiondiff", True, 1)
    assert args.func.__module__ == "rediffuse.cli.train"


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == common.EXIT_USAGE  # no command: the help, and a usage error
    assert "COMMAND" in capsys.readouterr().out
    for argv in (["evaluate", "d", "-m", "gff", "--threads", "-1"], ["train", "-o", "r", "--device", "tpu"]):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_failures_exit_1_with_one_line(tmp_path, capsys):
    assert cli.main(["evaluate", str(tmp_path / "nope"), "-m", "gff", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rediffuse evaluate: error: ") and len(err.splitlines()) == 1


# ----------------------------------------------------------------------------- import hygiene


def test_cli_modules_have_no_import_cycle():
    """Edges between the modules of ``rediffuse/cli/``, from their import statements."""
    names = {p.stem for p in CLI_DIR.glob("*.py")}
    edges = {}
    for path in CLI_DIR.glob("*.py"):
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                # ``from . import x``: a submodule x, or a name defined by the package's __init__
                deps |= {node.module} if node.module else {a.name if a.name in names else "__init__"
                                                           for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rediffuse.cli"):
                deps.add((node.module.split(".") + ["__init__"])[2])
            elif isinstance(node, ast.Import):
                deps |= {(a.name.split(".") + ["__init__"])[2] for a in node.names
                         if a.name.startswith("rediffuse.cli")}
        edges[path.stem] = (deps & names) - {path.stem}

    state = {}

    def visit(n, stack):
        state[n] = "open"
        for d in edges[n]:
            assert state.get(d) != "open", f"import cycle: {' -> '.join([*stack, n, d])}"
            if d not in state:
                visit(d, [*stack, n])
        state[n] = "done"

    for n in edges:
        if n not in state:
            visit(n, [])
    assert not edges["common"]  # the shared layer knows no command
    assert not {"fuse_cli", "cli"} & {p.stem for p in CLI_DIR.parent.glob("*.py")}


def test_runtime_imports_nothing_from_the_package():
    tree = ast.parse(Path(runtime.__file__).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0 and not (node.module or "").startswith("rediffuse"), ast.dump(node)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("rediffuse") for a in node.names)


def test_importing_the_fuse_command_is_light():
    code = ("import sys, rediffuse.cli.fuse, rediffuse.cli; rediffuse.cli.build_parser(); "
            "print(sorted(m for m in ('torch', 'rediffuse.train', 'rediffuse.fuse') if m in sys.modules))")
    r = python(code=code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_running_the_fuse_command_does_not_import_train(tiny_checkpoint, tmp_path):
    for i in range(2):
        Image.fromarray(np.full((24, 24), 60 + 100 * i, np.uint8)).save(tmp_path / f"{i}.png")
    code = ("import sys; from rediffuse.cli import main; "
            f"rc = main(['fuse', {str(tmp_path / '0.png')!r}, {str(tmp_path / '1.png')!r}, '-o', "
            f"{str(tmp_path / 'o.png')!r}, '--checkpoint', {str(tiny_checkpoint)!r}, '--steps', '1', '-q', "
            "'--device', 'cpu', '--threads', '1']); print(rc, 'rediffuse.train' in sys.modules)")
    r = python(code=code)
    assert r.returncode == 0, r.stderr
    if r.stdout.split() == ["0", "True"] and "True" in python(
            code="import sys, rediffuse.fuse; print('rediffuse.train' in sys.modules)").stdout:
        pytest.xfail("rediffuse.fuse itself still imports rediffuse.train (being split out separately)")
    assert r.stdout.split() == ["0", "False"]


# ----------------------------------------------------------------------------- runtime


def test_resolve_device():
    assert runtime.resolve_device("cpu") == "cpu"
    assert runtime.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'; use auto, cpu or cuda"):
        runtime.resolve_device("tpu")


def test_resolve_device_cuda_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="CUDA was requested but this PyTorch build sees no GPU; use device=cpu"):
        runtime.resolve_device("cuda:1")


def test_setup_applies_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert runtime.setup("cpu", 2) == "cpu" and torch.get_num_threads() == 2
        monkeypatch.setattr(runtime, "idle_cores", lambda: 1)
        runtime.setup("cpu", 0)  # 0: the idle cores (tests/test_runtime.py)
        assert torch.get_num_threads() == 1
        with pytest.raises(ValueError, match="threads"):
            runtime.set_threads(-1)
    finally:
        torch.set_num_threads(before)


def test_exact_precision_turns_tf32_off_and_restores():
    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = [f.allow_tf32 for f in flags]
    try:
        for f in flags:
            f.allow_tf32 = True
        with runtime.exact_precision():
            assert [f.allow_tf32 for f in flags] == [False, False]
        assert [f.allow_tf32 for f in flags] == [True, True]
        runtime.exact_precision()  # called on its own: off for good
        assert [f.allow_tf32 for f in flags] == [False, False]
    finally:
        for f, s in zip(flags, saved):
            f.allow_tf32 = s
