"""Params: strict validation, errors that name the file and key, no secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runbook_lib import params
from runbook_lib.errors import ParamsError

ROOT = Path(__file__).resolve().parent.parent

GOOD = {
    "site": "s1",
    "management_cidr": "198.18.0.0/24",
    "ssh": {"user": "root", "port": 22, "key_file": "/k", "known_hosts": "/kh"},
    "hosts": [
        {"name": "controller", "role": "controller", "address": "198.18.0.10"},
        {"name": "compute1", "role": "compute", "address": "198.18.0.11"},
    ],
}


def write(tmp_path: Path, data, name="site.yaml") -> Path:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return p


def with_(path: str, value):
    """GOOD with one key (dotted path, [i] for list items) replaced; value DELETE removes it."""
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    cur = data
    parts = path.replace("[", ".").replace("]", "").split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if p.isdigit() else cur[p]
    last = parts[-1]
    if value == "DELETE":
        del cur[last]
    elif last.isdigit():
        cur[int(last)] = value
    else:
        cur[last] = value
    return data


def test_example_params_file_is_valid():
    site = params.load(ROOT / "params" / "example.yaml")
    assert site.name == "example"
    assert [h.role for h in site.hosts] == ["controller", "compute", "compute"]
    assert [h.name for h in site.computes] == ["compute1", "compute2"]


def test_good_file_round_trips_to_parameters(tmp_path):
    site = params.load(write(tmp_path, GOOD))
    again = params.from_mapping(site.as_parameters())
    assert again == site
    assert site.host("compute1").port == 22 and site.host("compute1").key_file == Path("/k")


@pytest.mark.parametrize(
    "path,value,key,words",
    [
        ("site", 3, "site", "expected a site name"),
        ("site", "Bad Site", "site", "expected a site name"),
        ("ssh.port", "22", "ssh.port", "whole number"),
        ("ssh.port", True, "ssh.port", "whole number"),
        ("ssh.port", 70000, "ssh.port", "whole number"),
        ("ssh.connect_timeout", -1, "ssh.connect_timeout", "above 0"),
        ("hosts[1].role", "storage", "hosts[1].role", "controller, compute"),
        ("hosts[1].address", "198.18.1.5", "hosts[1].address", "outside management_cidr"),
        ("hosts[1].address", "compute1; rm -rf /", "hosts[1].address", "IP address"),
        ("hosts[1].name", "c1$(reboot)", "hosts[1].name", "host name"),
        ("hosts[1].name", "controller", "hosts[1].name", "duplicate host name"),
        ("hosts[1].name", "a\nb", "hosts[1].name", "host name"),
        ("hosts[1].user", "root; id", "hosts[1].user", "user name"),
        ("ssh.key_file", "/k\nx", "ssh.key_file", "path"),
        ("hosts", [], "hosts", "inventory is empty"),
        ("hosts", "controller", "hosts", "list of hosts"),
        ("management_cidr", "198.18.0.0/33", "management_cidr", "CIDR"),
        ("hosts", "DELETE", "hosts", "is required"),
        ("site", "DELETE", "site", "is required"),
        ("hosts[0].address", "DELETE", "hosts[0].address", "is required"),
    ],
)
def test_invalid_values_name_file_key_and_expectation(tmp_path, path, value, key, words):
    f = write(tmp_path, with_(path, value))
    with pytest.raises(ParamsError) as err:
        params.load(f)
    msg = str(err.value)
    assert str(f) in msg and f"key '{key}'" in msg and words in msg, msg
    assert err.value.key == key


def test_unknown_key_is_an_error_with_a_suggestion(tmp_path):
    f = write(tmp_path, with_("ssh.conect_timeout", 5))
    with pytest.raises(ParamsError, match=r"key 'ssh.conect_timeout'.*unknown key \(did you mean 'connect_timeout'\?\)"):
        params.load(f)
    f = write(tmp_path, with_("hosts[0].adress", "198.18.0.9"))
    with pytest.raises(ParamsError, match=r"hosts\[0\].adress.*did you mean 'address'"):
        params.load(f)


@pytest.mark.parametrize(
    "path,value",
    [
        ("ssh.password", "hunter2"),
        ("ssh.key_passphrase", "s3cr3t-pass"),
        ("os_token", "gAAAAAB"),
        ("hosts[0].api_key", "AKIAEXAMPLE123"),
        ("ssh.key_file", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----"),
    ],
)
def test_secret_looking_keys_and_values_are_refused_with_advice(tmp_path, path, value):
    f = write(tmp_path, with_(path, value))
    with pytest.raises(ParamsError) as err:
        params.load(f)
    msg = str(err.value)
    assert "looks like a secret" in msg and "clouds.yaml" in msg and "environment" in msg
    assert value not in msg  # the secret itself is never echoed


def test_env_var_names_are_allowed_for_secrets(tmp_path):
    site = params.load(write(tmp_path, with_("ssh.key_passphrase_env", "MY_PASSPHRASE")))
    assert site.ssh.key_passphrase_env == "MY_PASSPHRASE"


def test_yaml_errors_and_duplicate_keys(tmp_path):
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(write(tmp_path, "site: [unclosed\n"))
    with pytest.raises(ParamsError, match="duplicate key 'site'"):
        params.load(write(tmp_path, "site: a\nsite: b\nmanagement_cidr: 1.2.3.0/24\nhosts: []\n"))
    with pytest.raises(ParamsError, match="expected a mapping"):
        params.load(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ParamsError, match="cannot read the params file"):
        params.load(tmp_path / "nope.yaml")


def test_yaml_tags_cannot_run_code(tmp_path):
    f = write(tmp_path, "site: !!python/object/apply:os.system ['touch /tmp/pwned-runbook']\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load(f)
    assert not Path("/tmp/pwned-runbook").exists()


def test_management_address_for_multi_nic_hosts(tmp_path):
    data = with_("hosts[1].address", "10.99.0.11")
    with pytest.raises(ParamsError, match=r"hosts\[1\].address.*outside management_cidr"):
        params.load(write(tmp_path, data))
    data["hosts"][1]["management_address"] = "198.18.0.11"
    site = params.load(write(tmp_path, data))
    assert site.host("compute1").management_address == "198.18.0.11"
    assert site.host("compute1").address == "10.99.0.11"


def test_host_names_in_parameters_are_checked():
    site = params.from_mapping(GOOD)
    params.check_host_names(site, ["compute1"], "limit")
    params.check_host_names(site, "controller", "reference_host")
    with pytest.raises(ParamsError, match=r"key 'limit'.*unknown host 'compute9'.*controller, compute1"):
        site.select(["compute9"])


def test_notebook_namespace_without_site_says_how_to_pass_one():
    with pytest.raises(ParamsError, match=r"no site given.*-p params/SITE.yaml"):
        params.from_namespace({"params_file": "", "site": "", "hosts": []})
    site = params.from_namespace({"params_file": "", **GOOD, "cloud": None, "archive_dir": None, "limit": []})
    assert site.names == ["controller", "compute1"]
