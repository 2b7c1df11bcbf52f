"""Versions and releases: ``swiftdrop --version``, the collection's version, scripts/release.

scripts/release runs for real, with git and Debian's pip, in a repository
made from this work tree (tracked and new files, not the checkout's history),
so the checkout itself never gets a tag or a commit.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml

import swiftdrop
from tests.support.filterproc import run_swiftdrop

ROOT = pathlib.Path(__file__).resolve().parent.parent
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Release Test", "GIT_AUTHOR_EMAIL": "release@example.test",
                "GIT_COMMITTER_NAME": "Release Test",
                "GIT_COMMITTER_EMAIL": "release@example.test"}


def collection_version(tree):
    """galaxy.yml's version in PEP 440 spelling (Galaxy's 1.2.3-dev0 is 1.2.3.dev0)."""
    version = yaml.safe_load((tree / "galaxy.yml").read_text())["version"]
    return version.replace("-dev", ".dev")


def package_version(tree):
    match = re.search(r'^__version__ = "([^"]+)"$',
                      (tree / "swiftdrop/__init__.py").read_text(), re.M)
    return match and match.group(1)


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          check=True, env={**os.environ, **GIT_IDENTITY}).stdout.strip()


def release(repo, *args):
    return subprocess.run([str(repo / "scripts/release"), *args], capture_output=True,
                          text=True, check=False, env={**os.environ, **GIT_IDENTITY},
                          timeout=300)


@pytest.fixture
def repo(tmp_path):
    """A git repository holding this work tree's files in one commit on branch main."""
    repo = tmp_path / "swiftdrop"
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "work tree")
    return repo


def test_version_option_prints_the_package_version():
    result = run_swiftdrop("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"swiftdrop {swiftdrop.__version__}"


def test_the_collection_and_the_package_say_the_same_version():
    assert collection_version(ROOT) == package_version(ROOT) == swiftdrop.__version__


def test_between_releases_the_version_is_a_dev_version():
    """An untagged checkout must never claim to be a release."""
    assert re.fullmatch(r"\d+\.\d+\.\d+\.dev0", swiftdrop.__version__)


def test_the_changelog_has_an_unreleased_section():
    assert re.search(r"^## \[Unreleased\]$", (ROOT / "CHANGELOG.md").read_text(), re.M)


def test_release_tags_a_commit_of_the_branch(repo, tmp_path):
    """The tag's commit is on the branch: whoever has the branch has the release."""
    result = release(repo, "7.3.1")
    assert result.returncode == 0, result.stderr

    git(repo, "merge-base", "--is-ancestor", "v7.3.1", "main")  # raises if it is not
    released = tmp_path / "released"
    git(repo, "worktree", "add", "-q", "--detach", str(released), "v7.3.1")
    assert package_version(released) == collection_version(released) == "7.3.1"
    changelog = (released / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]\n\n## \[7\.3\.1\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)

    # The branch goes on as the next dev version, and the tag is one commit behind it.
    assert package_version(repo) == collection_version(repo) == "7.3.2.dev0"
    assert git(repo, "rev-parse", "main^") == git(repo, "rev-parse", "v7.3.1^{commit}")
    assert git(repo, "status", "--porcelain") == ""


@pytest.mark.slow  # ansible-galaxy clones and builds the collection twice
@pytest.mark.parametrize("version", ["main", "v7.3.1"])
def test_the_collection_installs_from_the_branch_and_from_a_release_tag(repo, tmp_path, version):
    """What an operator's requirements.yml does (README.md, Minimal deployment)."""
    assert release(repo, "7.3.1").returncode == 0
    published = tmp_path / "published.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(published))
    installed = subprocess.run(
        [str(ROOT / ".venv-ansible/bin/ansible-galaxy"), "collection", "install",
         f"git+file://{published},{version}",
         "--collections-path", str(tmp_path / "collections")],
        capture_output=True, text=True, check=False, timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr

    collection = tmp_path / "collections/ansible_collections/swiftdrop/swiftdrop"
    expected = "7.3.1" if version.startswith("v") else "7.3.2.dev0"
    assert package_version(collection) == expected
    manifest = json.loads((collection / "MANIFEST.json").read_text())
    assert manifest["collection_info"]["version"] == expected.replace(".dev", "-dev")
    # The role and the source it builds the package from, and nothing of the test rig.
    assert (collection / "roles/swiftdrop/tasks/filter.yml").is_file()
    assert (collection / "pyproject.toml").is_file()
    assert not (collection / "tests").exists()
    assert not (collection / "molecule").exists()


def test_release_refuses_a_tree_with_changes(repo):
    (repo / "README.md").write_text("changed\n")
    result = release(repo, "7.3.1")
    assert result.returncode == 1
    assert "the work tree has changes" in result.stderr
    assert git(repo, "tag", "--list") == ""


def test_release_refuses_an_empty_unreleased_section(repo):
    changelog = repo / "CHANGELOG.md"
    changelog.write_text(re.sub(r"(?ms)^## \[Unreleased\]\n.*", "## [Unreleased]\n",
                                changelog.read_text()))
    git(repo, "commit", "-q", "-am", "nothing to release")
    result = release(repo, "7.3.1")
    assert result.returncode == 1
    assert "Unreleased section is empty" in result.stderr
    assert git(repo, "tag", "--list") == ""
