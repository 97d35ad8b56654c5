"""The shipped checkpoints: file, trained steps, parameters and size on disk (the model card's table).

    python benchmarks/bench_checkpoints.py [--json docs/results/checkpoints.json]

Loads each shipped checkpoint (``rediffuse.checkpoint.load_checkpoint``, digest verified), builds
its network from the stored configuration and counts its parameters; sizes are the files' bytes in MB (10^6). Needs nothing but the package.
"""
from __future__ import annotations

import _common  # first: thread pools and sys.path

try:  # the registry's home since issue 26; before that it lived in rediffuse.fuse
    from rediffuse.weights import SHIPPED_MODELS
except ImportError:  # pragma: no cover
    from rediffuse.fuse import SHIPPED_MODELS
from rediffuse.checkpoint import load_checkpoint, model_from_config
from rediffuse.unet import count_parameters


def main(argv: list[str] | None = None) -> int:
    p = _common.parser(__doc__)
    args = p.parse_args(argv)
    _common.setup(args)
    rows = []
    for name, path in SHIPPED_MODELS.items():
        state = load_checkpoint(path)
        cfg = state["model_config"]
        rows.append({"id": name, "name": f"`{name}`", "file": f"`{path.name}`", "conv": cfg["conv"],
                     "prediction": state["config"].get("prediction", ""), "steps": state["step"],
                     "parameters": count_parameters(model_from_config(cfg)), "size_mb": path.stat().st_size / 1e6})
    cols = [("name", "name (`--checkpoint`)", ""), ("file", "file", ""), ("conv", "convolution", ""), ("prediction", "output", ""),
            ("steps", "training steps", ",d"), ("parameters", "parameters", ",d"), ("size_mb", "size (MB)", ".1f")]
    print("| " + " | ".join(c[1] for c in cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(format(r[k], f) for k, _, f in cols) + " |")
    _common.write_record(args.json, {"checkpoints": _common.table(cols, rows)}, meta=_common.run_meta(args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
