"""The layout rules README states: pages draw (no torch), the engine has no Streamlit, the CLI holds no engine."""

import ast
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
