"""The API reference's inventory: which public names the reference pages render, and which lack a
docstring.

A reference page is ``docs/reference/<module>.md`` holding ``::: <module>``; what it renders is
what mkdocstrings-python renders with this site's options (``mkdocs.yml``): a module's names in
its ``__all__`` (or, without one, the names it defines itself, not those it imports) that do not
start with ``_``, and, for each class, its own public methods and properties. Framework hooks that
a user never calls (``setup``, ``forward``, ``extra_repr``) are filtered out of the pages, and
out of this inventory. Dataclass fields are counted apart: the class docstring and the rendered
signature say what they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"
HIDDEN_METHODS = ("setup", "forward", "extra_repr")
_DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.MULTILINE)


@dataclass
class Inventory:
    """Every public name the reference renders (``names``), those without a docstring
    (``missing``), and the dataclass fields, counted apart (``fields``, ``fields_missing``)."""

    names: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    fields: int = 0
    fields_missing: int = 0


def reference_modules(reference: Path = REFERENCE) -> list[str]:
    """The modules the reference pages document, in page order (``::: module`` lines)."""
    pages = sorted(reference.glob("*.md"))
    return [module for page in pages for module in _DIRECTIVE.findall(page.read_text())]


def _documented(obj: object) -> bool:
    docstring = getattr(obj, "docstring", None)
    return bool(docstring is not None and docstring.value.strip())


def _members(module: object) -> Iterator[tuple[str, object]]:
    exports = module.exports  # type: ignore[attr-defined]
    for name, member in module.members.items():  # type: ignore[attr-defined]
        if name.startswith("_"):
            continue
        if exports is not None and name not in exports:
            continue
        if exports is None and member.is_alias:
            continue
        yield name, member


def inventory(modules: list[str] | None = None) -> Inventory:
    """Loads the packages with griffe (statically, as mkdocstrings does) and walks the pages'
    modules. An alias that cannot be resolved (an export griffe cannot follow, which the page
    would not render) counts as a name without a docstring."""
    import griffe

    modules = reference_modules() if modules is None else modules
    loader = griffe.GriffeLoader(search_paths=[str(ROOT)])
    packages = {name.split(".")[0] for name in modules}
    for package in sorted(packages):
        loader.load(package)
    loader.resolve_aliases(implicit=False, external=False)
    result = Inventory()

    def record(path: str, obj: object) -> None:
        result.names.append(path)
        if not _documented(obj):
            result.missing.append(path)

    for module_name in modules:
        module = loader.modules_collection.get_member(module_name)
        record(module_name, module)
        # An exported name griffe cannot see (bound by tuple unpacking, say) the page would
        # silently leave out.
        for name in module.exports or ():
            if isinstance(name, str) and name not in module.members and not name.startswith("_"):
                result.names.append(f"{module_name}.{name}")
                result.missing.append(f"{module_name}.{name} (exported, not found by griffe)")
        for name, member in _members(module):
            path = f"{module_name}.{name}"
            try:
                target = member.final_target if member.is_alias else member  # type: ignore[attr-defined]
            except griffe.AliasResolutionError:
                result.names.append(path)
                result.missing.append(f"{path} (griffe cannot resolve it)")
                continue
            if target.is_module:
                continue
            record(path, target)
            if not target.is_class:
                continue
            for attr, sub in target.members.items():
                if attr.startswith("_") or attr in HIDDEN_METHODS or sub.is_alias:
                    continue
                if sub.is_attribute and "property" not in sub.labels:
                    result.fields += 1
                    result.fields_missing += not _documented(sub)
                else:
                    record(f"{path}.{attr}", sub)
    return result


if __name__ == "__main__":
    found = inventory()
    print(
        f"{len(found.names)} public names, {len(found.missing)} without a docstring; "
        f"{found.fields} dataclass fields, {found.fields_missing} without one"
    )
    print("\n".join(found.missing))
