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
SECRETS = {option for option in OPTIONS if settings.setting_of(option).secret}
# What Jinja (so Ansible, on every variable it reads) takes as the start of a template.
TEMPLATE_MARKERS = ("{{", "{%", "{#")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BOOLEAN_KEYS = {s.name for s in settings.SETTINGS if s.kind == settings.BOOLEAN}
NUMBER_KEYS = {s.name for s in settings.SETTINGS if s.kind in (settings.NUMBER, settings.INTEGER)}


class MigrationError(Exception):
    """An environment that cannot be carried over as it is; says which variable."""


def read_env_file(path, dialect, environ):
    """(variables, warnings) of an env file read as `dialect` ("docker" or "shell") reads it.

    The two read quotes, escapes and comments differently, so the same file
    can give another password either way; nothing here guesses which way the
    earlier SwiftDrop's users passed theirs. Without a dialect the file must
    read the same both ways (DialectNeeded otherwise). Each warning names a
    variable the other dialect reads differently, never its value. A name
    without a value is taken from `environ`, as docker run and a shell's
    ``export NAME`` take it from theirs.
    """
    lines = _lines(path)
    if dialect is None:
        differing = _differing(*(_leniently(lines, name, environ) for name in DIALECTS))
        if differing:
            raise DialectNeeded(path, differing)
        dialect = "docker"
    variables, unset = _strictly(path, lines, dialect, environ)
    other = next(name for name in DIALECTS if name != dialect)
    warnings = [f"{name}: {DIALECTS[other]} would read another value (or none); "
                f"taken as {DIALECTS[dialect]} reads it"
                for name in _differing(variables, _leniently(lines, other, environ))]
    warnings += [f"{path}:{number}: {name} has no value and is not set in this environment: "
                 f"left out, as {DIALECTS[dialect]} leaves it out" for number, name in unset]
    warnings += [f"{name}: begins or ends with blanks, which the ini loses: swiftdrop strips "
                 "every value it reads but a secret's" for name, value in variables.items()
                 if name.startswith(PREFIX) and value != value.strip()
                 and not _is_secret(name)]
    return variables, warnings


class DialectNeeded(MigrationError):
    """An env file whose values depend on who reads it: the user must say who did."""

    def __init__(self, path, differing):
        super().__init__(
            f"{path} reads differently as docker run --env-file and as a shell reads it "
            f"({', '.join(differing)}): choose --dialect docker (each line taken literally, "
            "quotes and backslashes part of the value) or --dialect shell (quotes and "
            "escapes read as sh reads them, trailing comments dropped)")


def _lines(path):
    """The file's lines as Docker splits them: at newlines only, a UTF-8 BOM dropped."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as env_file:
            text = env_file.read()
    except UnicodeDecodeError as error:
        raise MigrationError(f"{path}: not UTF-8, which docker run refuses too: {error}") from None
    return text.removesuffix("\n").split("\n") if text else []


def _strictly(path, lines, dialect, environ):
    """{name: value}, and (line, name) of names given no value; a line it cannot read raises."""
    variables, unset = {}, []
    for number, line in enumerate(lines, 1):
        try:
            assignment = READERS[dialect](line, environ)
        except MigrationError as error:
            raise MigrationError(f"{path}:{number}: {error}") from None
        if assignment is None:
            continue
        name, value = assignment
        if value is None:
            shown = name if IDENTIFIER.fullmatch(name) else "the name on this line"
            unset.append((number, shown))
            variables.pop(name, None)
        else:
            variables[name] = value
    return variables, unset


def _leniently(lines, dialect, environ):
    """{name: value or None (unset)} for comparing; a line it cannot read gives UNREADABLE."""
    variables = {}
    for number, line in enumerate(lines, 1):
        try:
            assignment = READERS[dialect](line, environ)
        except MigrationError:
            words = line.split("=", 1)[0].split()
            assignment = (_shown(words[-1] if words else "", number), UNREADABLE)
        if assignment is not None:
            variables[assignment[0]] = assignment[1]
    return variables


def _shown(name, number):
    """A name fit for a message, or its line: a line that is no assignment may hold a secret."""
    return name if IDENTIFIER.fullmatch(name) else f"line {number}"


def _differing(first, second):
    """The names whose values (or presence) differ between two readings."""
    return sorted(name for name in first.keys() | second.keys()
                  if first.get(name) != second.get(name))


def _docker_assignment(line, environ):
    """One line as ``docker run --env-file`` reads it: (name, value), or None to skip.

    docker/cli pkg/kvfile: leading whitespace goes, then a line that is empty
    or starts with ``#`` is skipped; the rest up to the first ``=`` is the
    name (no blanks in it) and everything after it the value, untouched:
    quotes, backslashes, ``#`` and trailing blanks included. ``NAME`` alone
    takes NAME from the environment, or leaves it out if unset there.
    """
    text = line.removesuffix("\r").lstrip()
    if not text or text.startswith("#"):
        return None
    name, equals, value = text.partition("=")
    if not name:
        raise MigrationError("no variable name before the =")
    if re.search(r"[ \t]", name):
        raise MigrationError("a blank before the = (docker run refuses the file)")
    return (name, value) if equals else (name, environ.get(name))


def _shell_assignment(line, environ):
    """One line as ``set -a; . FILE`` would read it: (name, value), or None to skip.

    Only what needs no shell to evaluate: NAME=WORD with an optional
    ``export``; single quotes literal; double quotes where a backslash escapes
    only a backslash, double quote, dollar or backtick; outside quotes a
    backslash escaping the next character; a comment after a blank.
    Expansions, commands and anything else a shell would have to run raise
    MigrationError naming what, rather than a guess.
    """
    if line.endswith("\r"):
        raise MigrationError("a Windows line end: a shell keeps its CR as part of the line; "
                             "convert the file (dos2unix) or, if Docker read it, --dialect docker")
    text = line.lstrip(" \t")
    if not text or text.startswith("#"):
        return None
    exported = re.match(r"export[ \t]+", text)
    if exported:
        text = text[exported.end():]
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(=?)", text)
    if not match or not (match[2] or exported):
        raise MigrationError("not an assignment: a shell would run it as a command")
    if not match[2]:
        _only_a_comment(text[match.end():])
        return match[1], environ.get(match[1])
    value, rest = _shell_word(text[match.end():])
    _only_a_comment(rest)
    return match[1], value


def _only_a_comment(rest):
    if rest.strip(" \t") and not rest.lstrip(" \t").startswith("#"):
        raise MigrationError("more than one assignment or a command on the line; "
                             "a shell would have to run it")


def _shell_word(text):
    """The value of one unquoted-or-quoted shell word at the start of `text`, and the rest."""
    value, index = [], 0
    while index < len(text) and text[index] not in " \t":
        char = text[index]
        if char == "'":
            end = text.find("'", index + 1)
            if end < 0:
                raise MigrationError("a single quote not closed on its line")
            value.append(text[index + 1:end])
            index = end + 1
        elif char == '"':
            chunk, index = _double_quoted(text, index + 1)
            value.append(chunk)
        elif char == "\\":
            if index + 1 == len(text):
                raise MigrationError("a backslash continues the line; join the lines")
            value.append(text[index + 1])
            index += 2
        else:
            _refuse_expansion(text, index, unquoted=True)
            value.append(char)
            index += 1
    return "".join(value), text[index:]


def _double_quoted(text, index):
    """The inside of a double-quoted part starting at `index`, and the index after it."""
    chunk = []
    while index < len(text):
        char = text[index]
        if char == '"':
            return "".join(chunk), index + 1
        if char == "\\" and text[index + 1:index + 2] in ("$", "`", '"', "\\"):
            chunk.append(text[index + 1])
            index += 2
            continue
        if char == "\\" and index + 1 == len(text):
            raise MigrationError("a backslash continues the line; join the lines")
        _refuse_expansion(text, index, unquoted=False)
        chunk.append(char)
        index += 1
    raise MigrationError("a double quote not closed on its line")


def _refuse_expansion(text, index, *, unquoted):
    """$ (but a last one), ` and, outside quotes, operators and ~: a shell's to evaluate."""
    char, following = text[index], text[index + 1:index + 2]
    # A $ before a blank, the end or (inside double quotes) the closing quote is itself.
    literal = following in ("", " ", "\t") or (following == '"' and not unquoted)
    if char == "$" and not literal:
        raise MigrationError("$ expansion needs a shell; quote it with '...' or \\$")
    if char == "`":
        raise MigrationError("command substitution needs a shell")
    if unquoted and char in ";&|<>()":
        raise MigrationError(f"{char!r} is shell syntax; quote the value")
    if unquoted and char == "~" and (index == 0 or text[index - 1] == ":"):
        raise MigrationError("~ would be expanded to a home directory; quote it")


DIALECTS = {"docker": "docker run --env-file", "shell": "a shell"}
READERS = {"docker": _docker_assignment, "shell": _shell_assignment}
UNREADABLE = object()  # what a dialect makes of a line it cannot read, for comparing


def _option_of(name):
    """The ini key a SWIFTDROP_<SECTION>_<OPTION> variable ends in (None: no known one)."""
    rest = name[len(PREFIX):].lower()
    return next((option for option in OPTIONS if rest.endswith("_" + option)), None)


def _is_secret(name):
    option = _option_of(name)
    return option is not None and settings.setting_of(option).secret


def sections_of(variables):
    """{SECTION: {option: value}} from the SWIFTDROP_* variables, DEFAULT first."""
    sections = {}
    for name, value in variables.items():
        if not name.startswith(PREFIX):
            continue
        option = _option_of(name)
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
    if settings.setting_of(option).kind == settings.LIST:  # one value per item in the ini
        items = [item.strip() for item in value.split(",") if item.strip()]
        return ", ".join(_ini_value(item) for item in items) or '""'
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
    """group_vars for roles/swiftdrop, then the Vault file with the secrets.

    What came from the environment reaches Ansible as data, never as a
    template: every secret and any value with Jinja's ``{{``, ``{%`` or
    ``{#`` is tagged ``!unsafe``, so a password like ``a{{b}}`` is written
    into the ini as it is instead of failing or being evaluated.
    """
    group_vars, vault = {}, {}
    if variables.get("MYHOSTNAME"):
        group_vars["swiftdrop_myhostname"] = _literal(variables["MYHOSTNAME"])
    group_vars["swiftdrop_relay_domains"] = _listed(variables.get("RELAY_DOMAINS", ""))
    if variables.get("MYRECIPIENTS"):
        group_vars["swiftdrop_recipients"] = [_literal(r) for r in _json_list(variables)]
    destinations = [_destination(section, options, vault)
                    for section, options in sections_of(variables).items()]
    group_vars["swiftdrop_destinations"] = destinations
    # The role accepts a destination's recipients by itself; MYRECIPIENTS
    # listed them too because Postfix needed every address there.
    routed = {r.casefold() for destination in destinations
              for r in destination.get("recipients", ())}
    if "swiftdrop_recipients" in group_vars:
        group_vars["swiftdrop_recipients"] = [
            r for r in group_vars["swiftdrop_recipients"] if r.casefold() not in routed]
    return ("---\n# group_vars for roles/swiftdrop, converted by swiftdrop import-env.\n"
            + _yaml(group_vars)
            + "\n---\n# vault.yml: the secrets above; `ansible-vault encrypt` this file.\n"
            + (_yaml(vault) if vault else "{}\n"))


def _json_list(variables):
    try:
        recipients = json.loads(variables["MYRECIPIENTS"])
    except ValueError as error:
        quoted = re.fullmatch(r"(['\"]).*\1", variables["MYRECIPIENTS"], re.S)
        hint = (" (in quotes, which docker run --env-file keeps: if the earlier SwiftDrop "
                "got it without them, its file was read as --dialect shell)" if quoted else "")
        raise MigrationError(f"MYRECIPIENTS: not a JSON list{hint}: {error}") from None
    if not isinstance(recipients, list):
        raise MigrationError("MYRECIPIENTS: not a JSON list")
    return [str(recipient) for recipient in recipients]


def _destination(section, options, vault):
    """One entry of swiftdrop_destinations; its secrets go to `vault`, referenced by name.

    Where each key goes and what type it takes is the settings table's
    (``role``: ``webhook.secret`` is the secret of the entry's ``webhook``).
    """
    destination = {"name": section}
    for option, given in options.items():
        setting = settings.setting_of(option)
        if option == "recipient" and section == config_module.CATCH_ALL:
            continue  # the catch-all takes what no section routes; the role says so itself
        if option == "webhook_cacert":
            raise MigrationError(f"{PREFIX}{section}_WEBHOOK_CACERT: the role takes the "
                                 "receiver's CA as PEM text (webhook.cacert), not a path; "
                                 "leave it out here and put the file's content there")
        if setting.secret and given:
            vault_name = f"vault_swiftdrop_{section.lower()}_{option}"
            vault[vault_name] = Literal(given)
            value = "{{ " + vault_name + " }}"
        elif setting.kind == settings.LIST:
            value = _listed(given)
        else:
            value = _typed(option, _literal(given))
        group, _, key = setting.role.rpartition(".")
        (destination.setdefault(group, {}) if group else destination)[key] = value
    return destination


def _listed(value):
    """A comma-separated value as the role's list, each item data for Ansible."""
    return [_literal(item.strip()) for item in value.split(",") if item.strip()]


class Literal(str):
    """A value Ansible must take as it is: written with the YAML tag ``!unsafe``."""


def _literal(value):
    """`value` as a Literal if Ansible would otherwise read a template in it."""
    return Literal(value) if any(marker in value for marker in TEMPLATE_MARKERS) else value


def _typed(option, value):
    """Role variables are typed (meta/argument_specs.yml); a blank stays a blank."""
    if value == "" or isinstance(value, Literal):
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
    if isinstance(value, Literal):
        return "!unsafe " + json.dumps(value)
    return json.dumps(value)
