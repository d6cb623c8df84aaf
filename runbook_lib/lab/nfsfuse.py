#!/usr/bin/python3
"""A user-space NFS client for lab hosts: libnfs does the RPCs, FUSE makes it a mount.

This machine's kernel has no NFS client, yet the runbook must be able to ``mount -t nfs`` and
write ``nfs`` lines into ``/etc/fstab``.  Inside lab hosts, ``/usr/sbin/mount.nfs`` is this
program (through a two-line wrapper), so ``mount`` and ``mount -a`` work unchanged; the result is
a mount of type ``fuse.rblab-nfs`` whose every operation is a real NFS RPC to the server.

Every RPC carries the calling process's uid and gid (AUTH_SYS), so the server decides ownership
and permissions exactly as for a kernel client — and a nova uid that differs between computes
shows up as it would in production.

Runs under the host's ``/usr/bin/python3`` with Debian's ``python3-fusepy`` and ``libnfs13``;
standard library otherwise (no ``runbook_lib`` import).

Usage::

    nfsfuse.py mount SERVER:/EXPORT DIR [-o OPTIONS]   # as mount.nfs: start, wait, return
    nfsfuse.py serve SERVER:/EXPORT DIR [-o OPTIONS]   # run the FUSE client in the foreground

Options understood: ``vers=3|4`` / ``nfsvers=``; others (``rw``, ``defaults``, ...) are accepted
and ignored.  One libnfs context is not thread-safe, so the FUSE loop is single-threaded.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import stat
import subprocess
import sys
import time

try:                                    # Debian's python3-fusepy
    from fusepy import FUSE, FuseOSError, Operations, fuse_get_context
except ImportError:
    try:                                # fusepy from PyPI
        from fuse import FUSE, FuseOSError, Operations, fuse_get_context
    except ImportError:                 # imported for its pure helpers (tests): no FUSE here
        FUSE = fuse_get_context = None
        Operations = object

        class FuseOSError(OSError):
            """Stand-in with fusepy's signature."""

            def __init__(self, err: int) -> None:
                super().__init__(err, os.strerror(err))

FSTYPE = "rblab-nfs"
LOG = "/var/log/rblab-nfsfuse.log"
UNCHANGED = 0xFFFFFFFF                  # chown(2)'s "leave this id alone"

_U64 = ctypes.c_uint64


class _Stat(ctypes.Structure):
    """libnfs ``struct nfs_stat_64``."""

    _fields_ = [(name, _U64) for name in (
        "dev", "ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blksize", "blocks",
        "atime", "mtime", "ctime", "atime_nsec", "mtime_nsec", "ctime_nsec", "used")]


class _StatVfs(ctypes.Structure):
    """libnfs ``struct nfs_statvfs_64``."""

    _fields_ = [(name, _U64) for name in (
        "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
        "f_favail", "f_fsid", "f_flag", "f_namemax")]


class _Dirent(ctypes.Structure):
    """The first two members of libnfs ``struct nfsdirent`` (all we read)."""

    _fields_ = [("next", ctypes.c_void_p), ("name", ctypes.c_char_p)]


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


_P, _S, _I, _V = ctypes.POINTER, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p
#: the synchronous libnfs 4 calls we use: name -> (result type, argument types)
_PROTOTYPES = {
    "nfs_init_context": (_V, []), "nfs_destroy_context": (None, [_V]),
    "nfs_get_error": (_S, [_V]), "nfs_mount": (_I, [_V, _S, _S]),
    "nfs_set_version": (_I, [_V, _I]), "nfs_set_timeout": (None, [_V, _I]),
    "nfs_set_uid": (None, [_V, _I]), "nfs_set_gid": (None, [_V, _I]),
    "nfs_lstat64": (_I, [_V, _S, _P(_Stat)]), "nfs_statvfs64": (_I, [_V, _S, _P(_StatVfs)]),
    "nfs_opendir": (_I, [_V, _S, _P(_V)]), "nfs_readdir": (_P(_Dirent), [_V, _V]),
    "nfs_closedir": (None, [_V, _V]),
    "nfs_open": (_I, [_V, _S, _I, _P(_V)]), "nfs_create": (_I, [_V, _S, _I, _I, _P(_V)]),
    "nfs_close": (_I, [_V, _V]), "nfs_fsync": (_I, [_V, _V]),
    "nfs_pread": (_I, [_V, _V, _U64, _U64, _V]), "nfs_pwrite": (_I, [_V, _V, _U64, _U64, _V]),
    "nfs_truncate": (_I, [_V, _S, _U64]), "nfs_ftruncate": (_I, [_V, _V, _U64]),
    "nfs_mkdir2": (_I, [_V, _S, _I]), "nfs_rmdir": (_I, [_V, _S]),
    "nfs_unlink": (_I, [_V, _S]), "nfs_rename": (_I, [_V, _S, _S]),
    "nfs_link": (_I, [_V, _S, _S]), "nfs_symlink": (_I, [_V, _S, _S]),
    "nfs_readlink": (_I, [_V, _S, _S, _I]), "nfs_chmod": (_I, [_V, _S, _I]),
    "nfs_lchown": (_I, [_V, _S, _I, _I]), "nfs_utimes": (_I, [_V, _S, _P(_Timeval)]),
    "nfs_access": (_I, [_V, _S, _I]),
}


def _load_libnfs() -> ctypes.CDLL:
    lib = ctypes.CDLL(ctypes.util.find_library("nfs") or "libnfs.so.13", use_errno=True)
    for name, (restype, argtypes) in _PROTOTYPES.items():
        func = getattr(lib, name)
        func.restype, func.argtypes = restype, argtypes
    return lib


class NfsSession:
    """One mounted libnfs context; :meth:`call` turns libnfs's ``-errno`` results into errors."""

    def __init__(self, server: str, export: str, version: int = 3) -> None:
        self.lib = _load_libnfs()
        self.ctx = self.lib.nfs_init_context()
        if not self.ctx:
            raise OSError(errno.ENOMEM, "nfs_init_context failed")
        self.lib.nfs_set_timeout(self.ctx, 30000)
        if version != 3:
            self.lib.nfs_set_version(self.ctx, version)
        if self.lib.nfs_mount(self.ctx, server.encode(), export.encode()) != 0:
            message = (self.lib.nfs_get_error(self.ctx) or b"unknown error").decode()
            raise OSError(errno.EIO, f"cannot mount {server}:{export}: {message}")

    def as_caller(self, uid: int, gid: int) -> None:
        """Send the next RPCs with these AUTH_SYS credentials."""
        self.lib.nfs_set_uid(self.ctx, uid)
        self.lib.nfs_set_gid(self.ctx, gid)

    def call(self, name: str, *args) -> int:
        """Call ``nfs_<name>(ctx, *args)``; raise :class:`FuseOSError` on a negative result.

        ``EAGAIN`` (NFS3ERR_JUKEBOX / NFS4ERR_GRACE: a server in its grace period after a
        restart) is retried for up to two minutes, as the kernel's NFS client does, instead of
        failing the caller.
        """
        func = getattr(self.lib, f"nfs_{name}")
        deadline = time.monotonic() + 120
        delay = 0.2
        while True:
            result = func(self.ctx, *args)
            if isinstance(result, int) and result == -errno.EAGAIN and time.monotonic() < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if isinstance(result, int) and result < 0:
                raise FuseOSError(-result)
            return result


def _b(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


class NfsFilesystem(Operations):
    """FUSE operations, each mapped onto one (or a few) synchronous libnfs calls."""

    def __init__(self, session: NfsSession) -> None:
        self.nfs = session
        self.handles: dict[int, int] = {}
        self._next = 0

    def __call__(self, op, *args):
        uid, gid, _pid = fuse_get_context()
        self.nfs.as_caller(uid, gid)
        return super().__call__(op, *args)

    # -- metadata
    def getattr(self, path, fh=None):
        st = _Stat()
        self.nfs.call("lstat64", _b(path), ctypes.byref(st))
        return {
            "st_mode": st.mode, "st_ino": st.ino, "st_nlink": st.nlink, "st_uid": st.uid,
            "st_gid": st.gid, "st_size": st.size, "st_blocks": st.blocks, "st_rdev": st.rdev,
            "st_atime": st.atime + st.atime_nsec / 1e9, "st_mtime": st.mtime + st.mtime_nsec / 1e9,
            "st_ctime": st.ctime + st.ctime_nsec / 1e9,
        }

    def access(self, path, amode):
        self.nfs.call("access", _b(path), amode)
        return 0

    def statfs(self, path):
        sv = _StatVfs()
        self.nfs.call("statvfs64", _b(path), ctypes.byref(sv))
        return {name: getattr(sv, name) for name, _ in _StatVfs._fields_
                if name not in ("f_fsid", "f_flag")}

    def chmod(self, path, mode):
        return self.nfs.call("chmod", _b(path), stat.S_IMODE(mode))

    def chown(self, path, uid, gid):
        if UNCHANGED in (uid, gid):
            current = self.getattr(path)
            uid = current["st_uid"] if uid == UNCHANGED else uid
            gid = current["st_gid"] if gid == UNCHANGED else gid
        return self.nfs.call("lchown", _b(path), uid, gid)

    def utimens(self, path, times=None):
        if times is None:
            return self.nfs.call("utimes", _b(path), None)
        pair = (_Timeval * 2)(*(_Timeval(int(t), int(round((t % 1) * 1e6))) for t in times))
        return self.nfs.call("utimes", _b(path), pair)

    # -- directories and names
    def readdir(self, path, fh):
        handle = ctypes.c_void_p()
        self.nfs.call("opendir", _b(path), ctypes.byref(handle))
        names = []
        try:
            while True:
                entry = self.nfs.lib.nfs_readdir(self.nfs.ctx, handle)
                if not entry:
                    break
                names.append(entry.contents.name.decode("utf-8", "surrogateescape"))
        finally:
            self.nfs.lib.nfs_closedir(self.nfs.ctx, handle)
        return names

    def mkdir(self, path, mode):
        return self.nfs.call("mkdir2", _b(path), stat.S_IMODE(mode))

    def rmdir(self, path):
        return self.nfs.call("rmdir", _b(path))

    def unlink(self, path):
        return self.nfs.call("unlink", _b(path))

    def rename(self, old, new):
        return self.nfs.call("rename", _b(old), _b(new))

    def link(self, target, source):
        return self.nfs.call("link", _b(source), _b(target))

    def symlink(self, target, source):
        return self.nfs.call("symlink", _b(source), _b(target))

    def readlink(self, path):
        buf = ctypes.create_string_buffer(4096)
        self.nfs.call("readlink", _b(path), buf, len(buf))
        return buf.value.decode("utf-8", "surrogateescape")

    # -- file contents
    def _keep(self, handle: ctypes.c_void_p) -> int:
        self._next += 1
        self.handles[self._next] = handle
        return self._next

    def open(self, path, flags):
        handle = ctypes.c_void_p()
        wanted = flags & (os.O_ACCMODE | os.O_APPEND | os.O_TRUNC | os.O_SYNC)
        self.nfs.call("open", _b(path), wanted, ctypes.byref(handle))
        return self._keep(handle)

    def create(self, path, mode, fi=None):
        handle = ctypes.c_void_p()
        self.nfs.call("create", _b(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC,
                      stat.S_IMODE(mode), ctypes.byref(handle))
        return self._keep(handle)

    def read(self, path, size, offset, fh):
        buf = ctypes.create_string_buffer(size)
        got = self.nfs.call("pread", self.handles[fh], offset, size, buf)
        return buf.raw[:got]

    def write(self, path, data, offset, fh):
        return self.nfs.call("pwrite", self.handles[fh], offset, len(data), data)

    def truncate(self, path, length, fh=None):
        if fh in self.handles:
            return self.nfs.call("ftruncate", self.handles[fh], length)
        return self.nfs.call("truncate", _b(path), length)

    def fsync(self, path, datasync, fh):
        return self.nfs.call("fsync", self.handles[fh])

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        handle = self.handles.pop(fh, None)
        if handle is not None:
            self.nfs.lib.nfs_close(self.nfs.ctx, handle)
        return 0


def parse_args(argv: list[str]) -> tuple[str, str, str, dict[str, str]]:
    """``[mount|serve] SPEC DIR [-o a=b,c]`` -> (server, export, directory, options)."""
    if len(argv) < 2:
        raise SystemExit(f"usage: {os.path.basename(sys.argv[0])} SERVER:/EXPORT DIR [-o OPTIONS]")
    spec, directory, rest = argv[0], argv[1], argv[2:]
    options: dict[str, str] = {}
    while rest:
        flag = rest.pop(0)
        if flag == "-o" and rest:
            for item in rest.pop(0).split(","):
                key, _, value = item.partition("=")
                options[key] = value
        # mount(8) may also pass -s, -f, -n, -v, -r, -w, -N: accepted, no meaning here
    if spec.startswith("nfs://"):
        server, _, export = spec[len("nfs://"):].partition("/")
        export = "/" + export
    else:
        server, sep, export = spec.partition(":")
        if not sep or not export.startswith("/"):
            raise SystemExit(f"mount.nfs: {spec!r} is not SERVER:/EXPORT")
    return server, export, os.path.abspath(directory), options


def _mounted(directory: str) -> bool:
    with open("/proc/self/mounts") as mounts:
        return any(line.split()[1] == directory and line.split()[2] == f"fuse.{FSTYPE}"
                   for line in mounts)


def serve(argv: list[str]) -> None:
    """Run the client in the foreground until the mount is unmounted."""
    server, export, directory, options = parse_args(argv)
    if FUSE is None:
        raise SystemExit(f"{FSTYPE}: needs fusepy (Debian package python3-fusepy)")
    version = int(options.get("vers") or options.get("nfsvers") or 3)
    try:
        session = NfsSession(server, export, version)
    except OSError as exc:
        raise SystemExit(f"{FSTYPE}: {exc.strerror}") from None
    # nonempty: like a kernel NFS mount, cover whatever the directory holds (a compute that ran
    # guests on local disk keeps _base/ and locks/ in its instances dir); libfuse2 refuses
    # otherwise ("fuse: mountpoint is not empty")
    FUSE(NfsFilesystem(session), directory, foreground=True, nothreads=True, allow_other=True,
         nonempty=True, fsname=f"{server}:{export}", subtype=FSTYPE, attr_timeout=1,
         entry_timeout=1)


def mount(argv: list[str]) -> int:
    """mount.nfs behaviour: start :func:`serve` detached, return once the mount is there."""
    _server, _export, directory, _options = parse_args(argv)
    if not os.path.isdir(directory):
        print(f"mount.nfs: mount point {directory} does not exist", file=sys.stderr)
        return 32
    with open(LOG, "a") as log:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "serve", *argv],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if _mounted(directory):
            return 0
        if child.poll() is not None:
            break
        time.sleep(0.05)
    print(f"mount.nfs: mounting {argv[0]} on {directory} failed; see {LOG}", file=sys.stderr)
    with open(LOG) as log:
        sys.stderr.writelines(log.readlines()[-3:])
    return 32


def main(argv: list[str]) -> int:
    """``nfsfuse.py mount|serve ...``"""
    if argv and argv[0] == "serve":
        serve(argv[1:])
        return 0
    if argv and argv[0] == "mount":
        return mount(argv[1:])
    return mount(argv)           # called directly as mount.nfs


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
