"""The docs agree with the code: generated parts match their sources, named things exist."""

import argparse
import hashlib
import importlib.util
import io
import pathlib
import re
import subprocess
import sys
import textwrap
import threading

import yaml

from swiftdrop import config as config_module
from swiftdrop.delivery import Deliverer
from swiftdrop.naming import MaildirNamer
from swiftdrop.queue import PREFIXES, MailQueue
from swiftdrop.reception import Message
from swiftdrop.smtp import Envelope
from swiftdrop.storage import SwiftStore
from swiftdrop.verdicts import Verdicts
from swiftdrop.worker import work

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load_docs_script():
    spec = importlib.util.spec_from_file_location("docs_script", ROOT / "scripts/docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_docs_are_current_and_name_only_what_exists():
    """scripts/docs.py --check: the generated tables as the specs give them, and no
    role variable, command, flag, ini key, metadata key or file that is not there."""
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


# -- The check of what the docs name: the scanner on small pages ------------------------------

def tiny_vocabulary():
    """A vocabulary small enough to see at a glance, with a parser shaped like ours."""
    parser = argparse.ArgumentParser(prog="swiftdrop")
    parser.add_argument("--version", action="version", version="1")
    commands = parser.add_subparsers()
    check = commands.add_parser("check")
    check.add_argument("--config-only", action="store_true")
    queue = commands.add_parser("queue")
    queue.add_argument("--destination")
    actions = queue.add_subparsers()
    finish = actions.add_parser("finish")
    finish.add_argument("name")
    finish.add_argument("--state", choices=("done", "failed", "retry"))
    return load_docs_script().Vocabulary(
        role_variables=frozenset({"swiftdrop_verdicts"}),
        internal_variables=frozenset({"_swiftdrop_ca_dir"}),
        other_role_words=frozenset({"swiftdrop_messages_total", "swiftdrop_run"}),
        parser=parser,
        ini_keys=frozenset({"container", "reject_verdicts"}),
        other_settings=frozenset({"smtpd_proxy_options"}),
        metadata_keys=frozenset({"failed-reason", "attempts", "client-address",
                                 "client-name"}),
        repository_paths=frozenset({"scripts", "scripts/test", "bench", "bench/soak.py"}))


def findings(page):
    docs = load_docs_script()
    return [str(finding) for finding in docs.page_findings(
        "page.md", textwrap.dedent(page).lstrip("\n"), tiny_vocabulary())]


def test_a_role_variable_that_is_not_in_the_specs_is_named_with_page_and_line():
    assert findings("""
        Turn `swiftdrop_verdicts` off with `swiftdrop_verdict: false`; the
        `swiftdrop_run` tag, `swiftdrop_messages_total`, `_swiftdrop_ca_dir`
        and `vault_swiftdrop_key` are all there.

        ```yaml
        swiftdrop_verdicts: true
        swiftdrop_verdictz: true
        key: "{{ vault_swiftdrop_default_key }}"
        ```
        """) == [
        "page.md:1: `swiftdrop_verdict` is no role variable of "
        "roles/swiftdrop/meta/argument_specs.yml (nor a tag, inventory group or metric)",
        "page.md:7: `swiftdrop_verdictz` is no role variable of "
        "roles/swiftdrop/meta/argument_specs.yml (nor a tag, inventory group or metric)",
    ]
    assert findings("`_swiftdrop_nothing`") == [
        "page.md:1: `_swiftdrop_nothing` is none of the role's own variables, facts or "
        "registers"]


def test_commands_and_flags_are_what_the_parser_takes():
    assert findings("""
        `swiftdrop queue finish NAME --stat done`, `swiftdrop queue finsh`,
        `swiftdrop queue finish NAME --state gone|done`,
        `swiftdrop queue finish NAME --destination X`.
        """) == [
        "page.md:1: `swiftdrop queue finish` has no option --stat",
        "page.md:1: `swiftdrop queue` has no subcommand finsh (only finish)",
        "page.md:2: `swiftdrop queue finish --state` takes none of gone "
        "(only done, failed, retry)",
        "page.md:3: `swiftdrop queue finish` has no option --destination "
        "(it is `swiftdrop queue`'s: it goes before the subcommand)",
    ]


def test_only_swiftdrop_in_command_position_is_a_command():
    assert findings("""
        `journalctl -u swiftdrop -p err`, `systemctl show swiftdrop -p NRestarts`,
        `swiftdrop --version`, `sudo swiftdrop check --config-only`,
        `PYTHONPATH=. python -m swiftdrop check --config-only`, the `swiftdrop` role.

        ```sh
        $ swiftdrop queue --destination D finish N --state done|failed   # --bogus
        swiftdrop queue ... finish NAME [--state done|failed|retry] -- COMMAND --any
        ```
        """) == []
    assert findings("`sudo swiftdrop check --config-onyl`") == [
        "page.md:1: `swiftdrop check` has no option --config-onyl"]


def test_a_synopsis_line_and_the_docs_shorthand_are_commands_too():
    assert findings("""
        ```
        swiftdrop check
                        [--config-only] [--dry-run]
        ```

        Scripts use `finish --state retry` or `check --verbose`.
        """) == [
        "page.md:2: `swiftdrop check` has no option --dry-run",
        "page.md:6: `swiftdrop check` has no option --verbose",
    ]


def test_ini_keys_are_what_the_config_loader_reads():
    assert findings("""
        ```ini
        [BILLING]
        container = invoices
        contaner = invoices
        ```

        With `reject_verdict = spam-reject` (the ini key `reject_verdicts`, not
        the ini key `reject_verdict`) and Postfix's `smtpd_proxy_options = speed_adjust`.
        """) == [
        "page.md:4: `contaner` is no ini key that swiftdrop/config.py reads",
        "page.md:7: `reject_verdict` is no ini key that swiftdrop/config.py reads",
        "page.md:8: `reject_verdict` is no ini key that swiftdrop/config.py reads",
    ]


def test_the_first_column_of_an_ini_table_holds_ini_keys():
    table = """
        | key | meaning |
        | --- | --- |
        | `container` | where |
        | `contaner`, `reject_verdicts` | typo |
        """
    assert findings("## The ini file\n" + textwrap.dedent(table)) == [
        "page.md:6: `contaner` is no ini key that swiftdrop/config.py reads"]
    assert findings("## Role variables\n\nKeys of each entry:\n" + textwrap.dedent(table)) == []


def test_metadata_keys_are_what_the_code_writes():
    assert findings("""
        `X-Object-Meta-Failed-Reasons`; `X-Object-Meta-Client-Address`, `-Client-Nam`;
        its `Failed-Reasn` metadata; `Failed-Reason` metadata.

        A paragraph about something else: `Content-Length`.

        | key | value |
        | --- | --- |
        | `Attempt` | not checked: neither the table nor its paragraph is about that |

        ```sh
        swift copy --meta Attempts:0 --meta Atempts:0 CONTAINER failed/NAME
        ```
        """) == [
        "page.md:1: object metadata key Client-Nam is not one that swiftdrop writes "
        "(delivery.py, envelope.py, verdicts.py, queue/*.py, worker.py)",
        "page.md:1: object metadata key Failed-Reasons is not one that swiftdrop writes "
        "(delivery.py, envelope.py, verdicts.py, queue/*.py, worker.py)",
        "page.md:2: object metadata key Failed-Reasn is not one that swiftdrop writes "
        "(delivery.py, envelope.py, verdicts.py, queue/*.py, worker.py)",
        "page.md:11: object metadata key Atempts is not one that swiftdrop writes "
        "(delivery.py, envelope.py, verdicts.py, queue/*.py, worker.py)",
    ]


def test_repository_paths_exist():
    assert findings("""
        `./scripts/test --quick`, `scripts/tset`, `bench/*.py`, `bench/*.sh`,
        `/etc/swiftdrop.ini`, `scripts/NAME`, `scripts/…`,
        `python -m bench.soak`, `python -m bench.sauk`.
        """) == [
        "page.md:1: bench/*.sh matches no file of the repository",
        "page.md:1: scripts/tset is no file or directory of the repository (git ls-files)",
        "page.md:3: `python -m bench.sauk`: no bench/sauk.py or bench/sauk/__main__.py",
    ]


def test_fenced_lines_keep_their_line_numbers_and_backslashes_join_them():
    docs = load_docs_script()
    codes, prose = docs.read_page("text\n\n```sh\nswiftdrop queue \\\n  claim\nls\n```\n`x`\n")
    assert [(code.line, code.text, code.fence) for code in codes] == [
        (4, "swiftdrop queue claim", "sh"), (6, "ls", "sh"), (8, "x", None)]
    assert prose == ["text", "", "", "", "", "", "", "`x`", ""]


def test_the_vocabulary_is_read_from_the_sources():
    """Each source is really read: a name of each kind the docs use is found."""
    vocabulary = load_docs_script().Vocabulary.of_repository()
    assert "swiftdrop_verdicts" in vocabulary.role_variables
    assert {"_swiftdrop_postfix_unit", "_swiftdrop_completion", "_swiftdrop_ca_dir"} <= \
        vocabulary.internal_variables  # a set_fact, a register, a var
    assert {"swiftdrop_run", "swiftdrop_consumers", "swiftdrop_copies_total",
            "swiftdrop_store_duration_seconds", "swiftdrop_queue_oldest_age_seconds"} <= \
        vocabulary.other_role_words  # a tag, a group, metrics of the filter and the queue
    assert {"queue", "serve", "check", "status", "import-env"} <= set(
        load_docs_script().subcommands_of(vocabulary.parser))
    assert {"reject_verdicts", "queue_lease", "os_options_project_name"} <= vocabulary.ini_keys
    assert {"smtpd_proxy_options", "relay_recipient_maps", "roles_path"} <= \
        vocabulary.other_settings
    assert {"scripts/docs.py", "roles/swiftdrop", ".ci/run"} <= vocabulary.repository_paths


# -- The metadata keys the check knows are exactly what reaches Swift -------------------------

class GivenVerdicts:
    """rspamd's answer, given rather than asked for: what is under test is what reaches Swift.

    (test_verdicts.py asks the real rspamd.)
    """

    def check(self, envelope, message, *, deadline, queue_id=None):
        return Verdicts(action="no action", score="-0.80", spf="pass", dkim="pass",
                        dmarc="pass", dmarc_policy="reject", arc="none", virus="infected",
                        virus_name="Eicar-Signature", symbols="R_SPF_ALLOW")


def test_the_metadata_keys_the_docs_may_name_are_what_swiftdrop_writes(swift, tmp_path):
    """Every metadata key the code writes, through every path that writes one, into a real
    Swift: the set found on the objects is the set the docs check reads from the code."""
    swift.connection().put_container("docs-metadata")
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text(f"[DEFAULT]\nrecipient = DEFAULT\ncontainer = docs-metadata\n"
                   f"authurl = {swift.auth_url}\nuser = test:tester\nkey = testing\n"
                   "queue_max_attempts = 2\n")
    config = config_module.load(str(ini))
    deliver = Deliverer(config, SwiftStore(), MaildirNamer("mx.test"), 20,
                        verdicts=GivenVerdicts())

    def receive(body, message_id, recipients=("someone@example.com",)):
        envelope = Envelope("sender@example.org", list(recipients), xforward={
            "ADDR": "192.0.2.1", "NAME": "mail.example.org", "HELO": "mail.example.org"})
        digest = hashlib.md5(body).hexdigest()
        reply = deliver(envelope, Message(io.BytesIO(body), len(body), digest, message_id))
        assert reply.startswith("250 "), reply

    now = [1_800_000_000.0]
    queue = MailQueue(config.catch_all, clock=lambda: now[0])
    same = b"Message-ID: <same@example.org>\r\n\r\nsame\r\n"
    receive(same, "<same@example.org>")
    queue.finish(queue.claim(dedup=True), "done")  # remembered for dedup
    receive(same, "<same@example.org>")  # the duplicate: Duplicate-Of
    receive(b"Subject: fails\r\n\r\nexit 65\r\n", "<fails@example.org>",  # Exit-Status, Last-Error
            [f"user{index}@example.com" for index in range(100)])  # Rcpt-To-2, Rcpt-List
    assert work(queue, ["sh", "-c", "cat >/dev/null; exit 65"], threading.Event(),
                dedup=True, once=True) == {"failed": 1}
    [failed] = [item["name"].removeprefix("failed/") for item in queue.listing("failed/")]
    [replayed] = queue.replay("failed/", [failed], execute=True)  # Replayed, Replayed-At
    assert replayed.outcome == "replayed"
    assert work(queue, ["sh", "-c", "cat >/dev/null; exit 65"], threading.Event(),
                once=True) == {"failed": 1}  # its Last-Error again, which replay dropped
    receive(b"Subject: lost\r\n\r\nits worker died\r\n", "<lost@example.org>")
    claimed = queue.claim()
    queue.lock.release(claimed.name, claimed.token)  # as if its lease had run out
    assert queue.recover() == [("lease expired, moved to retry/", claimed.name)]
    now[0] += 3600
    assert queue.finish(queue.claim(), "retry") == "failed/"  # gave up after 2 attempts

    written = set()
    for prefix in PREFIXES:
        for item in queue.listing(prefix):
            headers = queue.connection.head_object(queue.container, item["name"])
            written.update(key.removeprefix("x-object-meta-") for key in headers
                           if key.startswith("x-object-meta-"))
    known = load_docs_script().Vocabulary.of_repository().metadata_keys
    assert sorted(written - known) == [], "written, but not found in the code by the docs check"
    assert sorted(known - written) == [], "found in the code, but no path above writes it"
