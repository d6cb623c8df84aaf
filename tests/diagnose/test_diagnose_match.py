"""Real log formats in, one match per occurrence out."""

from __future__ import annotations

import json
from pathlib import Path

from runbook_lib.diagnose import diagnose_text
from runbook_lib.diagnose.logparse import parse_line

FIXTURES = Path(__file__).parent / "fixtures"
UUID = "8267c51a-c826-4c54-b277-a0e95e6fecc1"
ERR = ("operation failed: Failed to connect to remote libvirt URI qemu+tcp://compute2/system: "
       "unable to connect to server at 'compute2:16509': Connection refused")


def test_a_line_matching_nothing_yields_nothing() -> None:
    assert diagnose_text("2024-05-01 10:00:00.001 2145 INFO nova.compute.manager [-] Took 3.2 seconds to build") == []
    assert diagnose_text("") == []
    assert diagnose_text("too many open files") == []


def test_oslo_prefix_is_parsed() -> None:
    line = parse_line(
        f"2024-05-01 10:00:05.123 2145 ERROR nova.virt.libvirt.driver [req-3f1c2a9e-8a43-4d4c-9d5e-2b8f3e1c7a10 - - - - -] "
        f"[instance: {UUID}] Live Migration failure: x"
    )
    assert (line.level, line.logger, line.pid, line.instance) == ("ERROR", "nova.virt.libvirt.driver", "2145", UUID)
    assert line.request_id == "req-3f1c2a9e-8a43-4d4c-9d5e-2b8f3e1c7a10"
    assert line.message == "Live Migration failure: x"
    assert line.timestamp == "2024-05-01T10:00:05.123"


def test_oslo_traceback_with_repeated_prefixes_is_one_match_per_occurrence() -> None:
    prefix = f"2024-05-01 10:00:05.126 2145 ERROR nova.virt.libvirt.driver [instance: {UUID}]"
    text = "\n".join([
        f"2024-05-01 10:00:05.126 2145 WARNING nova.virt.libvirt.driver [-] [instance: {UUID}] Error monitoring migration: {ERR}: libvirt.libvirtError: {ERR}",
        f"{prefix} Traceback (most recent call last):",
        f'{prefix}   File "/usr/lib/python3/dist-packages/libvirt.py", line 1745, in migrateToURI3',
        f"{prefix}     raise libvirtError('virDomainMigrateToURI3() failed')",
        f"{prefix} libvirt.libvirtError: {ERR}",
        # the same failure, an hour later: a second occurrence
        f"2024-05-01 11:00:05.126 2145 ERROR nova.virt.libvirt.driver [-] [instance: {UUID}] Live Migration failure: {ERR}",
    ])
    matches = diagnose_text(text, "nova-compute.log")
    assert [(m.signature, m.lineno) for m in matches] == [
        ("libvirtd-port-connection-refused", 1),
        ("libvirtd-port-connection-refused", 6),
    ]
    assert matches[0].instance == UUID and matches[0].timestamp == "2024-05-01T10:00:05.126"
    assert matches[0].line.startswith("Error monitoring migration: operation failed")


def test_merge_window_zero_reports_every_record() -> None:
    text = "\n".join([
        f"2024-05-01 10:00:05.123 2145 ERROR nova.virt.libvirt.driver [-] [instance: {UUID}] Live Migration failure: {ERR}",
        f"2024-05-01 10:00:05.126 2145 WARNING nova.virt.libvirt.driver [-] [instance: {UUID}] Error monitoring migration: {ERR}",
    ])
    assert len(diagnose_text(text)) == 1
    assert len(diagnose_text(text, merge_window=0)) == 2


def test_bare_traceback_reports_the_exception_line_once() -> None:
    text = "\n".join([
        "Traceback (most recent call last):",
        '  File "/usr/lib/python3/dist-packages/nova/conductor/manager.py", line 516, in _live_migrate',
        "    task.execute()",
        "nova.exception.InvalidSharedStorage: compute1 is not on shared storage: Shared storage live-migration requires either shared storage or boot-from-volume with no local disks.",
        "",
        "During handling of the above exception, another exception occurred:",
        "",
        "Traceback (most recent call last):",
        '  File "/usr/lib/python3/dist-packages/oslo_messaging/rpc/server.py", line 174, in _process_incoming',
        "nova.exception.InvalidSharedStorage: compute1 is not on shared storage: Shared storage live-migration requires either shared storage or boot-from-volume with no local disks.",
        "virsh: error: Unsafe migration: Migration without shared storage is unsafe",
    ])
    matches = diagnose_text(text)
    assert [(m.signature, m.lineno) for m in matches] == [
        ("nova-invalid-shared-storage", 4),
        ("libvirt-unsafe-migration-no-shared-storage", 11),
    ]
    assert matches[0].timestamp is None and matches[0].host is None


def test_multi_line_oslo_message_continues_over_bare_lines() -> None:
    text = "\n".join([
        "2024-05-01 10:00:02.311 2210 ERROR nova.virt.libvirt.driver [req-3f1c2a9e-8a43-4d4c-9d5e-2b8f3e1c7a10 - - - - -] CPU doesn't have compatibility.",
        "",
        "0",
        "",
        "Refer to http://libvirt.org/html/libvirt-libvirt-host.html#virCPUCompareResult",
        "nova.exception.InvalidCPUInfo: Unacceptable CPU info: CPU doesn't have compatibility.",
    ])
    assert [m.signature for m in diagnose_text(text)] == ["nova-cpu-no-compatibility"]


def test_journal_short_iso_and_syslog_lines_give_host_and_time() -> None:
    text = "\n".join([
        "2024-05-01T09:30:12+0000 compute2 libvirtd[580770]: --listen parameter not permitted with systemd activation sockets, see 'man libvirtd' for further guidance",
        "Jan 11 18:28:18 base-pvg.redhat.ren libvirtd[25283]: 2021-01-11 10:28:18.110+0000: 25288: error : virCPUx86Compare:1785 : the CPU is incompatible with host CPU: Host CPU does not provide required features: xsave, avx",
    ])
    first, second = diagnose_text(text, "journal")
    assert (first.signature, first.host, first.timestamp) == ("libvirtd-listen-with-socket-activation", "compute2", "2024-05-01T09:30:12+00:00")
    assert first.line.startswith("--listen parameter")
    assert (second.signature, second.host) == ("libvirt-cpu-incompatible-with-host", "base-pvg.redhat.ren")
    # the year-less syslog time yields to the libvirt prefix's full time
    assert second.timestamp == "2021-01-11T10:28:18.110+00:00"
    assert second.line.startswith("the CPU is incompatible")


def test_journal_json_export() -> None:
    entries = [
        {"__REALTIME_TIMESTAMP": "1714557605123456", "_HOSTNAME": "compute1", "SYSLOG_IDENTIFIER": "nova-compute", "_PID": "2145",
         "MESSAGE": f"2024-05-01 10:00:05.123 2145 ERROR nova.virt.libvirt.driver [-] [instance: {UUID}] Live Migration failure: {ERR}"},
        {"__REALTIME_TIMESTAMP": "1714557606000000", "_HOSTNAME": "compute2", "SYSLOG_IDENTIFIER": "libvirtd", "_PID": "812",
         "MESSAGE": list(b"Cannot read CA certificate '/etc/pki/CA/cacert.pem': No such file or directory")},
        {"__REALTIME_TIMESTAMP": "1714557607000000", "_HOSTNAME": "compute2", "SYSLOG_IDENTIFIER": "systemd", "MESSAGE": "Started libvirtd.service."},
    ]
    matches = diagnose_text("\n".join(json.dumps(e) for e in entries), "journal.json")
    assert [(m.signature, m.host, m.lineno) for m in matches] == [
        ("libvirtd-port-connection-refused", "compute1", 1),
        ("libvirt-tls-ca-certificate-missing", "compute2", 2),
    ]
    assert matches[0].timestamp == "2024-05-01T10:00:05.123+00:00"
    assert matches[0].instance == UUID
    assert matches[0].line.startswith("Live Migration failure:")


def test_libvirt_log_prefix_and_qemu_log() -> None:
    text = "\n".join([
        "2024-05-01 10:00:02.301+0000: 812: error : virNetSocketReadWire:1808 : End of file while reading data: Input/output error",
        "2024-05-01 10:00:04.100+0000: starting up libvirt version: 8.0.0, qemu version: 6.2.0, hostname: compute2",
        "2024-05-01T10:00:04.912334Z qemu-system-x86_64: -vnc 192.0.2.11:0: Failed to start VNC server: Failed to bind socket: Cannot assign requested address",
        "2024-05-01 10:00:04.950+0000: shutting down, reason=failed",
    ])
    matches = diagnose_text(text, "instance-0000002a.log", host="compute2")
    assert [(m.signature, m.lineno, m.host) for m in matches] == [
        ("libvirt-eof-reading-data", 1, "compute2"),
        ("qemu-vnc-bind-failed", 3, "compute2"),
    ]
    assert matches[0].line == "End of file while reading data: Input/output error"
    assert matches[1].timestamp == "2024-05-01T10:00:04.912+00:00"
    assert matches[1].line.startswith("qemu-system-x86_64: -vnc")


def test_ansi_colour_codes_from_the_journal_are_ignored() -> None:
    line = ("Jul 11 18:10:59 np0004787595 nova_compute[129891]: 2024-07-11 22:10:59.946 2 ERROR nova.virt.libvirt.driver [-] "
            "[instance: 7b7edae6-f878-4756-a858-86f836d02c33] Live Migration failure: operation failed: domain is not running#033[00m")
    (match,) = diagnose_text(line)
    assert match.signature == "libvirt-domain-not-running" and not match.line.endswith("m")


def test_multi_source_bundle_gives_exactly_the_expected_matches() -> None:
    bundle = FIXTURES / "bundle"
    found = []
    for path in sorted(bundle.iterdir()):
        found += [(path.name, m.signature, m.lineno, m.host, m.instance) for m in diagnose_text(path.read_text(), path.name)]
    assert found == [
        ("libvirtd-destination.journal", "libvirtd-listen-with-socket-activation", 2, "compute2", None),
        ("nova-compute-source.log", "libvirtd-port-connection-refused", 2, None, UUID),
        ("nova-compute-source.log", "libvirtd-port-connection-refused", 16, None, UUID),
        ("nova-conductor.log", "nova-cpu-no-compatibility", 2, None, UUID),
    ]
