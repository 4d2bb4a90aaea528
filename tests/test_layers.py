"""The layers of the suite hold: no import circles, the import-linter contracts kept, and a back
arrow breaks them. The contracts live in pyproject.toml ([tool.importlinter]); docs/architecture.md
draws them and is checked against them here."""
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fewshot", "backbones", "episodes")


def contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def circles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), late imports included."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the packages under `root` (its pyproject.toml holds the contracts)."""
    return subprocess.run([shutil.which("lint-imports"), "--no-cache"], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(root)})


def test_no_module_imports_itself_through_others():
    assert circles(grimp.build_graph(*PACKAGES)) == []


def test_the_layer_contracts_are_kept():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert f"Contracts: {len(contracts())} kept, 0 broken." in result.stdout


def test_a_back_arrow_breaks_the_build(tmp_path):
    for item in (*PACKAGES, "pyproject.toml"):
        copy = shutil.copytree if (REPO / item).is_dir() else shutil.copy
        copy(REPO / item, tmp_path / item)
    common = tmp_path / "fewshot" / "heads" / "common.py"  # a head reaching up to the run stages
    common.write_text(common.read_text() + "\nfrom fewshot.run.evaluate import evaluate_heads  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "fewshot.heads.common -> fewshot.run.evaluate" in result.stdout
    assert "BROKEN" in result.stdout


def test_the_architecture_page_draws_the_contracted_layers():
    page = (REPO / "docs" / "architecture.md").read_text()
    drawn = re.search(r"```text\n(.*?)```", page, re.S).group(1)
    layers = next(c for c in contracts() if c.get("containers") == ["fewshot"])["layers"]
    names = [name.strip() for layer in layers for name in layer.split("|")]
    lines = [line for line in drawn.splitlines() if line.strip()]
    # one line per layer, top to bottom, naming its modules in the contract's order
    assert [re.findall(r"fewshot\.(\w+)", line) for line in lines] == [
        [name.strip() for name in layer.split("|")] for layer in layers]
    assert set(names) == {path.stem for path in (REPO / "fewshot").iterdir()
                          if path.name not in ("__init__.py", "__main__.py", "__pycache__")}


def test_the_architecture_page_lists_every_module():
    page = (REPO / "docs" / "architecture.md").read_text()
    listed = {f"{folder}{name}" for folder, names in re.findall(r"^(fewshot/\S*): (.*)$", page, re.M)
              for name in names.split()}
    present = {str(path.relative_to(REPO).with_suffix("")) for path in (REPO / "fewshot").rglob("*.py")
               if path.name not in ("__init__.py", "__main__.py")}
    assert listed == present
