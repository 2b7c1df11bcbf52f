"""swiftdrop import-env on the earlier, Docker-based SwiftDrop's own example."""

import json
import os
import pathlib
import re
import subprocess
import textwrap

import pytest
import yaml

from swiftdrop import config as config_module
from swiftdrop import migrate
from tests.support.filterproc import run_swiftdrop, swiftdrop_command

REPO = pathlib.Path(__file__).resolve().parents[1]
# The example env file of the earlier README, as it stands there ("..." included).
EARLIER_EXAMPLE = textwrap.dedent("""\
    # Postfix configuration (read by start wrapper)
    MYHOSTNAME=swiftdrop.example.com
    RELAY_DOMAINS=example.com,test.com

    # Postfix configuration read by confd
    MYRECIPIENTS='["swiftdrop@example.com", "whatever@test.com"]'

    # Swiftdrop configuration read by confd
    SWIFTDROP_DEFAULT_RECIPIENT=DEFAULT
    SWIFTDROP_DEFAULT_CONTAINER=fallback_and_test_container
    # Swiftdrop configuration as used by swiftclient.Connection
    SWIFTDROP_DEFAULT_AUTH_VERSION=3
    SWIFTDROP_DEFAULT_AUTHURL=https://keystone-server/v3
    SWIFTDROP_DEFAULT_USER=myuser
    SWIFTDROP_DEFAULT_KEY=xxx
    SWIFTDROP_DEFAULT_OS_OPTIONS_PROJECT_DOMAIN_NAME=project_domain
    SWIFTDROP_DEFAULT_OS_OPTIONS_PROJECT_NAME=project
    SWIFTDROP_DEFAULT_OS_OPTIONS_USER_DOMAIN_NAME=user_domain

    # Swiftdrop configuration for a secondary address;
    # note that values from DEFAULT are available here too,
    # and need to be overwritten with blanks if they conflict.
    # For sanity, the DEFAULT above is the catch-all, and this
    # one handles only the "production" address.
    SWIFTDROP_PRODUCTION_RECIPIENT=swiftdrop@example.com
    SWIFTDROP_PRODUCTION_CONTAINER=production
    ...
    """)


# The same for a shell: "..." stands for more lines, and a shell would run it as a command.
SOURCED_EXAMPLE = EARLIER_EXAMPLE.replace("...\n", "")


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "swiftdrop.env"
    path.write_text(EARLIER_EXAMPLE)
    return path


@pytest.fixture
def sourced_env_file(tmp_path):
    path = tmp_path / "sourced.env"
    path.write_text(SOURCED_EXAMPLE)
    return path


class Unsafe(str):
    """A value the YAML tagged !unsafe, as Ansible's loader marks it."""


class AnsibleLikeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that reads !unsafe, which Ansible's vars loader understands."""


AnsibleLikeLoader.add_constructor(
    "!unsafe", lambda loader, node: Unsafe(loader.construct_scalar(node)))


def ansible_documents(text):
    """group_vars and vault from import-env --format ansible."""
    return list(yaml.load_all(text, Loader=AnsibleLikeLoader))


def test_the_earlier_example_as_it_stands_needs_a_dialect(env_file):
    result = run_swiftdrop("import-env", "--env-file", str(env_file))
    assert result.returncode == 64, result.stderr
    # MYRECIPIENTS keeps its quotes for docker run, loses them in a shell; "..." is
    # a name Docker looks up, a command for a shell (line 27).
    assert "(MYRECIPIENTS, line 27): choose --dialect docker" in result.stderr
    assert "--dialect shell" in result.stderr
    assert result.stdout == ""


def test_the_earlier_example_becomes_the_ini_confd_meant(env_file, tmp_path):
    result = run_swiftdrop("import-env", "--env-file", str(env_file), "--dialect", "docker")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "swiftdrop import-env: warning: MYRECIPIENTS: a shell would read another value "
        "(or none); taken as docker run --env-file reads it",
        "swiftdrop import-env: warning: line 27: a shell would read another value (or none); "
        "taken as docker run --env-file reads it",
        f"swiftdrop import-env: warning: {env_file}:27: the name on this line has no value "
        "and is not set in this environment: left out, as docker run --env-file leaves it out"]
    ini = tmp_path / "swiftdrop.ini"
    ini.write_text(result.stdout)
    config = config_module.load(str(ini))
    default = config.catch_all
    assert (default.container, default.account.authurl, default.account.user,
            default.account.key) == ("fallback_and_test_container",
                                     "https://keystone-server/v3", "myuser", "xxx")
    assert dict(default.account.os_options) == {
        "project_domain_name": "project_domain", "project_name": "project",
        "user_domain_name": "user_domain"}
    [production] = [d for d in config.destinations if d.section == "PRODUCTION"]
    assert production.recipients == ("swiftdrop@example.com",)
    assert production.container == "production"
    assert production.account == default.account  # the rest inherited, as before


def test_the_earlier_example_becomes_group_vars_with_secrets_for_vault(sourced_env_file):
    result = run_swiftdrop("import-env", "--env-file", str(sourced_env_file),
                           "--dialect", "shell", "--format", "ansible")
    assert result.returncode == 0, result.stderr
    group_vars, vault = ansible_documents(result.stdout)
    assert group_vars == {
        "swiftdrop_myhostname": "swiftdrop.example.com",
        "swiftdrop_relay_domains": ["example.com", "test.com"],
        "swiftdrop_recipients": ["whatever@test.com"],  # the other is PRODUCTION's
        "swiftdrop_destinations": [
            {"name": "DEFAULT", "container": "fallback_and_test_container",
             "auth_version": "3", "authurl": "https://keystone-server/v3", "user": "myuser",
             "key": "{{ vault_swiftdrop_default_key }}",
             "os_options": {"project_domain_name": "project_domain",
                            "project_name": "project", "user_domain_name": "user_domain"}},
            {"name": "PRODUCTION", "recipients": ["swiftdrop@example.com"],
             "container": "production"},
        ]}
    assert vault == {"vault_swiftdrop_default_key": "xxx"}
    assert isinstance(vault["vault_swiftdrop_default_key"], Unsafe)  # never templated
    assert not isinstance(group_vars["swiftdrop_destinations"][0]["key"], Unsafe)  # a reference
    assert "xxx" not in result.stdout.split("---")[1]  # the secret only in the Vault part
    assert_valid_role_variables(group_vars)


def assert_valid_role_variables(group_vars):
    """Check them against the role's meta/argument_specs.yml with Ansible's own validator."""
    check = textwrap.dedent("""\
        import json, sys, yaml
        from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
        specs = yaml.safe_load(open(sys.argv[1]))["argument_specs"]["main"]["options"]
        result = ArgumentSpecValidator(specs).validate(json.loads(sys.stdin.read()))
        print("\\n".join(str(error) for error in result.errors))
        """)
    result = subprocess.run(
        [str(REPO / ".venv-ansible/bin/python"), "-c", check,
         str(REPO / "roles/swiftdrop/meta/argument_specs.yml")],
        input=json.dumps(group_vars), capture_output=True, text=True, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, ""), result.stderr


def test_the_process_environment_is_read_without_env_file():
    env = {key: value for key, value in os.environ.items() if not key.startswith("SWIFTDROP_")}
    env.update(SWIFTDROP_DEFAULT_CONTAINER="from-env", SWIFTDROP_DEFAULT_AUTHURL="http://x/auth",
               SWIFTDROP_DEFAULT_USER="u", SWIFTDROP_DEFAULT_KEY="k",
               SWIFTDROP_BILLING_DEPT_RECIPIENT="bills@example.com, pay@example.com",
               SWIFTDROP_BILLING_DEPT_KEY="")
    result = subprocess.run(swiftdrop_command("import-env"), cwd=REPO, env=env,
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "[DEFAULT]\ncontainer = from-env\n" in result.stdout
    # a section name with an underscore, a list, and a blank that un-inherits
    assert ("[BILLING_DEPT]\nrecipient = bills@example.com, pay@example.com\nkey = \"\"\n"
            in result.stdout)


@pytest.mark.parametrize(("variables", "words"), [
    ({"SWIFTDROP_DEFAULT_CONTAINR": "x"}, "SWIFTDROP_DEFAULT_CONTAINR: does not end in a known"),
    ({"SWIFTDROP_PRODUCTION_CONTAINER": "x"}, "no SWIFTDROP_DEFAULT_* variables"),
])
def test_what_cannot_be_carried_over_is_named(variables, words):
    with pytest.raises(migrate.MigrationError, match=re.escape(words)):
        migrate.to_ini(variables)


def read_both_ways(tmp_path, text, environ=None):
    """{dialect: variables} of `text` as an env file, each dialect on its own."""
    path = tmp_path / "one.env"
    path.write_bytes(text.encode())
    return {dialect: migrate.read_env_file(path, dialect, environ or {})[0]
            for dialect in ("docker", "shell")}


@pytest.mark.parametrize(("line", "docker", "shell"), [
    ("K=plain", "plain", "plain"),
    ("K='a b'", "'a b'", "a b"),  # docker run keeps the quotes
    ('K="x\\"y\\$z\\\\w\\q"', '"x\\"y\\$z\\\\w\\q"', 'x"y$z\\w\\q'),  # \q stays \q in sh
    ("K=a #c", "a #c", "a"),  # a comment after a blank, for a shell only
    ("K=a#c", "a#c", "a#c"),
    ("K=tail  ", "tail  ", "tail"),  # Docker keeps trailing blanks
    ("K=a\\ b", "a\\ b", "a b"),
    ("K='it'\\''s'", "'it'\\''s'", "it's"),
    ("K=pay$", "pay$", "pay$"),  # a last $ expands nothing
    ('K="pay$"', '"pay$"', "pay$"),
    ('K="pay$ x"', '"pay$ x"', "pay$ x"),
    ("  K=x=y,z", "x=y,z", "x=y,z"),
])
def test_the_dialects_read_a_line_as_docker_run_and_sh_do(tmp_path, line, docker, shell):
    assert read_both_ways(tmp_path, f"# a comment\n\n{line}\n") == {
        "docker": {"K": docker}, "shell": {"K": shell}}
    sourced = subprocess.run(["sh", "-c", 'set -a; . "$0"; printf %s "$K"', tmp_path / "one.env"],
                             capture_output=True, text=True, check=True)
    assert sourced.stdout == shell  # what a real shell makes of it


@pytest.mark.parametrize(("dialect", "text"), [
    ("docker", "FROM_ENV\nSET=here\nUNSET\n"),
    ("shell", "export FROM_ENV\nexport SET=here\nexport UNSET  # comment\n"),
])
def test_a_name_without_a_value_takes_the_environment(tmp_path, dialect, text):
    path = tmp_path / "one.env"
    path.write_text(text)
    variables, warnings = migrate.read_env_file(path, dialect, {"FROM_ENV": "a"})
    assert variables == {"FROM_ENV": "a", "SET": "here"}
    [unset] = [warning for warning in warnings if "not set in this environment" in warning]
    assert unset.startswith(f"{path}:3: UNSET has no value")


@pytest.mark.parametrize(("line", "words"), [
    ("K=s3cr3t$HOME", "$ expansion needs a shell"),
    ('K="s3cr3t${HOME}"', "$ expansion needs a shell"),
    ("K=s3cr3t$(id)", "$ expansion needs a shell"),
    ('K=s3cr3t$"x"', "$ expansion needs a shell"),  # bash's $"..." translates
    ("K=s3cr3t`id`", "command substitution needs a shell"),
    ('K="s3cr3t`id`"', "command substitution needs a shell"),
    ("K=s3cr3t;reboot", "';' is shell syntax"),
    ("K=~s3cr3t", "~ would be expanded"),
    ("K='s3cr3t", "a single quote not closed"),
    ('K="s3cr3t', "a double quote not closed"),
    ("K=s3cr3t\\", "a backslash continues the line"),
    ("K=s3cr3t L=more", "more than one assignment or a command"),
    ("s3cr3t", "not an assignment"),
    ("K = s3cr3t", "not an assignment"),
    ("K=s3cr3t\r", "a Windows line end: a shell keeps its CR"),
    ("\r", "a Windows line end: a shell keeps its CR"),
])
def test_what_needs_a_shell_is_refused_naming_the_line(tmp_path, line, words):
    path = tmp_path / "one.env"
    path.write_text(f"A=1\n{line}\n")
    with pytest.raises(migrate.MigrationError) as raised:
        migrate.read_env_file(path, "shell", {})
    assert str(raised.value).startswith(f"{path}:2: {words}")
    assert "s3cr3t" not in str(raised.value)


@pytest.mark.parametrize(("line", "words"), [
    ("=s3cr3t", "no variable name"),
    ("my s3cr3t=x", "a blank before the ="),
    ("K=s3cr3t\udcff", "not UTF-8, which docker run refuses too"),
])
def test_what_docker_run_refuses_is_refused_naming_the_line(tmp_path, line, words):
    path = tmp_path / "one.env"
    path.write_bytes(f"{line}\n".encode(errors="surrogateescape"))
    with pytest.raises(migrate.MigrationError) as raised:
        migrate.read_env_file(path, "docker", {})
    assert re.match(rf"{re.escape(str(path))}(:1)?: {re.escape(words)}", str(raised.value))
    assert "s3cr3t" not in str(raised.value)


def test_a_warning_names_the_variable_never_its_value(tmp_path):
    path = tmp_path / "keys.env"
    path.write_text("SWIFTDROP_DEFAULT_KEY='s3cr3t # x'\nSWIFTDROP_DEFAULT_USER=u\n"
                    "SWIFTDROP_DEFAULT_AUTHURL=http://127.0.0.1/auth/v1.0\n"
                    "SWIFTDROP_DEFAULT_CONTAINER=mail\n")
    result = run_swiftdrop("import-env", "--env-file", str(path), "--dialect", "shell")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ("swiftdrop import-env: warning: SWIFTDROP_DEFAULT_KEY: docker run "
                             "--env-file would read another value (or none); taken as a "
                             "shell reads it\n")
    assert 'key = "s3cr3t # x"' in result.stdout


def test_a_file_that_reads_the_same_both_ways_needs_no_dialect(tmp_path):
    path = tmp_path / "plain.env"
    path.write_text("# plain\nSWIFTDROP_DEFAULT_KEY=k3y\nSWIFTDROP_DEFAULT_USER=u\n"
                    "SWIFTDROP_DEFAULT_AUTHURL=http://127.0.0.1/auth/v1.0\n"
                    "SWIFTDROP_DEFAULT_CONTAINER=mail\n")
    result = run_swiftdrop("import-env", "--env-file", str(path))
    assert (result.returncode, result.stderr) == (0, "")
    assert "key = k3y\n" in result.stdout


def test_blanks_the_ini_would_lose_are_warned_of_and_a_secret_keeps_them(tmp_path):
    path = tmp_path / "blank.env"
    path.write_text("SWIFTDROP_DEFAULT_USER=u \nSWIFTDROP_DEFAULT_KEY=k3y \n")
    assert sorted(migrate.read_env_file(path, "docker", {})[1]) == [
        "SWIFTDROP_DEFAULT_KEY: a shell would read another value (or none); "
        "taken as docker run --env-file reads it",
        "SWIFTDROP_DEFAULT_USER: a shell would read another value (or none); "
        "taken as docker run --env-file reads it",
        "SWIFTDROP_DEFAULT_USER: begins or ends with blanks, which the ini loses: swiftdrop "
        "strips every value it reads but a secret's"]


def test_a_dialect_without_a_file_is_a_usage_error():
    result = run_swiftdrop("import-env", "--dialect", "shell")
    assert result.returncode == 64
    assert "--dialect says how to read --env-file's FILE" in result.stderr


def test_quotes_docker_run_kept_are_named_when_they_spoil_myrecipients(env_file):
    result = run_swiftdrop("import-env", "--env-file", str(env_file), "--dialect", "docker",
                           "--format", "ansible")
    assert result.returncode == 78
    assert ("MYRECIPIENTS: not a JSON list (in quotes, which docker run --env-file keeps: if "
            "the earlier SwiftDrop got it without them, its file was read as --dialect shell)"
            in result.stderr)


def test_a_webhook_cacert_path_is_not_passed_off_as_the_pem_the_role_wants():
    with pytest.raises(migrate.MigrationError,
                       match="SWIFTDROP_P_WEBHOOK_CACERT: the role takes the receiver's CA as PEM"):
        migrate.to_ansible({"SWIFTDROP_DEFAULT_CONTAINER": "c",
                            "SWIFTDROP_P_WEBHOOK_CACERT": "/etc/ssl/hook.pem"})
