#!/usr/bin/python3
"""Start one lab host; runs as root on the machine, inside the host's new namespaces.

This file is copied into the lab's ``share`` directory and run by the machine's
``/usr/bin/python3``, so it uses the standard library only (no ``runbook_lib`` import).

``hostinit.py ns CONFIG``
    Run as PID 1 of a fresh PID, mount and UTS namespace inside the host's netns
    (``ip netns exec NS unshare --mount --uts --pid --fork --kill-child --mount-proc``):
    give the host its own ``/etc``, ``/var``, ``/usr/local`` (overlays on the machine's), its
    own ``/root``, ``/tmp``, ``/home``, ``/mnt``, a tmpfs ``/run`` and a read-only ``/usr``;
    seed it; start its services with Debian's sysv scripts; then become ``tini``.

``hostinit.py nspawn CONFIG``
    Run in a private mount namespace (``unshare --mount``): mount the host's overlay on the
    cached rootfs, seed it, then become ``systemd-nspawn``, which boots the host's systemd.

Because all mounts live in namespaces that die with the host, a killed lab leaves no mount behind
on the machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

SHARE_MOUNT = "/usr/local/lib/rblab"


def sh(*argv: str) -> None:
    """Run a command; fail the host's start with its message if it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"hostinit: {' '.join(argv)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()}")


def bind(src: str, dst: str, readonly: bool = False) -> None:
    """Bind-mount ``src`` on ``dst`` (read-only if asked)."""
    # -c: no canonicalisation, so /proc/PID/fd/N sources are resolved by the kernel (to the real
    # directory), not by mount(8) as a path string (which would land inside the /var overlay)
    sh("mount", "-c", "--bind", src, dst)
    if readonly:
        sh("mount", "-c", "-o", "remount,bind,ro", dst)


def put(path: Path, text: str, mode: int = 0o644) -> None:
    """Write a file in the host's tree, replacing (not following) any symlink there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


def seed(root: Path, cfg: dict, chroot: bool) -> None:
    """Give the host under ``root`` its identity: names, keys, users, nova's files."""
    put(root / "etc/hostname", cfg["name"] + "\n")
    put(root / "etc/hosts", cfg["hosts_file"])
    put(root / "etc/machine-id", uuid.uuid4().hex + "\n", 0o444)
    put(root / "etc/resolv.conf", "# lab hosts have no DNS: every lab name is in /etc/hosts\n")
    # sshd: only the host key lab up generated (and published in known_hosts)
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    host_dir = Path(cfg["host_dir"])
    put(root / "etc/ssh/ssh_host_ed25519_key",
        (host_dir / "ssh_host_ed25519_key").read_text(), 0o600)
    put(root / "etc/ssh/ssh_host_ed25519_key.pub",
        (host_dir / "ssh_host_ed25519_key.pub").read_text())
    put(root / "etc/ssh/sshd_config.d/rblab.conf",
        "# runbook lab: key logins only, with the host key published in the lab's known_hosts\n"
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\n")
    # root: the lab's key, and Debian's stock dotfiles (not the machine's, whose .bashrc is slow)
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(parents=True, exist_ok=True)
    ssh_dir.chmod(0o700)
    put(ssh_dir / "authorized_keys", cfg["authorized_key"], 0o600)
    for dot, stock in ((".bashrc", "dot.bashrc"), (".profile", "dot.profile")):
        source = root / "usr/share/base-files" / stock
        if not source.exists():
            source = root / "etc/skel" / dot
        if source.exists():
            put(root / "root" / dot, source.read_text())
    # nova: the config of a deployment nobody has prepared for live migration yet
    put(root / "etc/nova/nova.conf", cfg["nova_conf"], 0o640)
    (root / "var/lib/nova/instances").mkdir(parents=True, exist_ok=True)
    uid = str(cfg["nova_uid"])
    script = (
        f"if getent group nova >/dev/null; then groupmod -g {uid} nova; "
        f"else groupadd -r -g {uid} nova; fi; "
        f"if getent passwd nova >/dev/null; then usermod -u {uid} -g {uid} nova; "
        f"else useradd -r -u {uid} -g nova -d /var/lib/nova -s /bin/sh -c 'OpenStack Nova' nova; fi; "
        "chown -R nova:nova /var/lib/nova; chown root:nova /etc/nova /etc/nova/nova.conf"
    )
    if chroot:
        sh("chroot", str(root), "/bin/sh", "-ec", script)
    else:
        sh("/bin/sh", "-ec", script)


def ns_host(cfg: dict) -> None:
    """PID 1 of an ns-mode host: namespaces are set up by the caller; build the rest."""
    socket.sethostname(cfg["name"])
    sh("mount", "--make-rprivate", "/")
    # The lab directory usually lies under /var, which is about to be overlaid: keep handles on
    # the real directories, and reach them through /proc/PID/fd/N from then on.
    real = {key: f"/proc/{os.getpid()}/fd/{os.open(cfg[key], os.O_PATH | os.O_DIRECTORY)}"
            for key in ("host_dir", "share_dir", "guest_dir")}
    host_dir = Path(real["host_dir"])
    # /usr is the machine's: read-only, so nothing done on a host can change the machine
    bind("/usr", "/usr", readonly=True)
    # /usr/local before /var: an overlay's upper layer must not itself lie on an overlay
    for target in ("usr/local", "etc", "var"):
        layer = target.replace("/", "_")
        upper, work = host_dir / f"{layer}.upper", host_dir / f"{layer}.work"
        upper.mkdir(exist_ok=True)
        work.mkdir(exist_ok=True)
        sh("mount", "-t", "overlay", f"rblab-{cfg['name']}-{layer}", "-o",
           f"lowerdir=/{target},upperdir={os.path.realpath(upper)},"
           f"workdir={os.path.realpath(work)}", f"/{target}")
    for target, mode in (("root", 0o700), ("tmp", 0o1777), ("home", 0o755), ("mnt", 0o755)):
        private = host_dir / f"{target}.private"
        private.mkdir(exist_ok=True)
        private.chmod(mode)
        bind(str(private), f"/{target}")
    sh("mount", "-t", "tmpfs", "-o", "mode=755,size=64m", f"rblab-{cfg['name']}-run", "/run")
    for sub in ("lock", "sshd"):
        Path("/run", sub).mkdir()
    Path(SHARE_MOUNT).mkdir(parents=True, exist_ok=True)
    bind(real["share_dir"], SHARE_MOUNT, readonly=True)
    bind(f"{real['share_dir']}/mount.nfs", "/usr/sbin/mount.nfs", readonly=True)
    Path(cfg["guest_dir"]).mkdir(parents=True, exist_ok=True)
    bind(real["guest_dir"], cfg["guest_dir"], readonly=True)
    if cfg["role"] == "controller":
        # nfs-ganesha cannot export from overlayfs: nova's state lives on a plain directory
        (host_dir / "nova").mkdir(exist_ok=True)
        Path("/var/lib/nova").mkdir(parents=True, exist_ok=True)
        bind(str(host_dir / "nova"), "/var/lib/nova")
    seed(Path("/"), dict(cfg, host_dir=str(host_dir)), chroot=False)
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for service in cfg["services"]:
        proc = subprocess.run(["service", service, "start"], capture_output=True, text=True, env=env)
        print(f"hostinit: service {service} start -> {proc.returncode} {proc.stdout.strip()}",
              flush=True)
    os.chdir("/")
    os.execvpe("tini", ["tini", "-s", "--", "sleep", "infinity"], env)


def nspawn_host(cfg: dict) -> None:
    """Mount, seed and exec systemd-nspawn for an nspawn-mode host."""
    host_dir = Path(cfg["host_dir"])
    root = host_dir / "root"
    for sub in ("upper", "work", "root"):
        (host_dir / sub).mkdir(exist_ok=True)
    sh("mount", "--make-rprivate", "/")
    sh("mount", "-t", "overlay", f"rblab-{cfg['name']}", "-o",
       f"lowerdir={cfg['rootfs']},upperdir={host_dir / 'upper'},workdir={host_dir / 'work'}",
       str(root))
    if cfg["role"] == "controller":
        nova_dir = host_dir / "nova"
        nova_dir.mkdir(exist_ok=True)
        (root / "var/lib/nova").mkdir(parents=True, exist_ok=True)
        bind(str(nova_dir), str(root / "var/lib/nova"))
    seed(root, cfg, chroot=True)
    # nspawn hands the host a ready overlay root whose system users the rootfs build created:
    # remounting it per fstab and re-running sysusers add nothing, and each was seen failing
    # now and then at boot, leaving the host 'degraded'
    for unit in ("systemd-remount-fs.service", "systemd-sysusers.service"):
        mask = root / "etc/systemd/system" / unit
        if not mask.is_symlink():
            mask.parent.mkdir(parents=True, exist_ok=True)
            mask.unlink(missing_ok=True)
            mask.symlink_to("/dev/null")
    if cfg["role"] == "controller":
        sh("umount", str(root / "var/lib/nova"))    # nspawn binds it again inside
    env = dict(os.environ)
    # A unified cgroup hierarchy inside: with the machine's hybrid v1 layout nspawn mounts the v1
    # controllers read-only and libvirt fails "Failed to create v1 controller cpu for group".
    env["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
    os.execvpe("systemd-nspawn", ["systemd-nspawn", *cfg["nspawn_args"]], env)


def main(argv: list[str]) -> None:
    """Entry point: ``hostinit.py ns|nspawn CONFIG``."""
    if len(argv) != 3 or argv[1] not in ("ns", "nspawn"):
        raise SystemExit("usage: hostinit.py ns|nspawn CONFIG.json")
    cfg = json.loads(Path(argv[2]).read_text())
    (ns_host if argv[1] == "ns" else nspawn_host)(cfg)


if __name__ == "__main__":
    main(sys.argv)
