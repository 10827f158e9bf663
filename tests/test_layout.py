"""The layout rules README states: pages draw (no torch), the engine has no Streamlit, the CLI holds no engine and
is generated from the studies' table."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    return modules


def test_pages_import_no_torch():
    offenders = [path.name for path in (ROOT / "pages").glob("*.py") if "torch" in imported_modules(path)]
    assert not offenders, f"pages compute with torch: {offenders}; move it into core/"


def test_the_engine_imports_no_streamlit():
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "core").rglob("*.py") if "streamlit" in imported_modules(path)
    ]
    assert not offenders


def test_the_cli_neither_trains_nor_attacks():
    """core/cli.py parses, calls and prints: it defines no model, loop, attack or metric of its own."""
    tree = ast.parse((ROOT / "core" / "cli.py").read_text())
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    attributes = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    engine = {
        "torch",
        "train_classifier",
        "train_dae",
        "train_student",
        "fgsm",
        "ifgsm",
        "pgd",
        "predict",
        "stratified_split",
        "quantise_toward",
        "load_splits",
    }
    assert not (names | attributes) & engine, (names | attributes) & engine


def test_the_cli_is_generated_from_the_studies_table():
    """core/cli.py (issue 23: 1,059 lines once) is global options, the subcommands generated from STUDIES, and main:
    at most about 300 lines, naming no study and no flag but the global ones."""
    from core.engine.registry import STUDIES

    source = (ROOT / "core" / "cli.py").read_text()
    assert len(source.splitlines()) <= 300
    strings = {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    }
    assert not strings & set(STUDIES.names()), strings & set(STUDIES.names())
    flags = {text for text in strings if re.fullmatch(r"--[a-z-]+", text)}
    assert flags == {"--data-root", "--download", "--threads"}, flags


def test_every_study_lives_in_its_own_module_under_core_studies():
    """A study's options, main and text table are in core/studies/<name>.py: one module registers one study."""
    from core.engine.registry import STUDIES

    for study in STUDIES.specs():
        module = study.main.__module__
        assert module.startswith("core.studies.") or module.startswith("tests.plugins."), (study.name, module)
        assert study.options.__module__ == module, study.name
    modules = [path.stem for path in (ROOT / "core" / "studies").glob("*.py") if path.stem != "__init__"]
    assert sorted(modules) == sorted(
        spec.main.__module__.split(".")[-1]
        for spec in STUDIES.specs()
        if spec.main.__module__.startswith("core.studies.")
    )


def core_imports(path: Path) -> set[str]:
    """The core modules a file imports, at module level or inside functions; imports under `if TYPE_CHECKING:` are
    annotations, not run-time imports, and are left out."""

    class Visitor(ast.NodeVisitor):
        def __init__(self):
            self.found: set[str] = set()

        def visit_If(self, node):
            if isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
                return
            self.generic_visit(node)

        def visit_ImportFrom(self, node):
            if node.module == "core":
                self.found.update(f"core.{alias.name}" for alias in node.names)
            elif node.module and node.module.startswith("core."):
                self.found.add(node.module)

        def visit_Import(self, node):
            self.found.update(alias.name for alias in node.names if alias.name.startswith("core."))

    visitor = Visitor()
    visitor.visit(ast.parse(path.read_text()))
    return visitor.found


def core_modules() -> dict[str, Path]:
    modules = {}
    for path in (ROOT / "core").rglob("*.py"):
        name = "core." + ".".join(path.relative_to(ROOT / "core").with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def test_the_engine_never_imports_the_apps_views():
    """core/reporting/explore.py is what the app's pages compute from; studies, the CLI and the rest of the engine
    never read it (issue 23: budget, report, sign_examples, sweep and the CLI did, and explore -> run -> sweep ->
    explore was a cycle)."""
    offenders = [
        name
        for name, path in core_modules().items()
        if name != "core.reporting.explore" and "core.reporting.explore" in core_imports(path)
    ]
    assert not offenders, f"{offenders} import core.reporting.explore: move what they need next to its writer in core/"


# core/'s folders, lowest first. Defences sit below threats: a poison crafted through a defence (core/threats/adaptive)
# needs the defence's operation, and no defence needs a threat. core/cli.py, core/jobs.py and core/plugins/ sit on top.
LAYERS = ("engine", "attacks", "defences", "threats", "detectors", "experiments", "reporting", "studies")


def test_a_layer_imports_only_its_own_and_the_layers_below():
    """Issue 37: the layers are the folders `ls core` shows; a module importing a higher layer (inside a function too)
    fails here, naming the import."""
    assert {path.name for path in (ROOT / "core").iterdir() if path.is_dir() and path.name != "__pycache__"} == {
        *LAYERS,
        "plugins",
    }
    rank = {layer: number for number, layer in enumerate(LAYERS)}

    def layer(module: str) -> str | None:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 and parts[1] in rank else None

    upward = [
        f"{name} imports {other}"
        for name, path in core_modules().items()
        if layer(name) is not None
        for other in core_imports(path)
        if layer(other) is not None and rank[layer(other)] > rank[layer(name)]
    ]
    assert not upward, upward


def test_the_engine_has_no_import_cycle():
    """No chain of core modules imports back to where it started, counting imports inside functions."""
    modules = core_modules()
    graph = {
        name: {other for other in core_imports(path) if other in modules and other != name}
        for name, path in modules.items()
    }
    state: dict[str, str] = {}  # name -> "open" while on the path, "done" after

    def cycle_from(name: str, path: list[str]) -> list[str] | None:
        state[name] = "open"
        for other in sorted(graph[name]):
            if state.get(other) == "open":
                return [*path, name, other]
            if other not in state and (found := cycle_from(other, [*path, name])):
                return found
        state[name] = "done"
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = cycle_from(name, [])
            assert cycle is None, " -> ".join(cycle[cycle.index(cycle[-1]) :])


def functions_imports_without_a_reason(path: Path) -> list[str]:
    """Imports inside a function not preceded (through the imports and comments above it) by a `# deferred:` line."""
    lines = path.read_text().splitlines()
    offenders = []
    for function in ast.walk(ast.parse("\n".join(lines))):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            above = node.lineno - 2
            while above >= 0 and "# deferred:" not in lines[above]:
                line = lines[above].strip()
                if not (line in ("", "try:") or line.startswith(("#", "import ", "from "))):
                    above = -1
                    break
                above -= 1
            if above < 0:
                offenders.append(f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{node.lineno}")
    return offenders


def test_an_import_inside_a_function_says_what_it_saves():
    """Issue 37: imports sit at the top of their module; one inside a function is there to avoid a measured cost
    (a heavy library on a path that rarely needs it) and says so in a `# deferred:` comment."""
    files = [*(ROOT / "core").rglob("*.py"), *(ROOT / "ui").glob("*.py"), *(ROOT / "pages").glob("*.py")]
    offenders = [where for path in [*files, ROOT / "app.py"] for where in functions_imports_without_a_reason(path)]
    assert not offenders, f"imports inside functions without a `# deferred:` reason: {offenders}"


def test_an_unexplained_import_inside_a_function_is_found(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    import json\n\n\ndef g():\n    # deferred: a reason\n    import csv\n")
    assert functions_imports_without_a_reason(planted) == ["planted.py:2"]


ENGINE_OBJECTS = ("Tensor", "Module", "ImageSet", "Splits", "PoisonedSet", "Generator")


def test_pages_receive_plain_data():
    """Issue 23: pages draw what they are handed. Every function a page imports from the app's helpers (ui/) says in
    its annotation what it returns, and nothing a page imports (from ui/ or core/) returns a tensor, a model or a
    dataset: those stay in ui/data.py, which hands pages pixels (numpy), numbers, tables and text."""
    import importlib
    import inspect

    offenders = []
    for page in [*(ROOT / "pages").glob("*.py"), ROOT / "app.py"]:
        for node in ast.walk(ast.parse(page.read_text())):
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(("core", "ui")):
                continue
            module = importlib.import_module(node.module)
            for alias in node.names:
                imported = getattr(module, alias.name)
                function = inspect.unwrap(getattr(imported, "__wrapped__", imported))
                if not inspect.isfunction(function):
                    continue
                returns = inspect.signature(function).return_annotation
                returns = "" if returns is inspect.Signature.empty else str(returns)
                if node.module.startswith("ui") and not returns:
                    offenders.append(f"{page.name}: {alias.name} (no return annotation)")
                elif any(name in returns for name in ENGINE_OBJECTS):
                    offenders.append(f"{page.name}: {alias.name} -> {returns}")
    assert not offenders, offenders


def test_studies_write_through_their_result_files():
    """A study writes its file through the ResultFile its StudySpec declares (core.engine.storage), never with a JSON
    writer of its own: one pattern for reading, writing and upgrading every study's file."""
    offenders = [
        path.name
        for path in (ROOT / "core" / "studies").glob("*.py")
        if re.search(r"\bwrite_json\b|json\.dump", path.read_text())
    ]
    assert not offenders, offenders


def test_every_command_keeps_its_flags():
    """A snapshot of every command's flags (tests/data/cli_flags.json, taken before issue 37's reorganisation of
    core/): moving modules must not lose or rename a flag. A deliberate change of the CLI updates the snapshot: when the
    config fields became knobs, their flags kept their names, and compare, defences and detectors gained the knobs of
    the tables they read (--trigger-size, --knn-k, ...), additions only."""
    import json

    from core.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if action.__class__.__name__ == "_SubParsersAction")
    flags = {
        name: sorted(option for action in command._actions for option in action.option_strings)
        for name, command in commands.choices.items()
    }
    flags[""] = sorted(option for action in parser._actions for option in action.option_strings)
    snapshot = json.loads((Path(__file__).parent / "data" / "cli_flags.json").read_text())
    assert flags == snapshot
