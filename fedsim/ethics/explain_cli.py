"""``fedsim-explain <run dir> user=<id> [k=10]``: the top-K recommendations of one user of a finished run, each
with the reason it was recommended. ``<id>`` is the dataset's own user id: for MovieLens the file's (1-based) id,
for the synthetic data the 0-based index."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _parse(argv: list[str]) -> tuple[Path, int, int]:
    if not argv or argv[0] in ("-h", "--help"):
        raise ValueError("usage: fedsim-explain <run dir> user=<id> [k=10]")
    run_dir, options = Path(argv[0]), dict(a.split("=", 1) for a in argv[1:] if "=" in a)
    unknown = set(options) - {"user", "k"}
    if unknown or "user" not in options:
        raise ValueError(f"expected user=<id> and optionally k=<n>; got {' '.join(argv[1:]) or 'nothing'}")
    try:
        return run_dir, int(options["user"]), int(options.get("k", 10))
    except ValueError:
        raise ValueError("user and k must be integers") from None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        run_dir, user, k = _parse(argv)
        summary_path, model_path = run_dir / "summary.json", run_dir / "model.npz"
        if not summary_path.is_file() or not model_path.is_file():
            raise ValueError(f"{run_dir}: not a finished fedsim run (needs summary.json and model.npz)")
        from fedsim.checkpoint import load_npz
        from fedsim.config import from_dict
        from fedsim.ethics.explain import explain_user, format_explanations, load_device_embeddings
        from fedsim.runtime import get_runtime

        cfg = from_dict(json.loads(summary_path.read_text())["config"])
        rt = get_runtime(cfg)
        index = rt.data.user_index(user)  # MovieLens: the file's id (1-based), as the person reads it
        if index is None:
            raise ValueError(f"user={user} is not a user of this run; its users are {rt.data.user_id_range()}")
        shared = load_npz(model_path)
        embedding = load_device_embeddings(run_dir).get(index)
        print(format_explanations(user, str(rt.roles[index]), explain_user(rt, shared, embedding, index, k)))
    except ValueError as error:
        print(f"fedsim-explain: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
