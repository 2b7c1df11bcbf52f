"""``swiftdrop import-env``: carry the Docker SwiftDrop's environment over.

The earlier, Docker-based SwiftDrop was configured by environment variables:
``SWIFTDROP_<SECTION>_<OPTION>`` became ``/etc/swiftdrop.ini`` through confd,
``MYHOSTNAME``, ``RELAY_DOMAINS`` and ``MYRECIPIENTS`` (a JSON list) became
Postfix's settings. This turns such an environment, or its env file, into
the ini as confd meant it, or into group_vars for the Ansible role, so that
nobody retypes keys by hand.

Sections may contain underscores and options do (``OS_OPTIONS_PROJECT_NAME``),
so a variable is split at the longest option name we know at its end; one
that ends in no known option is an error that names it, rather than a key
silently dropped.
"""

import json
import math
import re

from . import config as config_module
from . import settings

PREFIX = "SWIFTDROP_"
OPTIONS = sorted(
    {*config_module.LIST_KEYS, *config_module.SCALAR_KEYS,
     *(f"os_options_{name}" for name in config_module.OS_OPTIONS)},
    key=len, reverse=True)
# Values that go to the Vault file, not to the group_vars in the clear.
SECRETS = {"key", "os_options_application_credential_secret", "queue_redis_url"}
BOOLEAN_KEYS = {s.name for s in settings.SETTINGS if s.kind == settings.BOOLEAN}
NUMBER_KEYS = {s.name for s in settings.SETTINGS if s.kind in (settings.NUMBER, settings.INTEGER)}
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class MigrationError(Exception):
    """An environment that cannot be carried over as it is; says which variable."""


def read_env_file(path):
    """KEY=VALUE lines as Docker's --env-file and shell files write them.

    Comments and blank lines are skipped; a value in matching single or
    double quotes loses them. A line without ``=`` is not an assignment
    (the earlier README abbreviates with ``...``) and is left out.
    """
    variables = {}
    with open(path, encoding="utf-8") as env_file:
        for number, line in enumerate(env_file, 1):
            text = line.strip()
            if not text or text.startswith("#") or "=" not in text:
                continue
            name, _, value = text.partition("=")
            name = name.strip().removeprefix("export ").strip()
            if not NAME.match(name):
                raise MigrationError(f"{path}:{number}: {name!r} is not a variable name")
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            variables[name] = value
    return variables


def sections_of(variables):
    """{SECTION: {option: value}} from the SWIFTDROP_* variables, DEFAULT first."""
    sections = {}
    for name, value in variables.items():
        if not name.startswith(PREFIX):
            continue
        rest = name[len(PREFIX):].lower()
        option = next((o for o in OPTIONS if rest.endswith("_" + o)), None)
        if option is None:
            raise MigrationError(f"{name}: does not end in a known option "
                                 f"(e.g. _CONTAINER, _AUTHURL, _OS_OPTIONS_PROJECT_NAME)")
        section = name[len(PREFIX):len(name) - len(option) - 1]
        sections.setdefault(section, {})[option] = value
    if config_module.CATCH_ALL not in sections:
        raise MigrationError(f"no {PREFIX}{config_module.CATCH_ALL}_* variables: "
                             "the catch-all destination is required")
    return {config_module.CATCH_ALL: sections.pop(config_module.CATCH_ALL), **sections}


def to_ini(variables):
    """The /etc/swiftdrop.ini that confd would have written."""
    lines = ["# Converted by swiftdrop import-env from the Docker SwiftDrop's environment.",
             "# Holds keys: install it mode 0640, root:swiftdrop."]
    for section, options in sections_of(variables).items():
        lines += ["", f"[{section}]"]
        lines += [f"{option} = {_ini_entry(option, value)}" for option, value in options.items()]
    return "\n".join(lines) + "\n"


def _ini_entry(option, value):
    if option == "recipient":  # a list in the ini: one value per address
        addresses = [address.strip() for address in value.split(",") if address.strip()]
        return ", ".join(_ini_value(address) for address in addresses) or '""'
    return _ini_value(value)


def _ini_value(value):
    """configobj quoting, with whichever quote the value does not contain."""
    if value == "":
        return '""'
    if not re.search(r"[,#\"'\s]", value):
        return value
    if '"' not in value:
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return f'"""{value}"""'


def to_ansible(variables):
    """group_vars for roles/swiftdrop, then the Vault file with the secrets."""
    group_vars, vault = {}, {}
    if variables.get("MYHOSTNAME"):
        group_vars["swiftdrop_myhostname"] = variables["MYHOSTNAME"]
    group_vars["swiftdrop_relay_domains"] = [
        domain.strip() for domain in variables.get("RELAY_DOMAINS", "").split(",")
        if domain.strip()]
    if variables.get("MYRECIPIENTS"):
        try:
            recipients = json.loads(variables["MYRECIPIENTS"])
        except ValueError as error:
            raise MigrationError(f"MYRECIPIENTS: not a JSON list: {error}") from None
        if not isinstance(recipients, list):
            raise MigrationError("MYRECIPIENTS: not a JSON list")
        group_vars["swiftdrop_recipients"] = [str(recipient) for recipient in recipients]
    destinations = []
    routed = set()
    for section, options in sections_of(variables).items():
        destination = {"name": section}
        os_options = {}
        for option, given in options.items():
            value = given
            if option in SECRETS and given:
                vault_name = f"vault_swiftdrop_{section.lower()}_{option}"
                vault[vault_name] = given
                value = "{{ " + vault_name + " }}"
            if option == "recipient":
                if section != config_module.CATCH_ALL:
                    destination["recipients"] = [
                        r.strip() for r in value.split(",") if r.strip()]
                    routed.update(r.casefold() for r in destination["recipients"])
            elif option.startswith("os_options_"):
                os_options[option[len("os_options_"):]] = value
            else:
                destination[option] = _typed(option, value)
        if os_options:
            destination["os_options"] = os_options
        destinations.append(destination)
    group_vars["swiftdrop_destinations"] = destinations
    # The role accepts a destination's recipients by itself; MYRECIPIENTS
    # listed them too because Postfix needed every address there.
    if "swiftdrop_recipients" in group_vars:
        group_vars["swiftdrop_recipients"] = [
            r for r in group_vars["swiftdrop_recipients"] if r.casefold() not in routed]
    return ("---\n# group_vars for roles/swiftdrop, converted by swiftdrop import-env.\n"
            + _yaml(group_vars)
            + "\n---\n# vault.yml: the secrets above; `ansible-vault encrypt` this file.\n"
            + (_yaml(vault) if vault else "{}\n"))


def _typed(option, value):
    """Role variables are typed (meta/argument_specs.yml); a blank stays a blank."""
    if value == "":
        return value
    if option in BOOLEAN_KEYS:
        if value.lower() not in config_module.BOOLEANS:
            raise MigrationError(f"{option}: {value!r} is not a boolean")
        return config_module.BOOLEANS[value.lower()]
    if option in NUMBER_KEYS:
        try:
            number = float(value)
        except ValueError:
            raise MigrationError(f"{option}: {value!r} is not a number") from None
        if not math.isfinite(number):
            raise MigrationError(f"{option}: {value!r} is not a finite number")
        return int(number) if number.is_integer() else number
    return value


def _yaml(value, indent=0):
    """Block YAML for dicts, lists and scalars; strings as JSON, which YAML reads."""
    pad = " " * indent
    if isinstance(value, dict):
        out = ""
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out += f"{pad}{key}:\n{_yaml(item, indent + 2)}"
            else:
                out += f"{pad}{key}: {_scalar(item)}\n"
        return out
    out = ""
    for item in value:
        if isinstance(item, dict) and item:
            first, *rest = _yaml(item, indent + 2).splitlines(keepends=True)
            out += f"{pad}- {first.lstrip()}" + "".join(rest)
        else:
            out += f"{pad}- {_scalar(item)}\n"
    return out


def _scalar(value):
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    return json.dumps(value)
