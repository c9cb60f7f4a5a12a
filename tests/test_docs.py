"""The repository's own documents: links stay inside the repository, and docs/DESIGN.md's layer table is the
one tests/test_layout.py enforces."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("layout_rules", ROOT / "tests" / "test_layout.py")
_layout = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_layout)
ALLOWED = _layout.ALLOWED
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_resolve_inside_the_repository():
    for doc in DOCS:
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor
            path = (doc.parent / target.split("#")[0]).resolve()
            assert path.is_relative_to(ROOT), f"{doc.name} links outside the repository: {target}"
            assert path.exists(), f"{doc.name} links to a missing file: {target}"


def test_design_layer_table_matches_the_layout_test():
    text = (ROOT / "docs" / "DESIGN.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\w+) \| (.+?) \|$", text, re.M))
    for layer, allowed in ALLOWED.items():
        named = set(re.findall(r"\b(core|kernels|parallel|backends|engine|bench|kernelbench|report|plot|explain)\b",
                               rows[layer]))
        assert named == allowed, (layer, named, allowed)


def test_benchmarks_index_lists_every_script():
    """benchmarks/README.md is the index of the evidence scripts: a new script gets a row, a removed one loses it."""
    index = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([^`]+)` \|", index, flags=re.M))
    scripts = {p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in (".py", ".sh")}
    assert scripts <= listed, f"not in benchmarks/README.md: {sorted(scripts - listed)}"
    missing = {name for name in listed if not (ROOT / "benchmarks" / name).exists()}
    assert not missing, f"listed but gone: {sorted(missing)}"
