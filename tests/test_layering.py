"""The package layering: no import cycles between fedsim's packages, and the layers the README describes."""

import ast
from pathlib import Path

import fedsim

ROOT = Path(fedsim.__file__).parent
# lower layers first; a package may import only from its own layer or below (README, "How a round works")
LAYERS = [
    {"registry", "updates", "simulation", "checkpoint", "runlock"},
    {"config", "resolvers"},
    {"data", "models"},
    {"training", "metrics", "privacy", "records", "callbacks", "mitigation"},
    {"runtime"},
    {"ethics", "tracking", "report", "centralized", "personalization", "security"},
    {"session", "resume"},
    {"client", "server"},
    {"run", "cli"},
    {"flower_apps", "flwr_run"},
]


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = path.relative_to(ROOT).with_suffix("").parts[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            for module in modules:
                parts = module.split(".")
                if parts[0] == "fedsim" and len(parts) > 1 and parts[1] != source:
                    edges.setdefault(source, set()).add(parts[1])
    return edges


def test_every_package_sits_in_a_layer():
    packages = {p.with_suffix("").name for p in ROOT.iterdir() if (p.suffix == ".py" or p.is_dir())}
    packages -= {"__init__", "__pycache__"}
    assert packages == set().union(*LAYERS)


def test_packages_import_only_from_their_layer_or_below():
    level = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    upward = [(a, b) for a, targets in _edges().items() for b in targets if level[b] > level[a]]
    assert upward == []


def test_no_import_cycles_between_packages():
    edges = _edges()

    def reachable(start: str) -> set[str]:
        seen, stack = set(), [start]
        while stack:
            for nxt in edges.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    cycles = sorted({tuple(sorted((a, b))) for a in edges for b in reachable(a) if a in reachable(b) and a != b})
    assert cycles == []
