"""``rediffuse tutorial``: parameters reach the notebooks that have them, full runs have no cell time
limit, and the full configuration runs after the small one in the same output folder."""
import json
import math
import os
import subprocess
import sys
import time

import pytest

from rediffuse import tutorial
from rediffuse.tutorial import notebook_parameters, parse_parameter, run_tutorial
from tests.conftest import numbers_in


def test_parse_parameter():
    assert parse_parameter("2") == 2 and parse_parameter("0.5") == 0.5 and parse_parameter("False") is False
    assert parse_parameter("fusiondiff") == "fusiondiff" and parse_parameter('"eps"') == "eps"


def test_notebooks_03_and_06_take_the_size_of_their_runs():
    for stem in ("03_train_rediffuse", "06_ablations"):
        names = notebook_parameters(tutorial.NOTEBOOK_DIR / f"{stem}.ipynb")
        assert {"STEPS", "BATCH", "CROP"} <= set(names), (stem, names)
    assert {"LAYOUT", "PREDICTION"} <= set(notebook_parameters(tutorial.NOTEBOOK_DIR / "03_train_rediffuse.ipynb"))


def test_parameters_go_where_they_are_defined(monkeypatch, tmp_path):
    calls = {}

    def fake_run(nb, output_dir, *, smoke, device, parameters, timeout, **_):
        calls[nb.stem] = (parameters, timeout)
        return {}

    monkeypatch.setattr(tutorial, "run_notebook", fake_run)
    run_tutorial(tmp_path, smoke=False, device="cpu", only=["01", "03", "04"], parameters={"STEPS": 2, "EQ_CROP": 64})
    assert calls["01_bconv"] == ({}, None)  # full: no time limit for any cell
    assert calls["03_train_rediffuse"] == ({"STEPS": 2}, None)
    assert calls["04_evaluate_fusion"][0] == {"STEPS": 2, "EQ_CROP": 64}
    run_tutorial(tmp_path, smoke=True, device="cpu", only=["01"])
    assert calls["01_bconv"] == ({}, tutorial.SMOKE_CELL_TIMEOUT)
    with pytest.raises(ValueError, match="no selected notebook has the parameter NOPE"):
        run_tutorial(tmp_path, device="cpu", only=["03"], parameters={"NOPE": 1})
    with pytest.raises(ValueError, match="SMOKE are set by the tutorial"):
        run_tutorial(tmp_path, device="cpu", only=["03"], parameters={"SMOKE": False})


_numbers = numbers_in


@pytest.mark.slow
def test_full_configuration_runs_after_the_small_one_in_the_same_folder(tmp_path):
    """``rediffuse tutorial`` then ``rediffuse tutorial --full`` crashed in notebooks 03 and 06: the full
    run resumed the small run's checkpoint. Here both run in one folder, on the CPU, with tiny sizes
    (the full configuration is otherwise the paper's model: hours on a GPU)."""
    base = [sys.executable, "-m", "rediffuse", "tutorial", "--device", "cpu", "--only", "03", "06",
            "-o", str(tmp_path), "-p", "STEPS", "2", "-p", "N_IMAGES", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    small = subprocess.run(base, capture_output=True, text=True, env=env)
    assert small.returncode == 0, small.stderr[-3000:]
    # the same folder again: the small run's notebooks and results are replaced, which needs --overwrite
    full = subprocess.run(base + ["--full", "--overwrite", "-p", "BATCH", "2", "-p", "CROP", "32",
                                  "-p", "SAMPLE_STEPS", "1"],
                          capture_output=True, text=True, env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    r03 = json.loads((tmp_path / "03_train_rediffuse.json").read_text())
    r06 = json.loads((tmp_path / "06_ablations.json").read_text())
    for r in (r03, r06):
        assert all(math.isfinite(x) for x in _numbers(r)), r
    train = r03["train"]  # the paper's model, not the small one
    assert train["layout"] == "fusiondiff" and train["config"]["prediction"] == "eps"
    assert train["config"]["batch"] == 2 and train["config"]["crop"] == 32 and train["steps"] == 2
    assert max(r03["unet_c4_error"].values()) <= 1e-5
    assert not r06["smoke"] and len(r06["table3"]) == 4
    nb03, nb06 = tmp_path / "03_train_rediffuse", tmp_path / "06_ablations"
    assert (nb03 / "run-smoke" / "last.pt").is_file() and (nb03 / "run-full" / "last.pt").is_file()
    assert (nb06 / "runs-smoke").is_dir() and (nb06 / "runs-full").is_dir()


def _tiny_notebook(folder, stem="99_tiny"):
    """A notebook with a parameters cell like the tutorial's, that writes a file into OUTPUT_DIR, warns
    once (a warning of its own, which must stay visible) and writes its results."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(f'SMOKE = True\nDEVICE = "cpu"\nRESULTS_PATH = ""\n'
                                       f'OUTPUT_DIR = "../outputs/tutorial/{stem}"')
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import warnings, pathlib\n"
        "pathlib.Path(OUTPUT_DIR).mkdir(parents=True, exist_ok=True)\n"
        "(pathlib.Path(OUTPUT_DIR) / 'figure.txt').write_text('drawn')\n"
        "warnings.warn('a warning of the notebook itself')\n"
        "from rediffuse.tutorial import write_results\n"
        "write_results(RESULTS_PATH, {'runtime_s': 0.0})")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_kernel_config_avoids_unencrypted_tcp():
    cfg = tutorial.kernel_config()
    km = cfg.get("KernelManager", {})
    assert km.get("transport_encryption") == "auto" or km.get("transport") == "ipc", cfg


@pytest.mark.slow
def test_a_notebook_run_prints_no_unencrypted_tcp_warning_but_keeps_other_warnings(tmp_path, capfd):
    nb = _tiny_notebook(tmp_path / "notebooks")
    tutorial.run_notebook(nb, tmp_path / "out", smoke=True, device="cpu")
    err = capfd.readouterr().err
    assert "without encryption" not in err, err
    executed = json.loads((tmp_path / "out" / nb.name).read_text())
    streams = "".join("".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert "a warning of the notebook itself" in streams
    assert (tmp_path / "out" / "99_tiny" / "figure.txt").is_file()  # papermill's OUTPUT_DIR, not the default


def test_nbval_parameters_point_away_from_the_tutorial_output(monkeypatch, tmp_path):
    monkeypatch.delenv(tutorial.NBVAL_OUTPUT_ENV, raising=False)
    out = tutorial.nbval_parameters("notebooks/04_evaluate_fusion.ipynb")["OUTPUT_DIR"]
    assert out == str(tutorial.NBVAL_OUTPUT / "04_evaluate_fusion")
    assert not out.startswith(str(tutorial.DEFAULT_OUTPUT))
    monkeypatch.setenv(tutorial.NBVAL_OUTPUT_ENV, str(tmp_path))
    assert tutorial.nbval_parameters("x/01_bconv.ipynb") == {"OUTPUT_DIR": str(tmp_path / "01_bconv")}
    src = tutorial.parameter_source({"OUTPUT_DIR": "/a b/c"})
    namespace = {}
    exec('OUTPUT_DIR = "../outputs/tutorial/x"' + src, namespace)
    assert namespace["OUTPUT_DIR"] == "/a b/c"


@pytest.mark.slow
def test_nbval_run_writes_to_its_own_folder(tmp_path):
    """``pytest --nbval-lax notebooks/`` with notebooks/conftest.py: the default OUTPUT_DIR
    (../outputs/tutorial/<stem>) is replaced, so the tutorial's figures are left alone."""
    import shutil

    nb_dir = tmp_path / "repo" / "notebooks"
    _tiny_notebook(nb_dir)
    shutil.copy(tutorial.NOTEBOOK_DIR / "conftest.py", nb_dir / "conftest.py")
    env = {**os.environ, tutorial.NBVAL_OUTPUT_ENV: str(tmp_path / "nbval"), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "--nbval-lax", "-p", "no:cacheprovider", str(nb_dir)],
                         capture_output=True, text=True, env=env, cwd=tmp_path / "repo")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (tmp_path / "nbval" / "99_tiny" / "figure.txt").is_file()
    assert not (tmp_path / "repo" / "outputs").exists()


def test_tutorial_names_each_notebook_as_it_starts_and_reports_it_as_it_ends(monkeypatch, tmp_path):
    """The result lines come as each notebook ends, not all at the end."""
    said = []

    def fake_run(nb, output_dir, **kw):
        said.append(f"RUN {nb.stem}")
        return {"wall_s": 3.0, "headline": f"the result of {nb.stem[:2]}"} if nb.stem.startswith("03") else {"wall_s": 2.0}

    monkeypatch.setattr(tutorial, "run_notebook", fake_run)
    run_tutorial(tmp_path, device="cpu", only=["01", "03"], say=said.append)
    runs = [i for i, line in enumerate(said) if line.startswith("RUN")]
    assert said[runs[0] - 1] == "[1/2] 01_bconv …" and said[runs[1] - 1] == "[2/2] 03_train_rediffuse …", said
    first_end = said[runs[0] + 1]  # 01's line before 03 starts
    assert first_end.startswith("[1/2] 01_bconv: done in 2 s") and "01_bconv.ipynb" in first_end, said
    assert said[runs[1] + 1].startswith("[2/2] 03_train_rediffuse: done in 3 s: the result of 03"), said
    assert said[0].startswith("rediffuse tutorial: 2 notebooks, small configuration, device cpu")


def test_tutorial_says_once_when_the_benchmark_data_is_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(tutorial, "run_notebook", lambda nb, out, **kw: {"wall_s": 0.0})
    monkeypatch.setenv("REDIFFUSE_SHARED", str(tmp_path / "no-such-folder"))
    said = []
    run_tutorial(tmp_path / "out", device="cpu", only=["01", "03", "04"], say=said.append)
    missing = [line for line in said if "benchmark data not found" in line]
    assert len(missing) == 1, said
    assert "synthetic pairs instead of NYU-D-100 (03)" in missing[0] and "Lytro (04)" in missing[0], missing
    assert said.index(missing[0]) < said.index("[1/3] 01_bconv …")  # before the first notebook
    said.clear()
    run_tutorial(tmp_path / "out2", device="cpu", only=["01", "02"], say=said.append)  # neither reads the data
    assert not any("not found" in line for line in said), said


def test_notebook_log_speaks_up_when_a_cell_is_silent():
    said = []
    with tutorial.NotebookLog("99_tiny", 5, said.append, every=0.2) as log:
        log.cell_start({"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "SMOKE = True"}, 1)
        log.cell_start({"cell_type": "code", "source": "# train the model\ntrain(cfg)"}, 4)
        log.cell_start({"cell_type": "markdown", "source": "## 4 · Training"}, 5)  # not a cell that runs
        log.stdout.write("train:  40%|####      | 40/100\r")
        time.sleep(0.9)
    assert len(said) >= 2, said  # every 0.2 s of silence
    assert all(line.startswith("    99_tiny: ") for line in said), said
    assert "cell [3] of 5" in said[-1] and "(train the model)" in said[-1] and said[-1].endswith("| train:  40%|####      | 40/100")


@pytest.mark.slow
def test_a_long_cell_is_reported_while_it_runs(tmp_path):
    """papermill hands the log every cell start and every printed line of a real kernel."""
    import nbformat

    nb_path = _tiny_notebook(tmp_path / "notebooks")
    nb = nbformat.read(str(nb_path), as_version=4)
    nb.cells.insert(1, nbformat.v4.new_code_cell("# a slow step\nimport time\nprint('halfway there')\ntime.sleep(3)"))
    nb.cells[-1].source += "\nwrite_results(RESULTS_PATH, {'runtime_s': 0.0, 'headline': 'all good'})"
    nbformat.write(nb, str(nb_path))
    said = []
    with tutorial.NotebookLog(nb_path.stem, 4, said.append, every=1.0) as log:
        results = tutorial.run_notebook(nb_path, tmp_path / "out", smoke=True, device="cpu", log=log)
    during = [line for line in said if "(a slow step)" in line]
    assert during and during[-1].endswith("| halfway there"), said
    assert tutorial.result_line(nb_path.stem, results, tmp_path / "out").startswith("99_tiny: done in ")
    assert "all good" in tutorial.result_line(nb_path.stem, results, tmp_path / "out")


def test_small_notebooks_run_side_by_side_and_the_full_ones_in_order(monkeypatch, tmp_path):
    """jobs=2: two notebooks run at once (each in its own kernel), the results keep the notebooks'
    order; the full configuration runs one at a time (04 uses the model 03 trained)."""
    import threading
    import time

    running, most = [], [0]
    lock = threading.Lock()

    def fake_run(nb, output_dir, **kw):
        with lock:
            running.append(nb.stem)
            most[0] = max(most[0], len(running))
        time.sleep(0.3 if nb.stem.startswith("01") else 0.1)
        with lock:
            running.remove(nb.stem)
        return {"wall_s": 0.1}

    monkeypatch.setattr(tutorial, "run_notebook", fake_run)
    said = []
    out = run_tutorial(tmp_path / "a", device="cpu", only=["01", "02", "03"], say=said.append, jobs=2)
    assert most[0] == 2 and list(out) == ["01_bconv", "02_equivariance_theorems", "03_train_rediffuse"]
    assert said.index("[2/3] 02_equivariance_theorems …") < next(i for i, s in enumerate(said) if "01_bconv: done" in s)
    most[0] = 0
    run_tutorial(tmp_path / "b", device="cpu", only=["01", "02"], smoke=False, say=said.append, jobs=2)
    assert most[0] == 1
