"""Layers point one way: library < stages < glue. A module imports only from its own layer or the ones below.

- library: every package and module of `vesselseg` not named below (data, model, finetune, convert, infer, metrics,
  evaluate, baseline, visualize, storage, promote, config, ...): pure functions and classes, no stage, no KFP wiring;
- stages: `vesselseg.stages`, where config is read, the library called and artifacts fetched and published;
- glue: what runs stages: `vesselseg.kfp_glue`, `vesselseg.run_parameters`, `vesselseg.cli`, `vesselseg.local_run`,
  `vesselseg.container_runner`, `vesselseg.cluster`, `components/`, `pipeline.py`.

Every import is read from the source (AST), those inside functions included: a lazy import is still an arrow.

Within the library, the fine-tuning loop and its checkpoints never reach the object store themselves: the one job
that publishes while it runs gets a publisher from its stage (vesselseg.stages.finetune_rank).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
GLUE = ("vesselseg.kfp_glue", "vesselseg.run_parameters", "vesselseg.cli", "vesselseg.local_run",
        "vesselseg.container_runner", "vesselseg.cluster", "components", "pipeline")  # fmt: skip
RANK = {"library": 0, "stages": 1, "glue": 2}
# May name an artifact (InputRef) but import nothing that reads, writes or builds a store.
STORE_FREE = ("vesselseg.finetune.loop", "vesselseg.finetune.checkpoint", "vesselseg.finetune.publisher")
STORE_TYPES = {"vesselseg.storage.InputRef", "vesselseg.storage.artifact.InputRef"}


def layer(module: str) -> str:
    if any(module == g or module.startswith(g + ".") for g in GLUE):
        return "glue"
    if module == "vesselseg.stages" or module.startswith("vesselseg.stages."):
        return "stages"
    return "library"


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "components").glob("*.py")) + [ROOT / "pipeline.py"]:
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(module: str, path: Path) -> list[str]:
    """Every module `module` imports, absolute, with `from a import b` counted as `a.b` (b may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names += [f"{base}.{alias.name}" for alias in node.names]
    return names


def upward_arrows() -> list[str]:
    ours = modules()
    arrows = []
    for module, path in ours.items():
        for name in imports(module, path):
            target = name if name in ours else name.rpartition(".")[0]
            if target not in ours:
                continue
            if RANK[layer(target)] > RANK[layer(module)]:
                arrows.append(f"{module} ({layer(module)}) imports {name} ({layer(target)})")
    return arrows


def store_imports(module: str, path: Path) -> list[str]:
    """What `module` imports of the object store: anything from vesselseg.storage but InputRef, an `ObjectStore`
    from anywhere."""
    return [
        name
        for name in imports(module, path)
        if (name == "vesselseg.storage" or name.startswith("vesselseg.storage.") or name.endswith(".ObjectStore"))
        and name not in STORE_TYPES
    ]


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_arrows() == []


def test_the_training_loop_reaches_the_store_only_through_its_publisher() -> None:
    ours = modules()
    assert {module: store_imports(module, ours[module]) for module in STORE_FREE} == dict.fromkeys(STORE_FREE, [])


def test_the_walk_sees_the_arrows_it_must_refuse(tmp_path: Path) -> None:
    assert layer("vesselseg.finetune.base_model") == "library" and layer("vesselseg.stages.finetune") == "stages"
    assert layer("vesselseg.cluster.trainjob") == "glue" and layer("components") == "glue"
    lazy = ast.parse("def f():\n    from vesselseg.stages import import_official\n")
    assert any(isinstance(n, ast.ImportFrom) and n.module == "vesselseg.stages" for n in ast.walk(lazy))
    assert len(modules()) > 100
    old_loop = "from vesselseg.storage import InputRef, ObjectStore, fetch_dir\nfrom vesselseg.x import ObjectStore\n"
    (tmp_path / "loop.py").write_text(old_loop)
    assert store_imports("vesselseg.finetune.loop", tmp_path / "loop.py") == [
        "vesselseg.storage.ObjectStore", "vesselseg.storage.fetch_dir", "vesselseg.x.ObjectStore",
    ]  # fmt: skip
