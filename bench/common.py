"""Shared helpers of the benchmark scripts: labs, whole-process timing, statistics, Ansible.

Not a test module.  Every timing here is a *whole process* (interpreter start-up and imports
included), measured from outside: wall time with ``time.monotonic`` around ``wait4``, CPU
seconds as the delta of ``getrusage(RUSAGE_CHILDREN)`` (user + sys of the child and every
descendant it waited for), peak RSS as ``wait4``'s ``ru_maxrss`` (the largest single process of
the tree) and, sampled every 0.1 s, the sum of RSS over the live process tree.  Machine-wide
busy CPU seconds (``/proc/stat``) are recorded as well: on this machine the lab hosts share the
client's cores, so their work shows there and not in the client's CPU.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

ROOT = Path("/var/lib/runbook-lab-bench")          # every lab, venv and scratch file of the benches
CACHE = Path(os.environ.get("RUNBOOK_LAB_CACHE", "/var/lib/runbook-lab/cache"))   # shared, read-only use
RESULTS = HERE / "results"
PY = str(REPO / ".venv" / "bin" / "python")
ANSIBLE_VENV = ROOT / "ansible-venv"
#: the benches' networks: never 198.18.0-5.x (demo and tests) nor 198.18.240+ (lab_up/cloud_up)
NETS = {3: "198.18.20.0/24", 10: "198.18.21.0/24", 30: "198.18.22.0/24", 100: "198.18.23.0/24",
        "cloud": "198.18.24.0/24"}


def quiet(_message: str) -> None:
    """Swallow lab progress messages."""


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    def version(argv: Sequence[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    import fabric, paramiko  # noqa: E401
    return {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
            "mem_total_mib": int(Path("/proc/meminfo").read_text().split()[1]) // 1024,
            "fabric": fabric.__version__, "paramiko": paramiko.__version__,
            "openssh": subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip(),
            "ansible": version([str(ANSIBLE_VENV / "bin" / "ansible"), "--version"]) if ANSIBLE_VENV.exists() else None,
            "load_avg_at_start": os.getloadavg()}


# ------------------------------------------------------------------------------------ labs


def lab_up(n: int, net: str, lab_dir: Path, **kwargs: Any):
    from runbook_lib import lab
    lab.down(lab_dir=lab_dir, cache_dir=CACHE, echo=quiet)
    t = time.monotonic()
    info = lab.up(computes=n, mode="ns", net=net, lab_dir=lab_dir, cache_dir=CACHE, echo=quiet, **kwargs)
    return info, time.monotonic() - t


def lab_down(lab_dir: Path) -> None:
    from runbook_lib import lab
    lab.down(lab_dir=lab_dir, cache_dir=CACHE, echo=quiet)


# ------------------------------------------------------------------------- process timing


def _busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    return sum(values) - values[3] - values[4]      # minus idle and iowait


def _tree_rss_kib(root: int) -> int:
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            total += pages * (os.sysconf("SC_PAGE_SIZE") // 1024)
            for task in os.listdir(f"/proc/{pid}/task"):
                todo += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def measure(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: str | None = None,
            stdout_path: Path | None = None, timeout: float = 900) -> dict[str, Any]:
    """Run ``argv`` to completion; wall, client CPU, peak RSS, tree RSS, machine busy CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    jiffies0 = _busy_jiffies()
    out = open(stdout_path, "wb") if stdout_path else subprocess.DEVNULL
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out if stdout_path else subprocess.PIPE,
                            stderr=subprocess.PIPE)
    peak_tree = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.1):
            peak_tree[0] = max(peak_tree[0], _tree_rss_kib(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # drain pipes in threads so a chatty child never blocks on a full pipe
    captured: dict[str, bytes] = {}

    def drain(name: str, stream: Any) -> None:
        captured[name] = stream.read() if stream else b""

    readers = [threading.Thread(target=drain, args=("stderr", proc.stderr))]
    if not stdout_path:
        readers.append(threading.Thread(target=drain, args=("stdout", proc.stdout)))
    for r in readers:
        r.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    killer.cancel()
    done.set()
    for r in readers:
        r.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (_busy_jiffies() - jiffies0) / os.sysconf("SC_CLK_TCK")
    if stdout_path:
        out.close()
    return {"wall_s": wall, "rc": proc.returncode,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mib": usage.ru_maxrss / 1024, "tree_rss_mib": peak_tree[0] / 1024,
            "machine_busy_cpu_s": busy,
            "stdout": captured.get("stdout", b"").decode(errors="replace"),
            "stderr": captured.get("stderr", b"").decode(errors="replace")}


# ------------------------------------------------------------------------------ statistics


def med(values: Sequence[float]) -> float:
    return statistics.median(values)


def summary(values: Sequence[float], digits: int = 3) -> dict[str, float]:
    return {"median": round(med(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


# --------------------------------------------------------------------------------- Ansible


def ensure_ansible() -> Path:
    """ansible-core in its own venv (never the project's)."""
    ansible = ANSIBLE_VENV / "bin" / "ansible"
    if not ansible.exists():
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(ANSIBLE_VENV)], check=True)
        subprocess.run([str(ANSIBLE_VENV / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return ansible


def write_inventory(info: Any, path: Path) -> Path:
    """Every lab host by name with its address; root, the lab key, the lab's known_hosts (verified)."""
    lines = ["[all]"] + [f"{h.name} ansible_host={h.address}" for h in info.hosts]
    common = (f"-o UserKnownHostsFile={info.known_hosts} -o StrictHostKeyChecking=yes "
              f"-o GlobalKnownHostsFile=/dev/null")
    lines += ["", "[all:vars]", "ansible_user=root", f"ansible_ssh_private_key_file={info.key_file}",
              f"ansible_ssh_common_args='{common}'"]
    path.write_text("\n".join(lines) + "\n")
    return path


def ansible_env(control_dir: Path) -> dict[str, str]:
    """Ansible's defaults, except: its home and temp under ROOT, a fresh ControlPath dir ("cold")."""
    home = ROOT / "ansible-home"
    home.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
               ANSIBLE_SSH_CONTROL_PATH_DIR=str(control_dir), ANSIBLE_HOST_KEY_CHECKING="True",
               ANSIBLE_PYTHON_INTERPRETER="auto_silent", ANSIBLE_NOCOLOR="1",
               ANSIBLE_DEPRECATION_WARNINGS="False")
    return env


def close_control_masters(control_dir: Path) -> None:
    """Stop the ssh ControlPersist masters one ansible run left behind (outside the timings)."""
    if not control_dir.exists():
        return
    for sock in control_dir.iterdir():
        subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "placeholder"],
                       capture_output=True, timeout=10)
    shutil.rmtree(control_dir, ignore_errors=True)


def count_ok(stdout_file: Path, kind: str) -> int:
    """Hosts ansible reported as done (``| SUCCESS`` for setup, ``| CHANGED | rc=0`` for shell)."""
    text = stdout_file.read_text(errors="replace")
    marker = "| SUCCESS =>" if kind == "setup" else "| CHANGED | rc=0 >>"
    return sum(1 for line in text.splitlines() if marker in line)


def fresh_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix, dir=ROOT))
