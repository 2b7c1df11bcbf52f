"""The docs' generated parts match their sources."""

import importlib.util
import pathlib
import re
import subprocess
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_docs_script():
    spec = importlib.util.spec_from_file_location("docs_script", ROOT / "scripts/docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_role_variable_tables_are_what_the_argument_specs_give():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/docs.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_role_variable_is_in_the_configuration_page():
    docs = load_docs_script()
    options = yaml.safe_load(docs.SPECS.read_text())["argument_specs"]["main"]["options"]
    page = docs.PAGE.read_text()
    missing = [name for name in options if f"| `{name}` |" not in page]
    assert not missing


def test_check_fails_when_the_section_is_stale():
    """The check can fail: a section with a row removed is not what the specs give."""
    docs = load_docs_script()
    section = docs.render_section(yaml.safe_load(docs.SPECS.read_text()))
    stale = "intro\n" + "\n".join(
        line for line in section.splitlines() if "`swiftdrop_wheel`" not in line) + "\nend\n"
    assert docs.updated_page(stale, section) != stale
    assert docs.updated_page(docs.updated_page(stale, section), section) == \
        docs.updated_page(stale, section)


def test_ansible_markup_becomes_markdown():
    docs = load_docs_script()
    assert docs.render_text(["See I(x) and C(a|b).", "Two"]) == "See *x* and `a\\|b`. Two"


def heading_anchors(markdown):
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, - for spaces."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"(?ms)^```.*?^```", "", markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_between_the_docs_lead_somewhere():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"(?ms)^```.*?^```", "", page.read_text())
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https: and the like are not checked here
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and anchor not in heading_anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken


def test_anchors_are_made_the_way_github_makes_them():
    assert heading_anchors("## The ini file: `/etc/swiftdrop.ini`\n## Replaying `failed/`\n") \
        == {"the-ini-file-etcswiftdropini", "replaying-failed"}


def test_every_unit_points_to_the_manual_page_the_role_installs():
    """`systemctl status` shows Documentation=; it must lead somewhere that exists on the host."""
    templates = ROOT / "roles/swiftdrop/templates"
    units = sorted(path for pattern in ("*.service.j2", "*.socket.j2", "*.timer.j2")
                   for path in templates.glob(pattern))
    assert len(units) >= 9
    documented = {unit.name: re.findall(r"^Documentation=.*$", unit.read_text(), re.M)
                  for unit in units}
    assert {name: lines for name, lines in documented.items()
            if lines != ["Documentation=man:swiftdrop(1)"]} == {}
    assert "dest: /usr/local/share/man/man1/swiftdrop.1" in \
        (ROOT / "roles/swiftdrop/tasks/cli.yml").read_text()
