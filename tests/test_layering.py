"""The dependency direction api -> projections -> orderlog, read from the source with ``ast``.

Every import counts, including those inside functions and ``TYPE_CHECKING`` blocks:
a lazy import of the HTTP layer from the core is still the core depending on it.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("orderlog", "projections", "api")
HTTP = {"falcon", "waitress"}
TOOLING = {"bench", "tests"}  # beside the packages, never installed: nothing may need them
FORBIDDEN = {
    "orderlog": HTTP | TOOLING | {"api", "projections"},
    "projections": HTTP | TOOLING | {"api"},
    "api": TOOLING,
}
# The core and the read models use the standard library and these only (STYLE.md).
THIRD_PARTY_ALLOWED = {
    "orderlog": {"peewee", "playhouse", "orjson"},
    "projections": {"orjson", "orderlog"},
}
# One module more each: the module that opens connections may reach a driver where
# peewee offers no way to bound its waits (psycopg2's wait callback); no other may.
MODULE_ALLOWED = {"orderlog.storage.database": {"psycopg2"}}


def top_level_imports(source: str, module: str) -> set[str]:
    """The top-level package of every module imported by ``source``.

    ``module`` is the dotted name of the file's own module, to resolve relative imports.
    """
    package = module.split(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level]
                target = [*base, *(node.module.split(".") if node.module else [])]
                names.add(target[0] if target else package[0])
            elif node.module:
                names.add(node.module.split(".")[0])
    return names


def imported_modules(source: str, module: str) -> set[str]:
    """The full dotted name of every module (or package) imported by ``source``."""
    package = module.split(".")
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level] if node.level else []
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


# Inside the layers, the packages keep their own directions: the domain knows no
# storage; storage knows neither the service nor the worker; the Falcon app runs
# under any WSGI server, and the server underneath knows no route of the app (it
# answers framing errors in the app's problem format, and hands it the arrival time).
INNER_FORBIDDEN = {
    "orderlog.domain": (
        "orderlog.storage",
        "orderlog.service",
        "orderlog.worker",
        "orderlog.config",
        "peewee",
        "playhouse",
    ),
    "orderlog.storage": ("orderlog.service", "orderlog.worker"),
    "api.http": ("waitress", "api.server", "api.node", "api.cli", "api.serve", "api.supervisor"),
    "api.server": ("falcon", "api.http", "api.node", "api.cli", "api.serve", "api.supervisor"),
}
INNER_ALLOWED = {"api.server": ("api.http.problem", "api.http.inputs")}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def inner_offences(package: str) -> dict[str, list[str]]:
    root = ROOT.joinpath(*package.split("."))
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path)
        imported = imported_modules(path.read_text(encoding="utf-8"), module)
        bad = sorted(
            name
            for name in imported
            if any(_under(name, f) for f in INNER_FORBIDDEN[package])
            and not any(_under(name, a) for a in INNER_ALLOWED.get(package, ()))
        )
        if bad:
            found[module] = bad
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts)


def sources(layer: str) -> list[Path]:
    return sorted((ROOT / layer).rglob("*.py"))


def imports_by_file(layer: str) -> dict[str, set[str]]:
    return {
        module_name(path): top_level_imports(path.read_text(encoding="utf-8"), module_name(path))
        for path in sources(layer)
    }


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_has_sources_to_check(layer: str) -> None:
    assert len(sources(layer)) >= 3
    assert (ROOT / layer / "__init__.py").is_file()


@pytest.mark.parametrize("layer", LAYERS)
def test_no_layer_imports_an_outer_layer_http_or_tooling(layer: str) -> None:
    offenders = {
        module: sorted(imported & FORBIDDEN[layer])
        for module, imported in imports_by_file(layer).items()
        if imported & FORBIDDEN[layer]
    }
    assert offenders == {}


@pytest.mark.parametrize("layer", ["orderlog", "projections"])
def test_inner_layers_use_only_the_standard_library_and_allowed_packages(layer: str) -> None:
    allowed = THIRD_PARTY_ALLOWED[layer] | {layer, "__future__"} | set(sys.stdlib_module_names)
    offenders = {
        module: sorted(imported - allowed - MODULE_ALLOWED.get(module, set()))
        for module, imported in imports_by_file(layer).items()
        if imported - allowed - MODULE_ALLOWED.get(module, set())
    }
    assert offenders == {}


def test_http_framework_is_used_only_in_api() -> None:
    for layer in ("orderlog", "projections"):
        for module, imported in imports_by_file(layer).items():
            assert not imported & HTTP, module
    assert any("falcon" in imported for imported in imports_by_file("api").values())


def test_import_reader_sees_every_kind_of_import() -> None:
    source = """
import falcon.testing
from waitress import serve
from . import sibling
from ..api import app
def later():
    import projections.metrics
try:
    from typing import TYPE_CHECKING
except ImportError:
    pass
if TYPE_CHECKING:
    from api.http.resources import OrderResource
"""
    found = top_level_imports(source, "orderlog.sub.module")
    assert found == {"falcon", "waitress", "orderlog", "projections", "typing", "api"}


def test_a_violation_would_be_reported() -> None:
    imported = top_level_imports("def f():\n    from api import app\n", "orderlog.store")
    assert imported & FORBIDDEN["orderlog"] == {"api"}


def test_the_wheel_holds_the_three_packages_and_no_tooling(monkeypatch: pytest.MonkeyPatch) -> None:
    from setuptools.config.setupcfg import read_configuration

    monkeypatch.chdir(ROOT)  # setup.cfg's find: directive searches the working directory
    packages = read_configuration(ROOT / "setup.cfg")["options"]["packages"]
    assert {p.split(".")[0] for p in packages} == set(LAYERS)


@pytest.mark.parametrize("package", sorted(INNER_FORBIDDEN))
def test_each_package_inside_a_layer_keeps_its_direction(package: str) -> None:
    assert len(list(ROOT.joinpath(*package.split(".")).glob("*.py"))) >= 3
    assert inner_offences(package) == {}


def test_inner_direction_reader_sees_a_violation() -> None:
    found = imported_modules(
        "from ..storage import store\nimport waitress.server\n", "orderlog.domain.order"
    )
    assert "orderlog.storage.store" in found and "waitress.server" in found
    assert any(_under(n, "orderlog.storage") for n in found)


# The read models' SQL lives in orderlog.storage, behind named methods: the store's
# generic query and write transaction (``read``, ``writing``, ``param``) are for the
# storage modules alone.
SQL = re.compile(r"^\s*(SELECT\b|INSERT INTO\b|UPDATE \w+ SET\b|DELETE FROM\b)")
STORE_GATEWAY = {"read", "writing", "param"}


def sql_offences(source: str) -> list[tuple[int, str]]:
    """SQL text in ``source``, and uses of a store's generic gateway (by a name ending
    in ``store``), by line."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if statement := SQL.match(node.value):
                found.append((node.lineno, f"SQL {statement.group(1)}"))
        elif isinstance(node, ast.Attribute) and node.attr in STORE_GATEWAY:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name.endswith("store"):
                found.append((node.lineno, f"{name}.{node.attr}"))
    return sorted(found)


def test_sql_is_written_only_in_storage() -> None:
    offences = {
        module_name(path): found
        for layer in LAYERS
        for path in sources(layer)
        if not _under(module_name(path), "orderlog.storage")
        and (found := sql_offences(path.read_text(encoding="utf-8")))
    }
    assert offences == {}


def test_sql_reader_sees_sql_and_the_store_s_gateway() -> None:
    source = """
rows = self.store.read(f"SELECT position FROM projections WHERE name = {p}", [name])
with store.writing() as cursor:
    cursor.execute("DELETE FROM order_status")
p = self._store.param
text = "SELECTED orders"  # prose, not SQL
"""
    assert sql_offences(source) == [
        (2, "SQL SELECT"),
        (2, "store.read"),
        (3, "store.writing"),
        (4, "SQL DELETE FROM"),
        (5, "_store.param"),
    ]
