"""The lab, for real: up, SSH, isolation, NFS, a live migration, no-op up, crash recovery, down.

Each test class runs once per mode (``nspawn`` and ``ns``) against one lab brought up by the
``running_lab`` fixture; the tests in it run in order and build on each other (the NFS export
and libvirt's TCP listener are configured *by hand* here — a test-only shortcut for what the
configure runbook does).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from runbook_lib import lab
from runbook_lib.lab import net as labnet
from runbook_lib.lab.layout import NOVA_UID, NOVA_UID_DRIFTED, LabPaths
from runbook_lib.lab.state import alive, mounts_under, read_state
from .conftest import CACHE, TEST_ROOT, LabShell, needs_root, wait_for

pytestmark = pytest.mark.lab

INSTANCES = "/var/lib/nova/instances"
GANESHA_CONF = """\
NFS_CORE_PARAM {{ Protocols = 3, 4; }}
NFSV4 {{ Graceless = true; }}
EXPORT {{
  Export_Id = 1;
  Path = {path};
  Pseudo = {path};
  Access_Type = RW;
  Squash = No_Root_Squash;
  SecType = sys;
  Transports = TCP;
  CLIENT {{ Clients = {net}; Access_Type = RW; }}
  FSAL {{ Name = VFS; }}
}}
"""


def ticks(text: str) -> list[int]:
    """Tick numbers printed by the guest, in order."""
    return [int(n) for n in re.findall(r"rblab-guest tick (\d+) ", text)]


class TestLab:
    """One lab per mode; tests run in file order."""

    def test_params_file_is_what_the_runbooks_read(self, running_lab):
        from runbook_lib import params

        site = params.load(running_lab.info.params_file)
        assert site.name == "lab"
        assert str(site.management_cidr) == running_lab.net
        assert [h.name for h in site.hosts] == ["controller", "compute1", "compute2"]
        assert [h.role for h in site.hosts] == ["controller", "compute", "compute"]
        assert site.ssh.key_file == running_lab.lab_dir / "id_ed25519"
        text = running_lab.info.known_hosts.read_text()
        for host in running_lab.info.hosts:
            assert re.search(rf"^{re.escape(host.address)},{host.name} ssh-ed25519 AAAA", text, re.M)

    def test_ssh_to_every_host_with_known_host_keys(self, running_lab):
        shell = running_lab.shell
        for name in shell.names:
            assert shell.out(name, "hostname") == name
        # a wrong key for compute1 (the controller's) is rejected, not learned
        lines = running_lab.info.known_hosts.read_text().splitlines()
        ctl_key = next(l.split(" ", 1)[1] for l in lines if ",controller " in l)
        wrong = [l.split(" ", 1)[0] + " " + ctl_key if ",compute1 " in l else l for l in lines]
        bad = running_lab.lab_dir / "known_hosts.wrong"
        bad.write_text("\n".join(wrong) + "\n")
        with pytest.raises(paramiko.BadHostKeyException):
            shell.connect("compute1", known_hosts=str(bad)).close()
        bad.unlink()

    def test_starts_as_a_not_yet_configured_deployment(self, running_lab):
        shell, mode = running_lab.shell, running_lab.mode
        uids = {n: shell.out(n, "id -u nova") + ":" + shell.out(n, "id -g nova") for n in shell.names}
        assert uids == {"controller": f"{NOVA_UID}:{NOVA_UID}", "compute1": f"{NOVA_UID}:{NOVA_UID}",
                        "compute2": f"{NOVA_UID_DRIFTED}:{NOVA_UID_DRIFTED}"}
        for name in shell.computes:
            conf = shell.out(name, "cat /etc/nova/nova.conf")
            default = conf.split("[libvirt]")[0]
            assert f"host = {name}" in default
            assert re.search(r"^vncserver_listen\s*=", default, re.M)
            assert re.search(r"^vncserver_proxyclient_address\s*=", default, re.M)
            # stock libvirt: no TCP listener configured or listening
            assert shell.run(name, r"grep -E '^\s*(listen_tcp|auth_tcp)' /etc/libvirt/libvirtd.conf",
                             check=False).rc == 1
            assert ":16509 " not in shell.out(name, "ss -ltn")
            # instances are local, not shared yet
            assert shell.out(name, f"stat -c %U {INSTANCES}") == "nova"
            assert shell.run(name, f"findmnt -n {INSTANCES}", check=False).rc == 1
            assert "pyenv" not in shell.out(name, "cat /root/.bashrc")
        if mode == "nspawn":
            for name in shell.names:
                state = shell.run(name, "systemctl is-system-running --wait", check=False).out.strip()
                failed = shell.run(name, "systemctl --failed --no-legend --plain", check=False).out
                assert state == "running", f"{name}: {state}; failed units: {failed}"
            assert shell.out("compute1", "systemctl is-enabled libvirtd.socket") == "enabled"
            assert shell.run("compute1", "systemctl is-active libvirtd-tcp.socket", check=False).rc != 0
        else:
            assert shell.run("compute1", "systemctl status", check=False).rc != 0
            assert shell.run("compute1", "service libvirtd status", check=False).rc == 0

    def test_hosts_are_isolated_from_each_other_and_the_machine(self, running_lab):
        shell = running_lab.shell
        shell.run("compute1", "usermod -u 64200 nova && groupmod -g 64200 nova "
                              "&& echo c1 > /etc/rblab-isolation && echo c1 > /tmp/rblab-isolation")
        try:
            assert shell.out("compute1", "id -u nova") == "64200"
            for other in ("controller", "compute2"):
                assert shell.out(other, "id -u nova") != "64200"
                assert shell.run(other, "test -e /etc/rblab-isolation", check=False).rc == 1
                assert shell.run(other, "test -e /tmp/rblab-isolation", check=False).rc == 1
            assert not Path("/etc/rblab-isolation").exists()
            assert not Path("/tmp/rblab-isolation").exists()
            ids = {shell.out(n, "cat /etc/machine-id") for n in shell.names}
            assert len(ids) == 3
        finally:
            shell.run("compute1", f"usermod -u {NOVA_UID} nova && groupmod -g {NOVA_UID} nova && "
                                  f"chown -R nova:nova /var/lib/nova && rm /etc/rblab-isolation")

    def test_host_names_resolve_between_hosts(self, running_lab):
        shell = running_lab.shell
        for name in shell.names:
            for other in shell.names:
                assert shell.out(name, f"getent hosts {other}").split()[0] == shell.address[other]
        shell.run("compute1", "ping -c1 -W2 compute2" if running_lab.mode == "nspawn"
                  else "bash -c '</dev/tcp/compute2/22'")

    def test_nfs_export_is_shared_between_computes(self, running_lab):
        shell, mode = running_lab.shell, running_lab.mode
        conf = GANESHA_CONF.format(path=INSTANCES, net=running_lab.net)
        shell.run("controller", f"cat > /etc/ganesha/ganesha.conf <<'EOF'\n{conf}EOF")
        if mode == "nspawn":
            shell.run("controller", "systemctl enable --now nfs-ganesha")
        else:   # nfs-ganesha ships no sysv script
            shell.run("controller",
                      "mkdir -p /var/log/ganesha /run/ganesha && start-stop-daemon --start "
                      "--pidfile /run/ganesha/ganesha.pid --exec /usr/bin/ganesha.nfsd -- "
                      "-L /var/log/ganesha/ganesha.log -f /etc/ganesha/ganesha.conf "
                      "-N NIV_EVENT -p /run/ganesha/ganesha.pid")
        wait_for("the export in showmount -e controller", lambda: INSTANCES in shell.run(
            "compute1", "showmount -e controller", check=False).out, timeout=30)
        # libnfs-utils: a real NFS client, no mount involved
        shell.run("compute1", "echo via-libnfs > /tmp/n && "
                              f"nfs-cp /tmp/n nfs://controller{INSTANCES}/from-c1-libnfs.txt")
        assert shell.out("compute2", f"nfs-cat nfs://controller{INSTANCES}/from-c1-libnfs.txt") == "via-libnfs"
        # mount -t nfs from fstab, through the lab's FUSE client
        for name in shell.computes:
            shell.run(name, f"echo 'controller:{INSTANCES} {INSTANCES} nfs defaults 0 0' >> /etc/fstab"
                            " && mount -a -t nfs")
            assert shell.out(name, f"findmnt -n -o FSTYPE {INSTANCES}") == "fuse.rblab-nfs"
        shell.run("compute1", f"su -s /bin/sh nova -c 'echo by-nova > {INSTANCES}/by-nova.txt'")
        assert shell.out("compute2", f"cat {INSTANCES}/by-nova.txt") == "by-nova"
        # the uid travels with the file: compute2's nova (drifted uid) does not own it
        assert shell.out("compute2", f"stat -c %u {INSTANCES}/by-nova.txt") == str(NOVA_UID)
        assert shell.out("controller", f"stat -c %u {INSTANCES}/by-nova.txt") == str(NOVA_UID)
        for name in shell.computes:
            shell.run(name, f"umount {INSTANCES}")

    def test_live_migration_keeps_the_guest_running(self, running_lab):
        shell, mode, info = running_lab.shell, running_lab.mode, running_lab.info
        log = info.guest_serial_log
        for name in shell.computes:    # by hand: TCP without auth (test-only shortcut)
            if mode == "nspawn":
                shell.run(name, "sed -i 's/^#\\?auth_tcp = .*/auth_tcp = \"none\"/' "
                                "/etc/libvirt/libvirtd.conf && systemctl stop libvirtd.service "
                                "&& systemctl enable --now libvirtd-tcp.socket "
                                "&& systemctl start libvirtd.service")
            else:
                shell.run(name, "sed -i -e 's/^#\\?listen_tls = .*/listen_tls = 0/' "
                                "-e 's/^#\\?listen_tcp = .*/listen_tcp = 1/' "
                                "-e 's/^#\\?auth_tcp = .*/auth_tcp = \"none\"/' "
                                "/etc/libvirt/libvirtd.conf && sed -i "
                                "'s/^#\\?LIBVIRTD_ARGS=.*/LIBVIRTD_ARGS=\"--listen\"/' "
                                "/etc/default/libvirtd && service libvirtd restart")
        for name in shell.computes:
            wait_for(f"libvirtd on {name}:16509",
                     lambda n=name: ":16509 " in shell.out(n, "ss -ltn"), timeout=30)
        shell.run("compute1", f"virsh define {info.guest_xml} && virsh start {info.guest_name}")
        wait_for("the guest's 3rd tick", lambda: max(ticks(shell.out(
            "compute1", f"cat {log}", check=False)) or [0]) >= 3, timeout=90)
        started = time.monotonic()
        shell.run("compute1", f"virsh migrate --live --p2p --persistent --undefinesource "
                              f"{info.guest_name} qemu+tcp://compute2/system", timeout=120)
        print(f"{mode}: live migration took {time.monotonic() - started:.1f} s")
        assert shell.out("compute2", f"virsh domstate {info.guest_name}") == "running"
        assert shell.out("compute1", "virsh list --all --name") == ""
        source = ticks(shell.out("compute1", f"cat {log}"))
        wait_for("ticks on compute2", lambda: len(ticks(shell.out("compute2", f"cat {log}"))) >= 2)
        dest_log = shell.out("compute2", f"cat {log}")
        dest = ticks(dest_log)
        assert "booted" not in dest_log, "the guest rebooted on the destination"
        assert source[-1] < dest[0] <= source[-1] + 2, (source[-3:], dest[:3])
        assert dest == list(range(dest[0], dest[0] + len(dest)))

    def test_up_again_is_a_no_op_that_says_so(self, running_lab):
        said = []
        info = lab.up(computes=2, mode=running_lab.mode, net=running_lab.net,
                      lab_dir=running_lab.lab_dir, cache_dir=CACHE, cloud=False, echo=said.append)
        assert info.already_up
        assert any("already up" in line for line in said)
        # and the guest still runs: nothing was restarted
        assert running_lab.shell.out("compute2", "virsh domstate rblab-guest") == "running"

    def test_a_different_lab_is_not_silently_replaced(self, running_lab):
        other = "ns" if running_lab.mode == "nspawn" else "nspawn"
        with pytest.raises(lab.LabConflictError):
            lab.up(computes=2, mode=other, net=running_lab.net, lab_dir=running_lab.lab_dir,
                   cache_dir=CACHE, cloud=False, echo=lambda _m: None)

    def test_a_killed_run_is_cleared_by_the_next_up(self, running_lab):
        paths = LabPaths(running_lab.lab_dir, CACHE)
        state = read_state(paths)
        refs = [r for h in state["hosts"] for r in (h["init"], h["launcher"])]
        for ref in refs:     # what a killed session leaves: processes dead, kernel objects kept
            os.kill(ref["pid"], signal.SIGKILL)
        wait_for("the killed lab processes to die", lambda: not any(alive(r) for r in refs), 10, 0.05)
        assert set(labnet.netns_names(state["prefix"])) == {h["netns"] for h in state["hosts"]}
        assert lab.status(running_lab.lab_dir).state == "broken"
        said: list[str] = []
        info = running_lab.bring_up(echo=said.append)
        assert not info.already_up
        assert any("clearing leftovers" in line for line in said), said
        for name in running_lab.shell.names:
            assert running_lab.shell.out(name, "hostname") == name
        assert lab.status(running_lab.lab_dir).state == "up"

    def test_down_leaves_nothing_behind(self, running_lab):
        paths = LabPaths(running_lab.lab_dir, CACHE)
        state = read_state(paths)
        running_lab.shell.close()
        lab.down(running_lab.lab_dir)
        assert labnet.netns_names(state["prefix"]) == []
        assert labnet.links(state["prefix"]) == {}
        assert mounts_under(running_lab.lab_dir) == []
        refs = [r for h in state["hosts"] for r in (h["init"], h["launcher"])]
        assert not any(alive(r) for r in refs)
        ps = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout
        assert str(running_lab.lab_dir) not in ps
        # the launchers this process started were reaped, not left as zombies
        ours = subprocess.run(["ps", "--ppid", str(os.getpid()), "-o", "stat=,comm="],
                              capture_output=True, text=True).stdout
        assert not [line for line in ours.splitlines() if line.startswith("Z")], ours
        assert lab.status(running_lab.lab_dir).state == "down"
        assert not paths.params.exists()
        # down again is a no-op, and the fixture's own down after this is too
        lab.down(running_lab.lab_dir)


@needs_root
def test_refuses_a_network_used_by_something_else():
    """A range this machine uses elsewhere is refused, and nothing is created."""
    lab_dir = TEST_ROOT / "conflict"
    other = "rblabt-br9"
    subprocess.run(["ip", "link", "add", other, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "addr", "add", "198.18.250.1/24", "dev", other], check=True)
        with pytest.raises(lab.LabConflictError, match="198.18.250.1/24 on rblabt-br9"):
            lab.up(computes=1, mode="ns", net="198.18.250.0/24", lab_dir=lab_dir, cache_dir=CACHE,
                   cloud=False, echo=lambda _m: None)
        # nothing of this lab exists: no bridge claims its directory, no record, no netns
        alias = labnet.bridge_alias(str(lab_dir))
        assert not [n for n, link in labnet.links("rblab").items() if link.get("ifalias") == alias]
        assert lab.status(lab_dir).state == "down"
    finally:
        subprocess.run(["ip", "link", "del", other], check=False)
        lab.down(lab_dir, purge=True)


@needs_root
def test_ns_mode_scales_to_thirty_computes():
    """30 computes in ns mode come up, and each answers as itself."""
    lab_dir = TEST_ROOT / "scale"
    lab.down(lab_dir)
    started = time.monotonic()
    info = lab.up(computes=30, mode="ns", net="198.18.251.0/24", lab_dir=lab_dir, cache_dir=CACHE, cloud=False)
    try:
        print(f"31 ns hosts up in {time.monotonic() - started:.1f} s")
        assert len(info.computes) == 30
        shell = LabShell(info.params_file)
        try:
            assert shell.out("compute30", "hostname; id -u nova").split() == ["compute30",
                                                                            str(NOVA_UID_DRIFTED)]
            assert shell.out("compute29", "id -u nova") == str(NOVA_UID)
        finally:
            shell.close()
        assert lab.status(lab_dir).state == "up"
    finally:
        lab.down(lab_dir, purge=True)
    assert labnet.netns_names(f"rblab{info.lab_id}-") == []


@needs_root
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_up_leaves_nothing(sig):
    """^C or SIGTERM while `lab up` is creating hosts: it removes what it started, exits 130."""
    lab_dir = TEST_ROOT / "interrupted"
    lab.down(lab_dir)
    paths = LabPaths(lab_dir, CACHE)
    env = dict(os.environ, RUNBOOK_LAB_CACHE=str(CACHE))
    proc = subprocess.Popen(
        [sys.executable, "-m", "runbook_lib.lab", "up", "--no-cloud", "--mode", "ns", "--computes", "12",
         "--net", "198.18.252.0/24", "--lab-dir", str(lab_dir)],
        cwd=Path(__file__).resolve().parents[2], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        def hosts_starting() -> bool:
            state = read_state(paths) or {}
            return any(h.get("launcher") for h in state.get("hosts", []))
        wait_for("lab up to start hosts", hosts_starting, timeout=60, every=0.02)
        state = read_state(paths)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "removing what it started" in out
    assert labnet.netns_names(state["prefix"]) == []
    assert labnet.links(state["prefix"]) == {}
    assert not any(alive(h["launcher"]) for h in state["hosts"] if h["launcher"])
    assert lab.status(lab_dir).state == "down"
    lab.down(lab_dir, purge=True)
