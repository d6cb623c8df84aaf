"""Site parameter sets: load YAML safely and validate it into typed objects.

A params file describes one site: its name, the management network, how to reach the
hosts over SSH, and the inventory. Validation is strict on purpose: an unknown key is an
error (a typo must never fall back silently to a default), every error names the file,
the key and what was expected, and nothing is ever sent to a host before the whole file
has been validated.

Secrets are never parameters: papermill writes every parameter into the archived
notebook. Credentials come from ``clouds.yaml``, the SSH agent or a key *file*, or from an
environment variable whose *name* the params file gives (keys ending in ``_env``).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from .errors import ParamsError

#: Keys of a site params file, which are also the notebook parameters that carry the site.
SITE_KEYS = ("site", "management_cidr", "ssh", "hosts", "cloud", "clouds_yaml", "archive_dir", "allow_scheduled_apply")
ROLES = ("controller", "compute")

_SITE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
_ENVVAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_CLOUD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Key names that hold secrets. A key ending in `_env` names an environment variable and
# is allowed; `key_file` is a path to a key, not the key.
_SECRET_KEY_RE = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|private[_-]?key|api[_-]?key|credential|"
    r"auth[_-]?key|^key$)",
    re.IGNORECASE,
)
_SECRET_VALUE_RE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\bgAAAAA[A-Za-z0-9_-]{40,}")
_MAX_TIMEOUT = 86400.0


@dataclass(frozen=True)
class SSHSettings:
    """How to reach the site's hosts over SSH (defaults for every host)."""

    user: str = "root"
    port: int = 22
    key_file: Path | None = None
    known_hosts: Path | None = None
    key_passphrase_env: str | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 60.0


@dataclass(frozen=True)
class Host:
    """One node of the inventory."""

    name: str
    role: str
    address: str
    user: str
    port: int
    key_file: Path | None
    management_address: str

    @property
    def is_compute(self) -> bool:
        """Whether this host runs nova-compute."""
        return self.role == "compute"


@dataclass(frozen=True)
class Site:
    """A validated site parameter set."""

    name: str
    management_cidr: ipaddress.IPv4Network | ipaddress.IPv6Network
    ssh: SSHSettings
    hosts: tuple[Host, ...]
    cloud: str | None = None
    clouds_yaml: Path | None = None
    archive_dir: Path | None = None
    allow_scheduled_apply: bool = False
    source: str = field(default="<parameters>", compare=False)

    @property
    def names(self) -> list[str]:
        """Host names in inventory order."""
        return [h.name for h in self.hosts]

    @property
    def computes(self) -> list[Host]:
        """The compute hosts, in inventory order."""
        return [h for h in self.hosts if h.role == "compute"]

    def host(self, name: str) -> Host:
        """The host called ``name``; :class:`ParamsError` when there is none."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise ParamsError(
            f"no host named '{name}' in the inventory (hosts: {', '.join(self.names)})",
            source=self.source,
        )

    def select(self, names: Iterable[str] | None, key: str = "limit") -> list[Host]:
        """Hosts named in ``names`` (all of them when empty), validated against the inventory."""
        names = list(names or [])
        check_host_names(self, names, key)
        return [h for h in self.hosts if not names or h.name in names]

    def as_parameters(self) -> dict[str, Any]:
        """The site as plain notebook parameters (secret-free by construction)."""
        ssh = {
            "user": self.ssh.user,
            "port": self.ssh.port,
            "key_file": str(self.ssh.key_file) if self.ssh.key_file else None,
            "known_hosts": str(self.ssh.known_hosts) if self.ssh.known_hosts else None,
            "key_passphrase_env": self.ssh.key_passphrase_env,
            "connect_timeout": self.ssh.connect_timeout,
            "command_timeout": self.ssh.command_timeout,
        }
        hosts = []
        for h in self.hosts:
            entry: dict[str, Any] = {"name": h.name, "role": h.role, "address": h.address}
            if h.user != self.ssh.user:
                entry["user"] = h.user
            if h.port != self.ssh.port:
                entry["port"] = h.port
            if h.key_file != self.ssh.key_file:
                entry["key_file"] = str(h.key_file) if h.key_file else None
            if h.management_address != h.address:
                entry["management_address"] = h.management_address
            hosts.append(entry)
        return {
            "site": self.name,
            "management_cidr": str(self.management_cidr),
            "ssh": {k: v for k, v in ssh.items() if v is not None},
            "hosts": hosts,
            "cloud": self.cloud,
            "clouds_yaml": str(self.clouds_yaml) if self.clouds_yaml else None,
            "archive_dir": str(self.archive_dir) if self.archive_dir else None,
        }


# ---------------------------------------------------------------------------- loading


class _StrictLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (the last would win silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(path: str | os.PathLike[str]) -> Site:
    """Load and validate a site params file.

    Raises
    ------
    ParamsError
        The file is missing, is not YAML, or does not describe a valid site.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamsError(f"cannot read the params file: {exc.strerror}", source=source) from exc
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ParamsError(f"not valid YAML: {exc}", source=source) from exc
    if not isinstance(data, Mapping):
        raise ParamsError(
            "expected a mapping of site keys (site, management_cidr, ssh, hosts)", source=source
        )
    return from_mapping(data, source=source)


def from_namespace(namespace: Mapping[str, Any]) -> Site:
    """Build the site from a notebook's parameters.

    Used by the notebooks' first cell: the site keys arrive as parameters (``papermill
    -f params/site.yaml`` or ``runbook run``), or ``params_file`` names a file to load.
    """
    params_file = namespace.get("params_file") or ""
    if params_file and not namespace.get("hosts"):
        return load(params_file)
    if not namespace.get("hosts"):
        raise ParamsError(
            "no site given: pass a params file (runbook run PHASE -p params/SITE.yaml, or "
            "papermill ... -f params/SITE.yaml), or set the params_file parameter",
            source="notebook parameters",
        )
    data = {k: namespace[k] for k in SITE_KEYS if k in namespace}
    data = {k: v for k, v in data.items() if v not in (None, "") or k in ("site", "hosts")}
    return from_mapping(data, source=str(params_file) or "notebook parameters")


def from_mapping(data: Mapping[str, Any], source: str = "<parameters>") -> Site:
    """Validate an already-parsed mapping into a :class:`Site`."""
    v = _Validator(source)
    v.no_secrets(data, "")
    v.known_keys(data, SITE_KEYS, "", required=("site", "management_cidr", "hosts"))
    name = v.pattern(data["site"], "site", _SITE_RE, "a site name: lower-case letters, digits, '-' or '_'")
    cidr = v.network(data["management_cidr"], "management_cidr")
    ssh = v.ssh(data.get("ssh") or {}, "ssh")
    hosts = v.hosts(data["hosts"], "hosts", ssh, cidr)
    cloud = data.get("cloud")
    if cloud is not None:
        cloud = v.pattern(cloud, "cloud", _CLOUD_RE, "the name of a cloud in clouds.yaml")
    archive_dir = data.get("archive_dir")
    if archive_dir is not None:
        archive_dir = v.path(archive_dir, "archive_dir")
    clouds_yaml = data.get("clouds_yaml")
    if clouds_yaml is not None:
        clouds_yaml = v.path(clouds_yaml, "clouds_yaml")
    allow = data.get("allow_scheduled_apply", False)
    if not isinstance(allow, bool):
        raise ParamsError(f"expected true or false, got {_show(allow)}", source=source, key="allow_scheduled_apply")
    return Site(
        allow_scheduled_apply=allow,
        name=name,
        management_cidr=cidr,
        ssh=ssh,
        hosts=hosts,
        cloud=cloud,
        clouds_yaml=clouds_yaml,
        archive_dir=archive_dir,
        source=source,
    )


def check_host_names(site: Site, names: Iterable[str] | str | None, key: str) -> None:
    """Raise :class:`ParamsError` unless every name in ``names`` is an inventory host."""
    if names is None or names == "":
        return
    if isinstance(names, str):
        names = [names]
    known = set(site.names)
    for n in names:
        if not isinstance(n, str) or n not in known:
            raise ParamsError(
                f"unknown host {n!r}: expected one of {', '.join(site.names)}",
                source=site.source,
                key=key,
            )


def find_secrets(data: Any, path: str = "") -> list[str]:
    """Key paths in ``data`` that look like they hold a secret (see module docstring)."""
    found: list[str] = []
    if isinstance(data, Mapping):
        for k, val in data.items():
            kp = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and not k.endswith("_env") and k not in ("key_file", "known_hosts"):
                if _SECRET_KEY_RE.search(k):
                    found.append(kp)
                    continue
            found.extend(find_secrets(val, kp))
    elif isinstance(data, (list, tuple)):
        for i, item in enumerate(data):
            found.extend(find_secrets(item, f"{path}[{i}]"))
    elif isinstance(data, str) and _SECRET_VALUE_RE.search(data):
        found.append(path or "<value>")
    return found


SECRET_ADVICE = (
    "Secrets are never parameters, because every parameter is written into the archived "
    "notebook. Put cloud credentials in clouds.yaml (name the cloud with 'cloud:'), use the "
    "SSH agent or a key file ('ssh.key_file:' is a path), or put the secret in an environment "
    "variable and give its name (for example 'ssh.key_passphrase_env: RUNBOOK_SSH_PASSPHRASE')."
)


class _Validator:
    """Field validators that raise :class:`ParamsError` naming the file and key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, message: str) -> ParamsError:
        return ParamsError(message, source=self.source, key=key)

    def no_secrets(self, data: Any, path: str) -> None:
        found = find_secrets(data, path)
        if found:
            raise self.fail(found[0], "looks like a secret. " + SECRET_ADVICE)

    def known_keys(
        self, data: Any, allowed: Iterable[str], path: str, required: Iterable[str] = ()
    ) -> None:
        allowed = tuple(allowed)
        if not isinstance(data, Mapping):
            raise self.fail(path or "<top>", f"expected a mapping, got {_kind(data)}")
        for k in data:
            if k not in allowed:
                hint = _close_match(str(k), allowed)
                raise self.fail(
                    _join(path, k),
                    f"unknown key{hint}; allowed keys here: {', '.join(allowed)}",
                )
        for k in required:
            if k not in data or data[k] is None:
                raise self.fail(_join(path, k), "is required")

    def pattern(self, value: Any, key: str, regex: re.Pattern[str], what: str) -> str:
        if not isinstance(value, str) or not regex.match(value):
            raise self.fail(key, f"expected {what}, got {_show(value)}")
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise self.fail(key, f"expected a whole number from {lo} to {hi}, got {_show(value)}")
        return value

    def seconds(self, value: Any, key: str) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not 0 < value <= _MAX_TIMEOUT
            or value != value
        ):
            raise self.fail(key, f"expected seconds, a number above 0 and at most {_MAX_TIMEOUT:.0f}, got {_show(value)}")
        return float(value)

    def path(self, value: Any, key: str) -> Path:
        if not isinstance(value, str) or not value.strip() or any(c in value for c in "\n\r\0"):
            raise self.fail(key, f"expected a file system path, got {_show(value)}")
        if len(value) > 4096:
            raise self.fail(key, "expected a file system path, got a string over 4096 characters")
        return Path(value).expanduser()

    def network(self, value: Any, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        try:
            if not isinstance(value, str):
                raise ValueError
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise self.fail(key, f"expected a network in CIDR form like 198.18.0.0/24, got {_show(value)}") from None

    def address(self, value: Any, key: str) -> str:
        try:
            if not isinstance(value, str):
                raise ValueError
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise self.fail(key, f"expected an IP address like 198.18.0.11, got {_show(value)}") from None

    def ssh(self, data: Any, key: str) -> SSHSettings:
        fields = ("user", "port", "key_file", "known_hosts", "key_passphrase_env", "connect_timeout", "command_timeout")
        self.known_keys(data, fields, key)
        d = SSHSettings()
        return SSHSettings(
            user=self.pattern(data.get("user", d.user), f"{key}.user", _USER_RE, "a user name"),
            port=self.integer(data.get("port", d.port), f"{key}.port", 1, 65535),
            key_file=self.path(data["key_file"], f"{key}.key_file") if data.get("key_file") is not None else None,
            known_hosts=self.path(data["known_hosts"], f"{key}.known_hosts") if data.get("known_hosts") is not None else None,
            key_passphrase_env=(
                self.pattern(data["key_passphrase_env"], f"{key}.key_passphrase_env", _ENVVAR_RE, "an environment variable name")
                if data.get("key_passphrase_env") is not None
                else None
            ),
            connect_timeout=self.seconds(data.get("connect_timeout", d.connect_timeout), f"{key}.connect_timeout"),
            command_timeout=self.seconds(data.get("command_timeout", d.command_timeout), f"{key}.command_timeout"),
        )

    def hosts(self, data: Any, key: str, ssh: SSHSettings, cidr: Any) -> tuple[Host, ...]:
        if not isinstance(data, list):
            raise self.fail(key, f"expected a list of hosts, got {_show(data)}")
        if not data:
            raise self.fail(key, "the inventory is empty: list at least one host")
        hosts: list[Host] = []
        names: dict[str, str] = {}
        endpoints: dict[tuple[str, int], str] = {}
        fields = ("name", "role", "address", "user", "port", "key_file", "management_address")
        for i, item in enumerate(data):
            k = f"{key}[{i}]"
            self.known_keys(item, fields, k, required=("name", "role", "address"))
            name = self.pattern(item["name"], f"{k}.name", _HOST_RE, "a host name (letters, digits, '-')")
            if name.lower() in names:
                raise self.fail(f"{k}.name", f"duplicate host name '{name}' (also {names[name.lower()]})")
            names[name.lower()] = f"{k}.name"
            role = item["role"]
            if role not in ROLES:
                raise self.fail(f"{k}.role", f"expected one of {', '.join(ROLES)}, got {_show(role)}")
            address = self.address(item["address"], f"{k}.address")
            mgmt = address
            if item.get("management_address") is not None:
                mgmt = self.address(item["management_address"], f"{k}.management_address")
            if ipaddress.ip_address(mgmt) not in cidr:
                which = "management_address" if item.get("management_address") is not None else "address"
                raise self.fail(
                    f"{k}.{which}",
                    f"{mgmt} is outside management_cidr {cidr}; give the host's address on the "
                    "management network (set management_address when SSH uses another network)",
                )
            port = self.integer(item.get("port", ssh.port), f"{k}.port", 1, 65535)
            if (address, port) in endpoints:
                raise self.fail(f"{k}.address", f"{address}:{port} is also {endpoints[(address, port)]}")
            endpoints[(address, port)] = f"{k}.address"
            hosts.append(
                Host(
                    name=name,
                    role=role,
                    address=address,
                    user=self.pattern(item.get("user", ssh.user), f"{k}.user", _USER_RE, "a user name"),
                    port=port,
                    key_file=self.path(item["key_file"], f"{k}.key_file") if item.get("key_file") is not None else ssh.key_file,
                    management_address=mgmt,
                )
            )
        return tuple(hosts)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _close_match(key: str, allowed: Iterable[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key, list(allowed), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""
