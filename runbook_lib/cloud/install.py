"""What the lab's cloud runs on: a dedicated Python venv for the OpenStack services, and Debian's
RabbitMQ and MariaDB.

The services never share the project's venv: Nova, Keystone and Placement pin hundreds of
packages (oslo.*, SQLAlchemy, eventlet) that would fight the runbook side's Jupyter stack.  The
venv is built with the machine's ``/usr/bin/python3`` rather than whatever ``python3`` is first on
``PATH``, because the lab's nspawn hosts (Debian bookworm, the same Python 3.11) run the very same
venv through a read-only bind mount, and a venv only works where its base interpreter exists.

It lives in the lab's cache directory, so ``lab down`` keeps it and every lab sharing the cache
shares it.  It is built in ``cloud-venv.build`` and renamed into place when complete: an
interrupted install is started over, never half-used.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from runbook_lib.cloud.errors import CloudPrerequisiteError

#: The services and the client tools, pinned to the release set that was proven on this kind of
#: machine (Nova 34 "Flamingo"-era, Keystone 30, Placement 16).  SQLAlchemy<2.1: 2.1 deprecates
#: APIs Nova 34 still uses (``noload``); the services only warn, but Nova's own tests fail.
SERVICE_REQUIREMENTS = (
    "nova==34.0.0",
    "keystone==30.0.0",
    "openstack-placement==16.0.0",
    "python-openstackclient",
    "openstacksdk==4.22.0",
    "gunicorn",
    "PyMySQL",
    "SQLAlchemy<2.1",
)
#: Imported by :func:`venv_ready` to decide that a cached venv is usable.
PROBE_MODULES = ("nova", "keystone", "placement", "gunicorn", "pymysql", "openstackclient")
#: Debian packages of the cloud's infrastructure services, run by the lab as its own processes.
DEBIAN_PACKAGES = ("rabbitmq-server", "mariadb-server")
BASE_PYTHON = Path("/usr/bin/python3")
COMPLETE_MARK = ".rblab-cloud-complete"

Echo = Callable[[str], None]


def venv_ready(venv: Path) -> bool:
    """Whether a complete services venv is at ``venv``."""
    return (venv / COMPLETE_MARK).exists() and (venv / "bin/python").exists()


def ensure_venv(venv: Path, *, echo: Echo = print, log: Path | None = None) -> float | None:
    """Create the services venv at ``venv`` unless a complete one is there.

    Parameters
    ----------
    venv
        Final location of the venv (usually ``<lab cache>/cloud-venv``).
    echo
        Progress messages.
    log
        pip's output goes here (default ``<venv>.log``).

    Returns
    -------
    float or None
        Seconds the install took, or ``None`` when the venv was cached.

    Raises
    ------
    CloudPrerequisiteError
        When ``/usr/bin/python3`` is missing or pip fails (the message names the log).
    """
    if venv_ready(venv):
        return None
    if not BASE_PYTHON.exists():
        raise CloudPrerequisiteError(f"{BASE_PYTHON} is missing: install Debian's python3 and "
                                     "python3-venv")
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = log or venv.with_name(venv.name + ".log")
    with open(venv.with_name(f".{venv.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # two labs sharing the cache install once
        if venv_ready(venv):
            return None
        started = time.monotonic()
        # The venv's scripts carry its absolute path in their #! lines: build it where it will
        # live, under a marker that says "incomplete", rather than building elsewhere and moving.
        shutil.rmtree(venv, ignore_errors=True)
        echo(f"installing the OpenStack services venv at {venv} (one time, ~1 min, ~450 MB; "
             f"log {log})")
        with open(log, "w") as out:
            _step(out, [str(BASE_PYTHON), "-m", "venv", str(venv)], log)
            pip = [str(venv / "bin/python"), "-m", "pip", "install", "-q",
                   "--disable-pip-version-check"]
            _step(out, [*pip, "--upgrade", "pip"], log)
            _step(out, [*pip, *SERVICE_REQUIREMENTS], log)
            probe = "; ".join(f"import {m}" for m in PROBE_MODULES)
            _step(out, [str(venv / "bin/python"), "-c", probe], log)
        (venv / COMPLETE_MARK).write_text(
            f"built {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n"
            + "\n".join(SERVICE_REQUIREMENTS) + "\n")
        seconds = time.monotonic() - started
        echo(f"services venv ready in {seconds:.0f} s")
        return seconds


def _step(out, argv: list[str], log: Path) -> None:
    out.write(f"$ {' '.join(argv)}\n")
    out.flush()
    proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          timeout=1800)
    if proc.returncode != 0:
        raise CloudPrerequisiteError(f"installing the services venv failed at "
                                     f"`{' '.join(argv[:4])} ...` (exit {proc.returncode}); "
                                     f"see {log}")


def ensure_debian_packages(*, echo: Echo = print) -> list[str]:
    """Install RabbitMQ and MariaDB from Debian if they are missing.

    Package scripts never start the system's own ``rabbitmq-server``/``mariadb`` daemons (they
    would take ports 5672, 3306 and 4369 on every address): the install runs behind a
    ``policy-rc.d`` that answers 101.  The lab runs both as its own processes instead.

    Returns
    -------
    list of str
        The packages installed now (empty when both were there).
    """
    # the lab's package helpers already implement "apt-get with daemons forbidden"
    from runbook_lib.lab.packages import apt_install, missing_packages

    missing = missing_packages(DEBIAN_PACKAGES)
    if not missing:
        return []
    if os.geteuid() != 0:
        raise CloudPrerequisiteError(f"missing Debian packages {', '.join(missing)}; run as root "
                                     "so the lab can install them")
    echo(f"installing Debian packages: {' '.join(missing)}")
    try:
        apt_install(missing)
    except Exception as exc:
        raise CloudPrerequisiteError(f"could not install {', '.join(missing)}: {exc}") from exc
    return missing


#: Debian's libvirt bindings for nova-compute's libvirt driver (``import libvirt``).  The services
#: venv does not carry them: PyPI has libvirt-python as source only (a C build against the
#: libvirt headers), while Debian ships them built for the very Python 3.11 and libvirt 9.0 of
#: both this machine and the lab's rootfs.
LIBVIRT_PYTHON_PACKAGE = "python3-libvirt"
LIBVIRT_PYTHON_DIR = "libvirt-python"


def ensure_libvirt_python(cache_dir: Path, *, echo: Echo = print) -> Path:
    """Unpack Debian's ``python3-libvirt`` modules into ``<cache_dir>/libvirt-python`` (once).

    The package is downloaded and unpacked, never installed: the lab's nova-compute launcher
    puts this directory on ``sys.path`` when it runs the libvirt driver.

    Returns
    -------
    Path
        The directory holding ``libvirt.py`` and ``libvirtmod*.so``.

    Raises
    ------
    CloudPrerequisiteError
        When apt cannot download the package.
    """
    import tempfile

    target = cache_dir / LIBVIRT_PYTHON_DIR
    if (target / "libvirt.py").exists():
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{LIBVIRT_PYTHON_DIR}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / "libvirt.py").exists():
            return target
        echo(f"fetching {LIBVIRT_PYTHON_PACKAGE} for nova-compute's libvirt driver (one time)")
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            Path(tmp).chmod(0o777)            # apt's download sandbox user writes here
            proc = subprocess.run(["apt-get", "download", "-q", LIBVIRT_PYTHON_PACKAGE],
                                  cwd=tmp, capture_output=True, text=True, timeout=600)
            debs = list(Path(tmp).glob("*.deb"))
            if not debs:
                raise CloudPrerequisiteError(f"apt-get download {LIBVIRT_PYTHON_PACKAGE} failed: "
                                             f"{(proc.stderr or proc.stdout).strip()[-300:]}")
            unpacked = Path(tmp) / "x"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True,
                           timeout=120)
            build = Path(tmp) / "out"
            build.mkdir()
            for module in (unpacked / "usr/lib/python3/dist-packages").glob("libvirt*"):
                if module.is_file():
                    shutil.copy2(module, build / module.name)
                    (build / module.name).chmod(0o644)
            if not (build / "libvirt.py").exists():
                raise CloudPrerequisiteError(f"{LIBVIRT_PYTHON_PACKAGE} holds no libvirt.py")
            build.chmod(0o755)
            shutil.rmtree(target, ignore_errors=True)
            build.rename(target)
    return target



#: Debian packages a libvirt-driver compute needs beyond the lab's rootfs: ``sudo`` (Nova's
#: privileged steps run ``sudo nova-rootwrap ... privsep-helper``) and ``qemu-utils``
#: (``qemu-img``, with which the driver inspects and creates every disk).  Their dependencies are
#: all in the rootfs already.
COMPUTE_DEBS = ("sudo", "qemu-utils")


def ensure_compute_debs(cache_dir: Path, *, echo: Echo = print) -> list[Path]:
    """Download :data:`COMPUTE_DEBS` once to ``<cache_dir>/debs/NAME.deb``; returns the files.

    The lab's minimal rootfs has neither; the libvirt-driver computes install them with
    ``dpkg -i`` (the packages a Debian ``nova-compute`` pulls in).
    """
    import tempfile

    folder = cache_dir / "debs"
    wanted = [folder / f"{name}.deb" for name in COMPUTE_DEBS]
    if all(p.exists() for p in wanted):
        return wanted
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, target in zip(COMPUTE_DEBS, wanted):
            if target.exists():
                continue
            echo(f"fetching {name} for the libvirt-driver computes (one time)")
            with tempfile.TemporaryDirectory(dir=folder) as tmp:
                Path(tmp).chmod(0o777)        # apt's download sandbox user writes here
                proc = subprocess.run(["apt-get", "download", "-q", name], cwd=tmp,
                                      capture_output=True, text=True, timeout=600)
                debs = list(Path(tmp).glob(f"{name}_*.deb"))
                if not debs:
                    raise CloudPrerequisiteError(f"apt-get download {name} failed: "
                                                 f"{(proc.stderr or proc.stdout).strip()[-300:]}")
                debs[0].chmod(0o644)
                debs[0].rename(target)
    return wanted
