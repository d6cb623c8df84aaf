"""Property-based bad-input corpus over params files (hypothesis).

Every mutation of a valid params file is either rejected with a ParamsError that names the
key, or accepted with every value that can reach a shell command in a safe form. Nothing
here talks to a host: validation happens before any connection (the runner tests prove the
CLI sends nothing to the test hosts on bad params).
"""

from __future__ import annotations

import copy
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runbook_lib import params
from runbook_lib.errors import ParamsError

BASE = {
    "site": "s1",
    "management_cidr": "198.18.0.0/24",
    "ssh": {"user": "root", "port": 22, "key_file": "/k", "known_hosts": "/kh", "connect_timeout": 5, "command_timeout": 30},
    "hosts": [
        {"name": "controller", "role": "controller", "address": "198.18.0.10"},
        {"name": "compute1", "role": "compute", "address": "198.18.0.11"},
    ],
}
PATHS = [("site",), ("management_cidr",), ("ssh",), ("ssh", "user"), ("ssh", "port"), ("ssh", "key_file"),
         ("ssh", "known_hosts"), ("ssh", "connect_timeout"), ("ssh", "command_timeout"), ("hosts",),
         ("hosts", 0), ("hosts", 1, "name"), ("hosts", 1, "role"), ("hosts", 1, "address"), ("hosts", 0, "port"),
         ("hosts", 1, "user"), ("hosts", 1, "management_address"), ("cloud",), ("archive_dir",)]
HOSTILE = ["a; rm -rf /", "$(reboot)", "`id`", "x\ny", "x\x00y", "../../etc/passwd", "*", "compute1 compute2",
           "-o ProxyCommand=sh", "'", '"', "\\", "198.18.0.11\n198.18.0.12", "a" * 5000, "", " "]
values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True),
    st.sampled_from(HOSTILE), st.text(max_size=50), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
SAFE_USER = re.compile(r"^[a-z_][a-z0-9_-]*$")


def mutate(data, path, value, how):
    data = copy.deepcopy(data)
    cur = data
    for p in path[:-1]:
        cur = cur[p]
    last = path[-1]
    present = (last in cur) if isinstance(cur, dict) else (last < len(cur))
    if how == "delete" and present:
        del cur[last]
    elif how == "rename" and present and isinstance(cur, dict):
        cur[f"{last}x"] = cur.pop(last)
    else:
        cur[last] = value
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(path=st.sampled_from(PATHS), value=values, how=st.sampled_from(["set", "set", "set", "delete", "rename"]))
def test_every_bad_value_is_refused_naming_its_key_or_is_safe(path, value, how):
    data = mutate(BASE, path, value, how)
    try:
        site = params.from_mapping(data, source="fuzz.yaml")
    except ParamsError as err:
        assert err.key, f"error without a key: {err}"
        assert str(err).startswith("fuzz.yaml, key '")
        assert "\n" not in err.key
        return
    # accepted: whatever reaches a shell has a safe form
    for h in site.hosts:
        assert SAFE_NAME.match(h.name) and SAFE_USER.match(h.user)
        assert 1 <= h.port <= 65535 and h.address.count(".") in (0, 3)
        assert h.management_address and "\n" not in str(h.key_file or "")
    assert site.ssh.connect_timeout > 0 and site.ssh.command_timeout > 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(["controller", "compute1", "compute2", "Compute1"]), min_size=1, max_size=4))
def test_duplicate_host_names_are_refused(names):
    hosts = [{"name": n, "role": "compute", "address": f"198.18.0.{20 + i}"} for i, n in enumerate(names)]
    data = dict(BASE, hosts=hosts)
    lowered = [n.lower() for n in names]
    if len(set(lowered)) < len(lowered):
        try:
            params.from_mapping(data)
        except ParamsError as err:
            assert "duplicate host name" in str(err)
        else:
            raise AssertionError("duplicates accepted")
    else:
        assert params.from_mapping(data).names == names


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_yaml_text_gives_a_site_or_a_params_error(text):
    import pathlib
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        params.load(f.name)
    except ParamsError as err:
        assert str(err).startswith(f.name)
    finally:
        pathlib.Path(f.name).unlink()


def test_huge_values_are_refused():
    for path, value in ((("ssh", "port"), 10**30), (("ssh", "command_timeout"), 10**9),
                        (("ssh", "key_file"), "/" + "a" * 5000), (("site",), "s" * 100)):
        try:
            params.from_mapping(mutate(BASE, path, value, "set"))
        except ParamsError as err:
            assert err.key == ".".join(str(p) for p in path)
        else:
            raise AssertionError(f"{path} = huge accepted")
