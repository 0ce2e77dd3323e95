"""Running without privileges: switch user and drop every capability after opening sources.

Only opening a live capture handle needs a privilege (CAP_NET_RAW); reading
files and subscribing to ZeroMQ need none. So `run` opens its capture handles
first, then calls `drop_privileges` before any other thread exists and before
any decoder runs:

1. with a user (`--user NAME` / `wirebeat.user`): empty the capability
   bounding set (needs CAP_SETPCAP, which root has), then setgroups to NAME's
   groups, setresgid and setresuid to NAME, so real, effective and saved ids
   all change and the kernel clears the permitted and effective sets;
2. in every case where capabilities are held (also a non-root service given
   CAP_NET_RAW by systemd): clear the ambient set, set effective, permitted
   and inheritable to empty (capset), and set no_new_privs so no exec can
   regain anything;
3. check /proc/self/status: CapEff, CapPrm, CapInh and CapAmb are 0 and the
   ids are NAME's. Anything else raises PrivilegeError: the CLI refuses to
   run (exit 2) rather than decode with privileges it was told to shed.

Capabilities and prctl settings are per thread in Linux, hence "before any
other thread exists": `drop_privileges` checks that too.
"""
from __future__ import annotations

import importlib
import os
import pwd
import threading

__all__ = ["PrivilegeError", "PrivilegeState", "drop_privileges", "lookup_user", "read_state"]

PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class PrivilegeError(Exception):
    """The process could not become unprivileged as asked (the CLI exits 2)."""


class _Syscalls:
    """prctl(2) and capset(2) through ctypes, made at the first call of drop_privileges:
    a root run without a user to switch to never calls it, and importing ctypes is ~7 M
    instructions of start-up."""

    def __init__(self) -> None:
        import ctypes

        class CapHeader(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class CapData(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        libc.prctl.restype = ctypes.c_int
        libc.capset.argtypes = [ctypes.POINTER(CapHeader), ctypes.POINTER(CapData)]
        libc.capset.restype = ctypes.c_int
        self.prctl = libc.prctl
        self.get_errno = ctypes.get_errno
        self._capset, self._byref, self._header, self._data = libc.capset, ctypes.byref, CapHeader, CapData

    def clear_capabilities(self) -> int:
        """capset(2) with every set empty; 0 or -1 (errno in get_errno)."""
        header = self._header(_LINUX_CAPABILITY_VERSION_3, 0)
        data = (self._data * 2)()          # both 32-bit halves: everything empty
        return self._capset(self._byref(header), data)


_SYSCALLS: list[_Syscalls] = []


def _syscalls() -> _Syscalls:
    if not _SYSCALLS:
        _SYSCALLS.append(_Syscalls())
    return _SYSCALLS[0]


class PrivilegeState:
    """Ids and capability sets of this process, from /proc/self/status."""

    def __init__(self, status: dict[str, str]) -> None:
        self.uids = tuple(int(v) for v in status["Uid"].split()[:3])     # real, effective, saved
        self.gids = tuple(int(v) for v in status["Gid"].split()[:3])
        self.groups = tuple(int(v) for v in status.get("Groups", "").split())
        self.caps = {name: int(status.get(name, "0"), 16)
                     for name in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
        self.no_new_privs = status.get("NoNewPrivs", "0").strip() == "1"

    def holds_capabilities(self) -> bool:
        return any(self.caps[name] for name in ("CapInh", "CapPrm", "CapEff", "CapAmb"))


def read_state() -> PrivilegeState:
    status: dict[str, str] = {}
    with open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    return PrivilegeState(status)


def _prctl(option: int, arg: int = 0, what: str = "") -> None:
    calls = _syscalls()
    if calls.prctl(option, arg, 0, 0, 0) != 0:
        err = calls.get_errno()
        raise PrivilegeError(f"{what or 'prctl'}: {os.strerror(err)}")


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="utf-8") as fh:
            return int(fh.read())
    except (OSError, ValueError):
        return 63


def _clear_capabilities() -> None:
    # Ambient capabilities would survive an exec; clear them first (EINVAL: kernel < 4.3, none exist).
    calls = _syscalls()
    if calls.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 and calls.get_errno() != 22:
        raise PrivilegeError(f"clearing ambient capabilities: {os.strerror(calls.get_errno())}")
    if calls.clear_capabilities() != 0:
        raise PrivilegeError(f"dropping capabilities: {os.strerror(calls.get_errno())}")


# Modules the standard library imports lazily, on paths that run after the switch
# (host names are encoded with idna, which needs unicodedata and stringprep, ...), and
# those wirebeat imports at first use (traceback: logs.py, the first exception logged;
# resource: os.wait4's result, when the worker pool reaps its workers).
# They are imported before it: the new user may not be able to read the
# interpreter's library (a Python installed under /root, a venv in a private home).
_LATE_IMPORTS = ("encodings.idna", "encodings.punycode", "encodings.ascii", "encodings.latin_1", "encodings.utf_8",
                 "unicodedata", "stringprep", "http.client", "email.parser", "email.feedparser",
                 "json", "zlib", "gzip", "ssl", "uuid", "hashlib", "hmac", "base64", "socketserver",
                 "http.server", "urllib.parse", "urllib.request", "mimetypes", "queue", "select",
                 "selectors", "traceback", "linecache", "tokenize", "textwrap", "resource")


def _import_late_modules() -> None:
    for name in _LATE_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def lookup_user(user: str) -> pwd.struct_passwd:
    """The account to switch to. Raises PrivilegeError when there is none."""
    try:
        return pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"cannot switch to user {user!r}: no such user") from None


def drop_privileges(user: str | None) -> PrivilegeState:
    """Become `user` (if given) holding no capability at all; return the state reached.

    Raises PrivilegeError with one line saying what failed.
    """
    if threading.active_count() != 1:
        raise PrivilegeError("privileges must be dropped before any thread starts "
                             f"({threading.active_count()} threads running)")
    target = None
    if user:
        target = lookup_user(user)
        if os.getresuid() != (target.pw_uid,) * 3 or os.getresgid() != (target.pw_gid,) * 3:
            _switch_user(target)
    state = read_state()
    if state.holds_capabilities():
        _clear_capabilities()
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "setting no_new_privs")
    state = read_state()
    if state.holds_capabilities():
        raise PrivilegeError(f"capabilities still held after dropping them: {state.caps}")
    if target is not None and (state.uids != (target.pw_uid,) * 3
                               or state.gids != (target.pw_gid,) * 3):
        raise PrivilegeError(f"switch to user {user!r} incomplete: uids {state.uids}, gids {state.gids}")
    return state


def _switch_user(target: pwd.struct_passwd) -> None:
    name = target.pw_name
    if os.geteuid() != 0:
        raise PrivilegeError(f"cannot switch to user {name!r}: only root can (running as uid "
                             f"{os.geteuid()}); start as root or leave out --user / wirebeat.user")
    _import_late_modules()
    calls = _syscalls()
    # Empty the bounding set while we still hold CAP_SETPCAP: nothing can come back later.
    for cap in range(_last_capability() + 1):
        if calls.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and calls.get_errno() != 22:
            raise PrivilegeError(f"cannot drop capability {cap} from the bounding set: "
                                 f"{os.strerror(calls.get_errno())}")
    _prctl(PR_SET_KEEPCAPS, 0, "clearing keepcaps")     # setuid must clear the permitted set
    try:
        os.setgroups(os.getgrouplist(name, target.pw_gid))
        os.setresgid(target.pw_gid, target.pw_gid, target.pw_gid)
        os.setresuid(target.pw_uid, target.pw_uid, target.pw_uid)
    except OSError as err:
        raise PrivilegeError(f"cannot switch to user {name!r}: {err.strerror}") from None
