"""WSGI application factories for gunicorn: ``gunicorn 'wsgi_apps:keystone()'`` and so on.

Copied next to the generated configs and imported by gunicorn in the services venv (no
``runbook_lib`` import).  Keystone, Placement and nova-api parse ``sys.argv`` with oslo.config
when their application is built, and fail on gunicorn's own arguments ("unrecognized
arguments: -b ..."), so each factory hides them first.
"""

import sys


def _hide_gunicorn_argv() -> None:
    del sys.argv[1:]


def keystone():
    """Keystone's public API (config: ``$OS_KEYSTONE_CONFIG_FILES``)."""
    _hide_gunicorn_argv()
    from keystone.wsgi.api import application
    return application


def placement():
    """Placement's API (config: ``$OS_PLACEMENT_CONFIG_DIR/placement.conf``)."""
    _hide_gunicorn_argv()
    from placement.wsgi.api import application
    return application


def nova_api():
    """nova-api, the compute API (config: ``$OS_NOVA_CONFIG_DIR`` + ``$OS_NOVA_CONFIG_FILES``)."""
    _hide_gunicorn_argv()
    from nova.wsgi.osapi_compute import application
    return application
