"""The package's layering, checked from its source: data flows one way (task -> models ->
store -> recording/analysis -> ingest -> sweep -> reporting -> cli), nothing imports upward,
module-level imports form no cycle, and the store, analysis and reporting never load torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "mechgrok"
LAYERS = {
    "errors": 0,
    "config": 1, "paper": 1, "distributed": 1,
    "operations": 2,
    "task": 3,
    "models": 4,
    "store": 5,
    "recording": 6, "analysis": 6,
    "ingest": 7,
    "sweep": 8,
    "reporting": 9,
    "cli": 10, "__init__": 10,
    "__main__": 11,
}  # fmt: skip


# the accessor's upward imports, made on call: explore() and plot_*() hand a Dataset to reporting
ALLOWED_UPWARD = {
    ("mechgrok.analysis.accessor", "mechgrok.reporting.notebook"),
    ("mechgrok.analysis.accessor", "mechgrok.reporting.figures"),  # ds.mechgrok.plot_*()
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def concern(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path, top_level_only: bool) -> set[str]:
    """The mechgrok modules `path` imports (all of them, or only those at module level)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the package uses absolute ones)"
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mechgrok"):
            for alias in node.names:  # `from mechgrok.analysis import fourier` imports a module
                candidate = f"{node.module}.{alias.name}"
                is_module = any(
                    (ROOT / Path(*candidate.split("."))).with_suffix(s).exists()
                    for s in (".py", "")
                )
                found.add(candidate if is_module else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mechgrok"))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer_and_nothing_imports_upward():
    for path in SOURCES:
        own = concern(module_name(path))
        assert own in LAYERS, f"{path}: no layer for {own!r}; add it to LAYERS"
        for target in imports(path, top_level_only=False):
            other = concern(target)
            if other == own or (module_name(path), target) in ALLOWED_UPWARD:
                continue
            assert LAYERS[other] < LAYERS[own], (
                f"{module_name(path)} (layer {LAYERS[own]}) imports {target} (layer {LAYERS[other]})"
            )


def test_module_level_imports_form_no_cycle():
    graph = {module_name(p): imports(p, top_level_only=True) for p in SOURCES}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " -> ".join([*trail, module])
        state[module] = "open"
        for target in graph.get(module, ()):
            visit(target, [*trail, module])
        state[module] = "done"

    for module in graph:
        visit(module, [])


def test_the_layering_test_catches_an_upward_import(tmp_path):
    # a store module importing the recorder would be upward: the checker must see it
    bad = tmp_path / "mechgrok" / "store" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("from mechgrok.recording.train import RunState\n")
    found = imports(bad, top_level_only=True)
    assert found == {"mechgrok.recording.train"}
    assert LAYERS[concern("mechgrok.recording.train")] > LAYERS["store"]


def test_store_analysis_and_reporting_never_load_torch():
    code = (
        "import sys\n"
        "import mechgrok.store.reader, mechgrok.store.writer, mechgrok.analysis.pipeline\n"
        "import mechgrok.reporting, mechgrok.ingest.recorder, mechgrok.sweep.summary\n"
        "import mechgrok.recording.stopping\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_nothing_in_the_repository_points_outside_it():
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    texts = [
        ROOT / name for name in tracked if name.endswith((".py", ".md", ".sh", ".toml", ".yml"))
    ]
    outside = [str(p.relative_to(ROOT)) for p in texts if "../shared" in p.read_text()]
    outside = [name for name in outside if name != "tests/unit/test_architecture.py"]
    assert not outside, f"files that point at ../shared: {outside}"


def test_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)", readme)
    assert targets, "the README links to its docs"
    missing = [t for t in targets if "://" not in t and not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


def test_every_registered_model_architecture_has_the_module_contract():
    from mechgrok.errors import InvalidOptionError
    from mechgrok.models import ARCHITECTURES, architecture

    for name, spec in ARCHITECTURES.items():
        module = spec.load()
        assert spec.name == name and module.PARAM_NAMES
        assert callable(module.init_params) and callable(module.forward)
    try:
        architecture("transformer-9000")
    except InvalidOptionError as err:
        assert "mlp" in str(err)
    else:
        raise AssertionError("an unknown architecture was accepted")
