"""The earlier SwiftDrop's env file, through import-env and the role, to the same ini.

One env file, in each dialect, becomes the ini confd would have written
(``--format ini``) and group_vars with a Vault part (``--format ansible``);
a real ansible-playbook run renders the role's swiftdrop.ini from the
latter (tests/support/role.py). Both inis must load to the same
destinations: accounts, containers, routes and webhooks, with passwords
that Jinja would read as templates or that need quoting kept as they are.
"""

import textwrap

import pytest

from swiftdrop import config as config_module
from tests.support.filterproc import run_swiftdrop
from tests.support.role import ROLE, run_role
from tests.test_migrate import ansible_documents, assert_valid_role_variables

# What the old containers were given; each exercises a way a value can change on its way.
PASSWORDS = {
    "DEFAULT_KEY": "p{{ x }} #1, \"q'=",     # Jinja, comment, comma, both quotes, =
    "BILLING_KEY": "{% if y %}a=b, c{% endif %}",
    "APPCRED_OS_OPTIONS_APPLICATION_CREDENTIAL_SECRET": "s e\"c#{# r #}",
    "PRODUCTION_WEBHOOK_SECRET": "w{{h}}k's",
    "PRODUCTION_WEBHOOK_TEMPURL_KEY": "t=u,r l",
}
SETTINGS = {
    "DEFAULT_RECIPIENT": "DEFAULT",
    "DEFAULT_CONTAINER": "fallback",
    "DEFAULT_AUTH_VERSION": "3",
    "DEFAULT_AUTHURL": "https://keystone.example.test/v3",
    "DEFAULT_USER": "myuser",
    "DEFAULT_OS_OPTIONS_PROJECT_NAME": "project",
    "DEFAULT_OS_OPTIONS_PROJECT_DOMAIN_NAME": "project_domain",
    "DEFAULT_OS_OPTIONS_USER_DOMAIN_NAME": "user_domain",
    "DEFAULT_REJECT_VERDICTS": "spam-reject, dkim-fail",
    "PRODUCTION_RECIPIENT": "swiftdrop@example.com",
    "PRODUCTION_CONTAINER": "production",
    "PRODUCTION_WEBHOOK_URL": "https://hooks.example.test/mail",
    "BILLING_RECIPIENT": "bills@example.com, pay@example.com",
    "BILLING_CONTAINER": "bills {{ not a template }}",
    "BILLING_AUTH_VERSION": "2",
    "BILLING_AUTHURL": "https://keystone.example.test/v2.0",
    "BILLING_USER": "billing",
    "BILLING_TENANT_NAME": "finance",
    "BILLING_OS_OPTIONS_PROJECT_NAME": "",  # the blank that un-inherits DEFAULT's project
    "APPCRED_RECIPIENT": "robot@example.com",
    "APPCRED_CONTAINER": "robots",
    "APPCRED_OS_OPTIONS_AUTH_TYPE": "v3applicationcredential",
    "APPCRED_OS_OPTIONS_APPLICATION_CREDENTIAL_ID": "0123abcd",
}
EARLIER_HOST = "MYHOSTNAME=swiftdrop.example.com\nRELAY_DOMAINS=example.com\n"


def docker_env_file(values):
    """As docker run --env-file was given it: every value written as it is."""
    return EARLIER_HOST + "".join(f"SWIFTDROP_{name}={value}\n" for name, value in values.items())


def shell_env_file(values):
    """As a sourced file gave it: single-quoted, a ' written '\\''."""
    return EARLIER_HOST + "".join(
        "export SWIFTDROP_{}='{}'  # comment\n".format(name, value.replace("'", "'\\''"))
        for name, value in values.items())


@pytest.mark.parametrize(("dialect", "write"), [
    ("docker", docker_env_file), ("shell", shell_env_file)])
def test_the_role_renders_the_ini_confd_would_have_written(tmp_path, dialect, write):
    env_file = tmp_path / "swiftdrop.env"
    env_file.write_text(write({**SETTINGS, **PASSWORDS}))
    confd_ini = tmp_path / "confd.ini"
    confd_ini.write_text(import_env(env_file, dialect, "ini"))
    group_vars, vault = import_env(env_file, dialect, "ansible").split("\n---\n")
    (tmp_path / "group_vars.yml").write_text(group_vars)
    (tmp_path / "vault.yml").write_text(vault)
    assert_valid_role_variables(ansible_documents(group_vars)[0])

    expected = config_module.load(str(confd_ini))
    from_role = config_module.load(str(rendered_by_the_role(tmp_path)))

    assert from_role.destinations == expected.destinations
    sections = {destination.section: destination for destination in expected.destinations}
    assert sections["DEFAULT"].account.key == PASSWORDS["DEFAULT_KEY"]
    assert sections["BILLING"].account.key == PASSWORDS["BILLING_KEY"]
    assert sections["BILLING"].container == SETTINGS["BILLING_CONTAINER"]
    assert (sections["BILLING"].account.tenant_name, sections["BILLING"].account.auth_version,
            sections["BILLING"].recipients) == ("finance", "2.0",
                                                ("bills@example.com", "pay@example.com"))
    assert "project_name" not in dict(sections["BILLING"].account.os_options)
    assert dict(sections["APPCRED"].account.os_options)["application_credential_secret"] == (
        PASSWORDS["APPCRED_OS_OPTIONS_APPLICATION_CREDENTIAL_SECRET"])
    assert sections["PRODUCTION"].account == sections["DEFAULT"].account  # inherited
    assert sections["PRODUCTION"].reject_verdicts == ("spam-reject", "dkim-fail")
    assert (sections["PRODUCTION"].webhook.secret,
            sections["PRODUCTION"].webhook.tempurl_key) == (
        PASSWORDS["PRODUCTION_WEBHOOK_SECRET"], PASSWORDS["PRODUCTION_WEBHOOK_TEMPURL_KEY"])


def import_env(env_file, dialect, output_format):
    result = run_swiftdrop("import-env", "--env-file", str(env_file), "--dialect", dialect,
                           "--format", output_format)
    assert result.returncode == 0, result.stderr
    return result.stdout


def rendered_by_the_role(directory):
    """templates/swiftdrop.ini.j2 rendered with the group_vars and vault files as they are.

    They are read by Ansible's own loader (include_vars, where !unsafe works
    as in group_vars/); the helper's default destinations are extra vars,
    which outrank everything, so swiftdrop_destinations is pointed at ours.
    """
    ok, output = run_role(directory, textwrap.dedent(f"""\
        - ansible.builtin.include_vars:
            file: {directory}/group_vars.yml
            name: imported
        - ansible.builtin.include_vars: {directory}/vault.yml
        - ansible.builtin.template:
            src: {ROLE}/templates/swiftdrop.ini.j2
            dest: {directory}/role.ini
            mode: "0600"
        """), swiftdrop_destinations="{{ imported.swiftdrop_destinations }}")
    assert ok, output
    return directory / "role.ini"
