"""The committed manual page says what the parser says (scripts/manpage writes it)."""

import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_manual_page_is_current(tmp_path):
    subprocess.run([str(REPO / "scripts" / "manpage"), str(tmp_path / "swiftdrop.1")],
                   check=True)
    committed = (REPO / "man" / "swiftdrop.1").read_text()
    assert (tmp_path / "swiftdrop.1").read_text() == committed, \
        "man/swiftdrop.1 is stale: run scripts/manpage"
