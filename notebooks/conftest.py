"""``pytest --nbval-lax notebooks/`` runs the notebooks as committed, in place, without papermill.

Their parameters cells send figures, fused images and training runs to ``../outputs/tutorial/<stem>``,
the folder ``rediffuse tutorial`` fills; a test run must not overwrite the tutorial's results. So,
as papermill would, we inject parameters: each parameters cell gets ``OUTPUT_DIR`` pointing at
``outputs/nbval/<stem>`` appended (``rediffuse.tutorial.nbval_parameters``).
"""
from pathlib import Path

from rediffuse.tutorial import nbval_parameters, parameter_source


def pytest_collection_modifyitems(config, items):
    for item in items:
        cell = getattr(item, "cell", None)  # nbval's cell items carry their notebook cell
        if cell is None or "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        cell.source = cell.source + parameter_source(nbval_parameters(Path(str(item.path))))
