"""nova-compute with the fake virt driver sized from its config: installed into the services
venv as ``bin/rblab-nova-compute`` and run by each lab compute's service manager.

Nova loads virt drivers only from its own ``nova.virt`` package, so a lab-specific driver module
is not an option; the fake driver's inventory comes from class attributes instead.  This launcher
reads ``[rblab_fake_driver] vcpus/memory_mb/local_gb`` from the config files it is given (Nova
ignores that section), sets those attributes, and runs Nova's own ``nova-compute`` entry point
with the same arguments.

With ``compute_driver = libvirt.LibvirtDriver`` the fake driver's sizes do not matter; the
libvirt Python bindings (Debian's ``python3-libvirt``, unpacked into the lab's share, which every
lab host sees at ``/usr/local/lib/rblab/python``) are put at the end of ``sys.path`` when the venv
has none of its own.

Runs under the services venv's Python only (no ``runbook_lib`` import).
"""

import configparser
import sys

LIBVIRT_PYTHON = "/usr/local/lib/rblab/python"


def _config(argv: list[str]) -> configparser.RawConfigParser:
    files = [a.split("=", 1)[1] for a in argv if a.startswith("--config-file=")]
    files += [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--config-file"]
    parser = configparser.RawConfigParser(strict=False)   # repeated keys are fine in nova.conf
    for name in files:
        try:
            parser.read(name)
        except configparser.Error:
            continue        # oslo.config accepts more than configparser; Nova will judge it
    return parser


def _driver(argv: list[str]) -> str:
    return _config(argv).defaults().get("compute_driver", "")


def _sizes(argv: list[str]) -> dict[str, int]:
    parser = _config(argv)
    if not parser.has_section("rblab_fake_driver"):
        return {}
    return {key: parser.getint("rblab_fake_driver", key)
            for key in ("vcpus", "memory_mb", "local_gb")
            if parser.has_option("rblab_fake_driver", key)}


def main() -> int:
    import importlib.util

    # find_spec, not import: Nova imports libvirt itself, after its eventlet monkey-patching
    if (_driver(sys.argv[1:]).startswith("libvirt.")
            and importlib.util.find_spec("libvirt") is None):
        sys.path.append(LIBVIRT_PYTHON)
    from nova.cmd import compute   # first: applies Nova's eventlet monkey-patching decision
    from nova.virt import fake

    for attr, value in _sizes(sys.argv[1:]).items():
        setattr(fake.FakeDriver, attr, value)      # subclasses inherit them
    return compute.main()


if __name__ == "__main__":
    sys.exit(main())
