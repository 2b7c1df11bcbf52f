"""Versions and releases: ``swiftdrop --version``, the role's version, scripts/release.

scripts/release runs for real, with git and Debian's pip, in a repository
made from this work tree (tracked and new files, not the checkout's history),
so the checkout itself never gets a tag or a commit.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

import swiftdrop
from tests.support.filterproc import run_swiftdrop

ROOT = pathlib.Path(__file__).resolve().parent.parent
ROLE_META = "roles/swiftdrop/meta/main.yml"
GIT_IDENTITY = {"GIT_AUTHOR_NAME": "Release Test", "GIT_AUTHOR_EMAIL": "release@example.test",
                "GIT_COMMITTER_NAME": "Release Test",
                "GIT_COMMITTER_EMAIL": "release@example.test"}


def role_version(tree):
    match = re.search(r"^# swiftdrop-version: (\S+)$", (tree / ROLE_META).read_text(), re.M)
    return match and match.group(1)


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


def test_the_role_and_the_package_say_the_same_version():
    assert role_version(ROOT) == package_version(ROOT) == swiftdrop.__version__


def test_between_releases_the_version_is_a_dev_version():
    """An untagged checkout must never claim to be a release."""
    assert re.fullmatch(r"\d+\.\d+\.\d+\.dev0", swiftdrop.__version__)


def test_the_changelog_has_an_unreleased_section():
    assert re.search(r"^## \[Unreleased\]$", (ROOT / "CHANGELOG.md").read_text(), re.M)


@pytest.mark.slow  # builds wheels: over 10 s on a loaded machine
def test_release_tags_a_commit_that_ships_the_wheel_the_source_builds(repo, tmp_path):
    result = release(repo, "7.3.1")
    assert result.returncode == 0, result.stderr

    wheel = "roles/swiftdrop/files/swiftdrop-7.3.1-py3-none-any.whl"
    assert wheel in git(repo, "ls-tree", "-r", "--name-only", "v7.3.1").splitlines()
    released = tmp_path / "released"
    git(repo, "worktree", "add", "-q", "--detach", str(released), "v7.3.1^")
    assert package_version(released) == role_version(released) == "7.3.1"
    changelog = (released / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]\n\n## \[7\.3\.1\] - \d{4}-\d{2}-\d{2}$", changelog, re.M)

    # The branch goes on as the next dev version and never holds the wheel.
    assert package_version(repo) == role_version(repo) == "7.3.2.dev0"
    assert not (repo / wheel).exists()
    assert git(repo, "status", "--porcelain") == ""

    verified = release(repo, "--verify", "v7.3.1")
    assert verified.returncode == 0, verified.stderr
    assert "is exactly what" in verified.stdout


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


@pytest.mark.slow  # builds wheels: over 10 s on a loaded machine
def test_verify_finds_a_wheel_that_differs_from_its_source(repo):
    assert release(repo, "7.3.1").returncode == 0
    # A tag on the release commit whose wheel is not what that commit builds.
    git(repo, "checkout", "-q", "--detach", "v7.3.1^")
    git(repo, "tag", "-d", "v7.3.1")
    wheel = "roles/swiftdrop/files/swiftdrop-7.3.1-py3-none-any.whl"
    (repo / wheel).parent.mkdir(parents=True, exist_ok=True)
    (repo / wheel).write_bytes(b"not the wheel")
    git(repo, "add", wheel)
    git(repo, "commit", "-q", "-m", "a forged wheel")
    git(repo, "tag", "-a", "v7.3.1", "-m", "forged")
    result = release(repo, "--verify", "v7.3.1")
    assert result.returncode == 1
    assert "differs from a rebuild" in result.stderr
