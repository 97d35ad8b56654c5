"""Run the tutorial notebooks with papermill (used by ``rediffuse tutorial`` and by the tests).

Every notebook in ``notebooks/`` has a cell tagged ``parameters`` that takes at least:

- ``SMOKE``        True: the small configuration that runs on a laptop CPU in minutes
- ``DEVICE``       ``"auto"``, ``"cpu"`` or ``"cuda"``
- ``RESULTS_PATH`` where the notebook writes its results JSON (``""``: nowhere)
- ``OUTPUT_DIR``   where it saves figures

Notebooks add their own parameters (e.g. ``STEPS``, ``BATCH``, ``CROP`` in notebook 03);
``run_tutorial(parameters=...)`` hands each notebook the ones its ``parameters`` cell defines. In the
full configuration no cell has a time limit (training the paper's model takes hours); the small one
stops any cell after 30 minutes, which only a hung cell reaches.

``rediffuse tutorial`` says what it is doing as it goes (:class:`NotebookLog`): one line naming each
notebook as it starts, a line whenever a notebook has been silent for ``HEARTBEAT_S`` seconds (the cell
that runs and the last line it printed), and each notebook's result line (its ``headline`` result,
else its run time) as soon as that notebook ends. Before the first notebook it says, in one line,
when the benchmark data the notebooks read was not found and they fall back to synthetic pairs
(:func:`missing_data`).

Executed copies go to an output folder (``outputs/`` is git-ignored), never back into ``notebooks/``.
Three kinds of run keep apart: ``rediffuse tutorial`` writes to ``outputs/tutorial`` (or ``-o``), the
notebook tests to ``outputs/test-notebooks``, and ``pytest --nbval-lax notebooks/`` (which runs the
notebooks as committed, without papermill) to ``outputs/nbval``: ``notebooks/conftest.py`` appends
:func:`nbval_parameters` to each parameters cell, as papermill would inject them.

The kernels papermill starts talk to it over CurveZMQ-encrypted sockets where the Jupyter stack
supports it, else over local IPC sockets (:func:`kernel_config`), so ipykernel has no cause to warn
about unencrypted TCP on every run.
"""
from __future__ import annotations

import ast
import concurrent.futures
import contextlib
import json
import math
import os
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .paths import REPO_ROOT, dataset_dir, reference_dir, shared_root
from .runtime import resolve_device

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
DEFAULT_OUTPUT = REPO_ROOT / "outputs" / "tutorial"
NBVAL_OUTPUT = REPO_ROOT / "outputs" / "nbval"
NBVAL_OUTPUT_ENV = "REDIFFUSE_NBVAL_OUTPUT"  # overrides NBVAL_OUTPUT (the tests point it at a temporary folder)

__all__ = ["list_notebooks", "notebook_parameters", "parse_parameter", "run_notebook", "run_tutorial",
           "check_output_dir", "write_results", "kernel_config", "nbval_parameters", "parameter_source",
           "SMOKE_CELL_TIMEOUT", "NBVAL_OUTPUT", "NBVAL_OUTPUT_ENV", "NotebookLog", "HEARTBEAT_S",
           "missing_data", "result_line"]

SMOKE_CELL_TIMEOUT = 1800  # seconds a cell may run in the small configuration
HEARTBEAT_S = 8.0  # the longest a running notebook stays unmentioned in rediffuse tutorial's output


def list_notebooks(directory: Path | str = NOTEBOOK_DIR) -> list[Path]:
    """Tutorial notebooks in order (``NN_name.ipynb``)."""
    return sorted(p for p in Path(directory).glob("[0-9][0-9]_*.ipynb"))


def _finite(obj: Any) -> Any:
    """JSON cannot hold NaN/inf portably: turn them into strings so they are seen, not hidden."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy / torch scalars
        return _finite(obj.item())
    return obj


def write_results(path: str | Path, results: dict) -> None:
    """Write a notebook's results JSON atomically (no-op for an empty path)."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_finite(results), indent=2, sort_keys=True))
    tmp.replace(path)


def notebook_parameters(notebook: Path | str) -> dict[str, Any]:
    """The names of a notebook's ``parameters`` cell, each with its default as source text."""
    import papermill as pm

    return {name: spec["default"] for name, spec in pm.inspect_notebook(str(notebook)).items()}


def parse_parameter(text: str) -> Any:
    """A parameter value from the command line: a Python literal (``2``, ``0.5``, ``True``, ``"x"``,
    ``[1, 2]``), else the text itself as a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def kernel_config(kernel_name: str = "python3"):
    """Settings (a traitlets ``Config``) for the ``kernel_name`` kernels that papermill starts.

    ipykernel 7 warns on stderr, at every start, that its TCP sockets carry code and outputs
    unencrypted. Rather than hide the warning we remove its cause: CurveZMQ keys provisioned by the
    kernel manager where jupyter_client, pyzmq and the kernelspec all support them, else local IPC
    sockets (POSIX). Where neither is available the kernel runs as before, and may warn.
    """
    import zmq
    from jupyter_client.kernelspec import NoSuchKernel, get_kernel_spec
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    cfg = Config()
    try:
        declared = get_kernel_spec(kernel_name).metadata.get("supported_encryption") or []
    except NoSuchKernel:
        declared = []
    declared = [declared] if isinstance(declared, str) else declared
    if ("transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve")
            and "curve" in {str(d).lower() for d in declared}):
        cfg.KernelManager.transport_encryption = "auto"
    elif zmq.has("ipc") and os.name == "posix":
        cfg.KernelManager.transport = "ipc"
    return cfg


def nbval_parameters(notebook: Path | str) -> dict[str, Any]:
    """The parameters a notebook gets under ``pytest --nbval-lax notebooks/``: its defaults, except that
    figures and runs go to ``outputs/nbval/<stem>`` (``$REDIFFUSE_NBVAL_OUTPUT/<stem>`` when set), never to
    the folder ``rediffuse tutorial`` fills."""
    root = Path(os.environ.get(NBVAL_OUTPUT_ENV) or NBVAL_OUTPUT)
    return {"OUTPUT_DIR": str(root.resolve() / Path(notebook).stem)}


def parameter_source(parameters: dict[str, Any], origin: str = "nbval") -> str:
    """Python lines that set ``parameters``, to append to a notebook's parameters cell (what papermill
    does in a cell of its own)."""
    lines = ["", f"# injected by the {origin} run (rediffuse.tutorial.nbval_parameters)"]
    lines += [f"{name} = {value!r}" for name, value in parameters.items()]
    return "\n".join(lines) + "\n"


def _not_the_sources(output_dir: Path | str) -> None:
    """Refuse ``notebooks/`` (or a folder inside it) as an output folder: the executed copies would
    replace the clean source notebooks."""
    out, src = Path(output_dir).resolve(), NOTEBOOK_DIR.resolve()
    if out == src or src in out.parents:
        raise ValueError(f"{output_dir} is the tutorial's own notebooks/ folder, whose clean notebooks the executed "
                         f"copies would replace; choose another folder with -o (the default is {DEFAULT_OUTPUT.name}/ "
                         "under outputs/)")


def check_output_dir(output_dir: Path | str, notebooks: list[Path], overwrite: bool = False) -> None:
    """Refuse an output folder where running ``notebooks`` would replace files: each notebook writes
    ``<stem>.ipynb``, ``<stem>.json`` and figures into ``<stem>/``. ``FileExistsError`` (one line,
    naming them) unless ``overwrite``; ``notebooks/`` itself is refused always."""
    _not_the_sources(output_dir)
    out = Path(output_dir)
    taken = [p.name for nb in notebooks for p in (out / nb.name, out / f"{nb.stem}.json") if p.exists()]
    taken += [f"{nb.stem}/" for nb in notebooks if (out / nb.stem).is_dir() and any((out / nb.stem).iterdir())]
    if taken and not overwrite:
        listing = ", ".join(taken if len(taken) <= 4 else taken[:3] + [f"{len(taken) - 3} more"])
        raise FileExistsError(f"{out} already holds {listing}, which this run would replace; add --overwrite to "
                              "replace them, or choose another folder with -o")


def _say(line: str) -> None:
    print(line, flush=True)


class _LastLine:
    """A file-like sink for a kernel's stdout or stderr that keeps the last non-empty line written
    (a progress bar's carriage-return updates count as lines)."""

    def __init__(self, on_line: Callable[[str], None]):
        self._on_line = on_line

    def write(self, text: str) -> int:
        lines = [ln.strip() for ln in re.split(r"[\r\n]", text) if ln.strip()]
        if lines:
            self._on_line(lines[-1])
        return len(text)

    def flush(self) -> None:
        pass


class NotebookLog:
    """What a running notebook is doing, said through ``say`` (one line at a time).

    papermill calls :meth:`cell_start` before each cell (nbclient's ``on_cell_start`` hook) and
    writes the kernel's output to :attr:`stdout` / :attr:`stderr`; a background thread says which
    cell runs, for how long, and the last line the notebook printed whenever nothing has been said
    for ``every`` seconds. Use as a context manager around the run.
    """

    def __init__(self, name: str, n_cells: int, say: Callable[[str], None] = _say, every: float = HEARTBEAT_S):
        self.name, self.n_cells, self.say, self.every = name, n_cells, say, every
        self.stdout, self.stderr = _LastLine(self._printed), _LastLine(self._printed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cell, self._cell_t0, self._what, self._last = -1, time.perf_counter(), "starting the kernel", ""
        self._t0 = self._said = time.perf_counter()
        self._injected = 0
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _printed(self, line: str) -> None:
        with self._lock:
            self._last = line[:100]

    def cell_start(self, cell=None, cell_index: int = 0, **_) -> None:
        """nbclient's ``on_cell_start`` hook. Code cells only; the index is the cell's own in the
        source notebook (papermill's injected parameters cell is not counted)."""
        cell = cell or {}
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            self._injected = 1
        if cell.get("cell_type", "code") != "code":
            return
        first = next((ln.strip().lstrip("#").strip() for ln in str(cell.get("source", "")).splitlines()
                      if ln.strip().lstrip("#").strip()), "")
        with self._lock:
            self._cell, self._cell_t0, self._last = cell_index - self._injected, time.perf_counter(), ""
            self._what = first[:60] + ("…" if len(first) > 60 else "")

    def status(self) -> str:
        """One line: the notebook, its time so far, the running cell, the last line it printed."""
        now = time.perf_counter()
        with self._lock:
            cell, what, last, t_cell = self._cell, self._what, self._last, now - self._cell_t0
        where = (f"cell [{cell}] of {self.n_cells}, {t_cell:.0f} s in it ({what})" if cell >= 0 else what)
        return f"    {self.name}: {now - self._t0:.0f} s, {where}" + (f" | {last}" if last else "")

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every / 4)):
            if time.perf_counter() - self._said >= self.every:
                self.say(self.status())
                self._said = time.perf_counter()

    def __enter__(self) -> "NotebookLog":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


_DATA_CALL = re.compile(r"""dataset_dir\(\s*["']([^"']+)["']\s*\)|reference_dir\(\s*\)""")


def missing_data(notebooks: list[Path]) -> dict[str, list[str]]:
    """The benchmark data sets the ``notebooks`` look up (``dataset_dir("NAME")``, ``reference_dir()`` in
    their code cells) that are not found, each with the notebooks that fall back without it."""
    missing: dict[str, list[str]] = {}
    for nb in notebooks:
        cells = json.loads(Path(nb).read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        for m in _DATA_CALL.finditer(code):
            name = m.group(1) or "reference"
            found = reference_dir() if name == "reference" else dataset_dir(name)
            if found is None and Path(nb).stem[:2] not in missing.get(name, []):
                missing.setdefault(name, []).append(Path(nb).stem[:2])
    return missing


def _missing_data_line(missing: dict[str, list[str]]) -> str:
    root = shared_root()
    where = (f"nothing under {root / 'data'}" if root is not None
             else f"no folder {os.environ.get('REDIFFUSE_SHARED') or REPO_ROOT.parent / 'shared'}")
    sets = [f"{name} ({', '.join(nbs)})" for name, nbs in missing.items() if name != "reference"]
    parts = [f"the notebooks use synthetic pairs instead of {' and '.join(sets)}"] if sets else []
    if "reference" in missing:
        parts.append(f"leave out the published reference results ({', '.join(missing['reference'])})")
    return f"benchmark data not found ({where}): {' and '.join(parts)}; docs/data.md says how to get it"


def result_line(stem: str, results: dict, output_dir: Path | str) -> str:
    """A notebook's line when it ends: its run time and its ``headline`` result (when it writes one)."""
    wall = results.get("wall_s", results.get("runtime_s", float("nan")))
    head = results.get("headline")
    return f"{stem}: done in {wall:.0f} s" + (f": {head}" if head else "") + f"  -> {Path(output_dir) / stem}.ipynb"


def run_notebook(notebook: Path | str, output_dir: Path | str = DEFAULT_OUTPUT, *, smoke: bool = True,
                 device: str = "cpu", parameters: dict | None = None, timeout: int | None = SMOKE_CELL_TIMEOUT,
                 progress: bool = False, log: NotebookLog | None = None) -> dict:
    """Execute one notebook; return its results JSON (also written to ``<output_dir>/<stem>.json``).
    ``timeout``: seconds any one cell may run (``None``: no limit). ``log``: a :class:`NotebookLog` that
    hears of every cell as it starts and of everything the notebook prints."""
    import papermill as pm

    _not_the_sources(output_dir)
    notebook = Path(notebook).resolve()
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = notebook.stem
    results_path = output_dir / f"{stem}.json"
    results_path.unlink(missing_ok=True)
    params = {"SMOKE": smoke, "DEVICE": device, "RESULTS_PATH": str(results_path),
              "OUTPUT_DIR": str(output_dir / stem)}
    params.update(parameters or {})
    hooks = dict(on_cell_start=log.cell_start, stdout_file=log.stdout, stderr_file=log.stderr) if log else {}
    t0 = time.perf_counter()
    pm.execute_notebook(str(notebook), str(output_dir / notebook.name), parameters=params, **hooks,
                        kernel_name="python3", cwd=str(notebook.parent), progress_bar=progress,
                        execution_timeout=timeout, config=kernel_config(),
                        # jupyter_client interrupts a kernel before shutting it down; ipykernel then
                        # logs "KeyboardInterrupt caught in kernel" on stderr at random. Its own log is
                        # kept to critical messages; what the cells raise still reaches the notebook.
                        extra_arguments=["--IPKernelApp.log_level=CRITICAL"])
    elapsed = time.perf_counter() - t0
    if not results_path.exists():
        raise RuntimeError(f"{notebook.name} ran but wrote no results to RESULTS_PATH")
    results = json.loads(results_path.read_text())
    results.setdefault("wall_s", elapsed)
    return results


def run_tutorial(output_dir: Path | str = DEFAULT_OUTPUT, *, smoke: bool = True, device: str = "auto",
                 only: list[str] | None = None, parameters: dict[str, Any] | None = None,
                 overwrite: bool = False, say: Callable[[str], None] | None = _say,
                 heartbeat: float = HEARTBEAT_S, jobs: int = 1) -> dict[str, dict]:
    """Run every tutorial notebook in order; return ``{stem: results}``.

    ``jobs``: how many notebooks run side by side, each in its own kernel (its networks use one
    thread each). Only the small configuration runs more than one at a time: there no notebook reads
    another's output, while the full one hands 03's trained model to 04.

    ``say`` hears, one line at a time: which data is missing (once, before the first notebook), each
    notebook's name as it starts, a status line whenever a notebook has been silent for ``heartbeat``
    seconds, and each notebook's result line (:func:`result_line`) when it ends (``None``: silent).

    ``parameters`` go to every notebook whose ``parameters`` cell defines them (a name no selected
    notebook has is a ``ValueError``). Cells have no time limit in the full configuration. Files of
    an earlier run (or the user's own of the same names) in ``output_dir`` are replaced only with
    ``overwrite`` (:func:`check_output_dir`); ``notebooks/`` is never an output folder.
    """
    device = resolve_device(device)
    notebooks = list_notebooks()
    if only:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(o) for o in only)]
        if not notebooks:
            raise ValueError(f"no notebook matches {only}; available: {[nb.stem for nb in list_notebooks()]}")
    parameters = dict(parameters or {})
    reserved = sorted(set(parameters) & {"SMOKE", "DEVICE", "RESULTS_PATH", "OUTPUT_DIR"})
    if reserved:
        raise ValueError(f"{', '.join(reserved)} are set by the tutorial itself: use --full, --device or -o instead")
    known = {nb.stem: notebook_parameters(nb) for nb in notebooks} if parameters else {}
    unused = sorted(set(parameters) - set().union(*known.values())) if parameters else []
    if unused:
        raise ValueError(f"no selected notebook has the parameter {', '.join(unused)}; the notebooks' parameters "
                         "are in the cell tagged 'parameters' of each")
    check_output_dir(output_dir, notebooks, overwrite)
    quiet = say is None
    say = say or (lambda _line: None)
    say(f"rediffuse tutorial: {len(notebooks)} notebook{'s' * (len(notebooks) != 1)}, "
        f"{'small' if smoke else 'full'} configuration, device {device}, into {output_dir}")
    missing = missing_data(notebooks)
    if missing:
        say(_missing_data_line(missing))
    lock = threading.Lock()

    def tell(line: str) -> None:  # whole lines, also from notebooks that run side by side
        with lock:
            say(line)

    def one(i: int, nb: Path) -> dict:
        mine = {k: v for k, v in parameters.items() if k in known.get(nb.stem, {})}
        tell(f"[{i}/{len(notebooks)}] {nb.stem} …")
        n_cells = len(json.loads(nb.read_text())["cells"])
        log = None if quiet else NotebookLog(nb.stem, n_cells, tell, heartbeat)
        with log or contextlib.nullcontext():
            res = run_notebook(nb, output_dir, smoke=smoke, device=device, parameters=mine,
                               timeout=SMOKE_CELL_TIMEOUT if smoke else None, log=log)
        tell(f"[{i}/{len(notebooks)}] " + result_line(nb.stem, res, output_dir))
        return res

    jobs = max(1, min(int(jobs), len(notebooks))) if smoke else 1
    if jobs == 1:
        return {nb.stem: one(i, nb) for i, nb in enumerate(notebooks, start=1)}
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {nb.stem: pool.submit(one, i, nb) for i, nb in enumerate(notebooks, start=1)}
        try:
            return {stem: f.result() for stem, f in futures.items()}
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the notebooks not started yet are not started
            raise
