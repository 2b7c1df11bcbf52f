"""Running pieces of the role with Ansible itself on the controller, for tests.

A play on localhost (connection local) loads the role's defaults and vars
as the role does, then runs the given tasks: validate.yml's checks, a
template into the test's directory. Nothing on this machine is changed.
"""

import json
import pathlib
import subprocess
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]
ROLE = REPO / "roles/swiftdrop"
# What every run needs besides the defaults: an MX with one destination.
VARIABLES = {
    "ansible_python_interpreter": str(REPO / ".venv-ansible/bin/python"),
    "swiftdrop_myhostname": "mx.example.test",
    "swiftdrop_relay_domains": ["example.com"],
    "swiftdrop_destinations": [{"name": "DEFAULT", "container": "mail", "user": "u",
                                "key": "k", "authurl": "https://swift.example.test/auth/v1.0"}],
}


def run_role(directory, tasks, *, check=False, **variables):
    """Run `tasks` (YAML) with the role's defaults and vars; (succeeded, output on one line)."""
    playbook = directory / "play.yml"
    playbook.write_text(textwrap.dedent(f"""\
        - hosts: localhost
          gather_facts: false
          tasks:
            - ansible.builtin.include_vars: {ROLE}/defaults/main.yml
            - ansible.builtin.include_vars: {ROLE}/vars/main.yml
        """) + textwrap.indent(textwrap.dedent(tasks), "    "))
    extra_vars = directory / "vars.json"
    extra_vars.write_text(json.dumps({**VARIABLES, **variables}))
    result = subprocess.run(
        [str(REPO / ".venv-ansible/bin/ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", f"@{extra_vars}", *(["--check"] if check else []), str(playbook)],
        capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "ANSIBLE_NOCOLOR": "1",
             "ANSIBLE_LOCALHOST_WARNING": "0"})
    output = " ".join((result.stdout + result.stderr).split())
    return result.returncode == 0, output


def validate(directory, **variables):
    """validate.yml's checks of these variables: (passed, output on one line)."""
    return run_role(directory, f"- ansible.builtin.import_tasks: {ROLE}/tasks/validate.yml\n",
                    **variables)


def rendered(directory, template, **variables):
    """The role's templates/TEMPLATE.j2 as Ansible renders it with these variables."""
    ok, output = run_role(directory, f"""\
        - ansible.builtin.template:
            src: {ROLE}/templates/{template}.j2
            dest: {directory}/{template}
            mode: "0644"
        """, **variables)
    assert ok, output
    return (directory / template).read_text()
