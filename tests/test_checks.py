"""Checks: verdicts and remediations from gathered facts (pure; no hosts)."""

from __future__ import annotations

from runbook_lib import checks, params
from runbook_lib.facts import MISSING, HostFacts

SITE = params.from_mapping({
    "site": "s",
    "management_cidr": "198.18.0.0/24",
    "hosts": [
        {"name": "controller", "role": "controller", "address": "198.18.0.10"},
        {"name": "compute1", "role": "compute", "address": "198.18.0.11"},
        {"name": "compute2", "role": "compute", "address": "198.18.0.12"},
    ],
})
ALL = {"controller": "198.18.0.10", "compute1": "198.18.0.11", "compute2": "198.18.0.12"}


def hf(name, uid=64060, gid=64060, resolved=None, libvirt="9.0.0", hostname=None):
    return HostFacts(name, {
        "hostname": hostname or name,
        "resolution": resolved if resolved is not None else dict(ALL),
        "nova_ids": MISSING if uid is None else {"uid": uid, "gid": gid, "group_gid": gid},
        "libvirt_version": libvirt,
    }, duration=0.1)


def verdicts(results):
    return {(c.host, c.check): c.verdict for c in results}


def test_a_consistent_site_passes_everything_applicable():
    g = {n: hf(n) for n in SITE.names}
    v = verdicts(checks.preflight_basic(SITE, g))
    assert set(v.values()) == {"pass", "skip"}
    assert v[("controller", "libvirt")] == "skip"


def test_uid_drift_fails_against_the_controller_with_the_identity_phase_named():
    g = {n: hf(n) for n in SITE.names}
    g["compute2"] = hf("compute2", uid=64061, gid=64061)
    res = {(c.host, c.check): c for c in checks.preflight_basic(SITE, g)}
    c = res[("compute2", "nova-ids")]
    assert c.verdict == "fail" and "the controller controller has uid 64060" in c.detail
    assert "uid 64060 gid 64060" in c.remediation and "identity" in c.remediation
    assert res[("compute1", "nova-ids")].verdict == "pass"


def test_without_a_reachable_controller_the_majority_is_the_reference():
    g = {n: hf(n) for n in SITE.names}
    g["controller"] = HostFacts("controller", error="controller: cannot connect")
    g["compute1"] = hf("compute1", uid=500, gid=500)
    g["compute2"] = hf("compute2", uid=500, gid=500)
    v = verdicts(checks.preflight_basic(SITE, g))
    assert v[("compute1", "nova-ids")] == v[("compute2", "nova-ids")] == "pass"
    assert v[("controller", "ssh")] == "fail" and v[("controller", "nova-ids")] == "skip"


def test_resolution_to_loopback_is_wrong_and_the_fix_names_the_hosts_line():
    resolved = dict(ALL, compute2="127.0.1.1")
    g = {n: hf(n) for n in SITE.names}
    g["compute1"] = hf("compute1", resolved=resolved)
    res = {(c.host, c.check): c for c in checks.preflight_basic(SITE, g)}
    c = res[("compute1", "name-resolution")]
    assert c.verdict == "fail" and "compute2 → 127.0.1.1 (want 198.18.0.12)" in c.detail
    assert "'198.18.0.12 compute2'" in c.remediation


def test_missing_nova_missing_libvirt_version_skew_and_wrong_hostname():
    g = {n: hf(n) for n in SITE.names}
    g["compute1"] = hf("compute1", uid=None, libvirt=MISSING, hostname="localhost")
    g["compute2"] = hf("compute2", libvirt="8.0.0")
    g["controller"] = hf("controller", libvirt="9.0.0")
    v = verdicts(checks.preflight_basic(SITE, g))
    assert v[("compute1", "nova-ids")] == "fail"
    assert v[("compute1", "libvirt")] == "fail"
    assert v[("compute1", "hostname")] == "fail"
    assert v[("compute2", "libvirt")] == "pass"  # compute1 has none, nothing to compare with
    g["compute1"] = hf("compute1", libvirt="9.0.0")
    assert verdicts(checks.preflight_basic(SITE, g))[("compute2", "libvirt")] == "warn"


def test_matrix_and_counts_keep_inventory_order():
    g = {n: hf(n) for n in SITE.names}
    results = checks.preflight_basic(SITE, g)
    m = checks.matrix(results)
    assert list(m.index) == SITE.names
    assert list(m.columns) == ["ssh", "hostname", "name-resolution", "nova-ids", "libvirt"]
    assert checks.counts(results) == {"pass": 14, "warn": 0, "fail": 0, "skip": 1}
