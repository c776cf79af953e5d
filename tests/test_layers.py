"""The dependency arrows point one way: commands -> runs -> training step and engines ->
estimators -> tasks/particles -> trees. No module imports from a layer above its own
(function-level imports included), so there are no import cycles between layers."""

import ast
import pathlib

import nres

ROOT = pathlib.Path(nres.__file__).parent

# Lower number = lower layer. A module may import only from layers at or below its own.
LAYERS = {
    0: ("nres.tree", "nres.threefry", "nres.interrupts", "nres.progress", "nres.tensorboard", "nres.config", "nres.tracebacks"),
    1: ("nres.task", "nres.noise", "nres.checkpoint", "nres.sizes", "nres.plotting", "nres.optimizer", "nres.compiler"),
    2: ("nres.particles", "nres.shared"),
    3: ("nres.estimators", "nres.evaluation", "nres.step"),
    4: ("nres.tasks",),
    5: ("nres.build", "nres.counters", "nres.compilation_cache"),
    6: ("nres.engines",),
    7: ("nres.training", "nres.loop", "nres.rundir", "nres.rundir_check", "nres.run_info"),
    8: ("nres.runlog",),
    9: ("nres.run",),
    10: ("nres.cli", "nres.api", "nres.experiments", "nres.diagnostics"),
}
RANK = {name: rank for rank, names in LAYERS.items() for name in names}
# Known exceptions, each a command that lives beside its task: `nres rollout` reads a run
# directory and its config.
ALLOWED = {("nres.tasks.rl.rollout", "nres.build"), ("nres.tasks.rl.rollout", "nres.rundir")}


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _imports(file: pathlib.Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nres."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "nres":
            found.update(f"nres.{alias.name}" for alias in node.names if (ROOT / alias.name).exists()
                         or (ROOT / f"{alias.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("nres."))
    return found


def test_every_module_has_a_layer():
    top = {_layer("nres." + ".".join(f.relative_to(ROOT).with_suffix("").parts)) for f in ROOT.rglob("*.py")
           if f.name != "__init__.py" or f.parent != ROOT}
    assert top <= set(RANK), f"modules without a layer: {sorted(top - set(RANK))}"


def test_no_module_imports_from_a_layer_above_its_own():
    upward = []
    for file in ROOT.rglob("*.py"):
        parts = file.relative_to(ROOT).with_suffix("").parts
        module = ".".join(("nres",) + tuple(p for p in parts if p != "__init__"))
        if module == "nres":
            continue
        for target in _imports(file):
            if RANK[_layer(target)] > RANK[_layer(module)] and (module, _layer(target)) not in ALLOWED:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(sorted(upward))
