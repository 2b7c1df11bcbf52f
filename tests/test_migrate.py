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


@pytest.fixture
def env_file(tmp_path):
    path = tmp_path / "swiftdrop.env"
    path.write_text(EARLIER_EXAMPLE)
    return path


def test_the_earlier_example_becomes_the_ini_confd_meant(env_file, tmp_path):
    result = run_swiftdrop("import-env", "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
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


def test_the_earlier_example_becomes_group_vars_with_secrets_for_vault(env_file):
    result = run_swiftdrop("import-env", "--env-file", str(env_file), "--format", "ansible")
    assert result.returncode == 0, result.stderr
    group_vars, vault = yaml.safe_load_all(result.stdout)
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
