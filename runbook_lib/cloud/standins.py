#!/usr/bin/python3
"""Stand-ins for Glance (image API v2) and Neutron (network API v2.0): NOT the real services.

They answer only what Nova asks for servers booted with ``networks='none'`` and for their live
migrations, and log every request so the calls Nova makes stay visible:

* Glance stand-in: one public, active, raw image (:data:`IMAGE_ID`) and the image schema that
  glanceclient needs to tell base attributes from properties.  The fake virt driver never reads
  image data, so that image has none.  With an images file (5th argument, JSON written by the
  cloud when its computes run the libvirt driver), the stand-in also serves real images with
  their data (``GET /v2/images/{id}/file``, with ``Content-MD5``, ``checksum`` and a sha512
  ``os_hash_value`` as Glance gives them): the lab guest's kernel, ramdisk and machine image.
* Neutron stand-in: every collection (``/v2.0/ports``, ``/v2.0/networks``, ``/v2.0/extensions``,
  ...) is empty, which is what a real Neutron says about a server without ports.  Nova cannot run
  without a Neutron endpoint even for such servers: ``GET /servers/{id}`` and live migration
  both query ports.

This file runs as a script with only the standard library (``python3 standins.py ADDRESS
GLANCE_PORT NEUTRON_PORT LOGFILE [IMAGES_JSON]``), so it does not import ``runbook_lib``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

IMAGE_ID = "6c3e1ef6-5b6c-4a3b-9a86-3a9a4f2c1b01"
_NOW = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
IMAGE = {
    "id": IMAGE_ID, "name": "cirros-fake", "status": "active", "visibility": "public",
    "protected": False, "os_hidden": False, "disk_format": "raw", "container_format": "bare",
    "min_ram": 0, "min_disk": 0, "size": 1024, "virtual_size": None, "checksum": None,
    "os_hash_algo": None, "os_hash_value": None, "owner": None, "tags": [],
    "created_at": _NOW, "updated_at": _NOW, "self": f"/v2/images/{IMAGE_ID}",
    "file": f"/v2/images/{IMAGE_ID}/file", "schema": "/v2/schemas/image",
}
# glanceclient (through warlock) treats only the keys listed under "properties" as the image's
# base attributes; without "id" there, Nova fails with KeyError: 'id' in _get_image
IMAGE_SCHEMA = {"name": "image", "additionalProperties": {"type": "string"},
                "properties": {key: {} for key in IMAGE}, "links": []}
#: image id -> image record (base attributes and, at the top level as in Glance, properties)
IMAGES: dict[str, dict] = {IMAGE_ID: IMAGE}
#: image id -> (path of its data, MD5 as base64 for Content-MD5)
FILES: dict[str, tuple[str, str]] = {}


def load_images(path: str) -> None:
    """Add the images described in the JSON file ``path`` (a list of objects with ``id``,
    ``name``, ``disk_format``, ``container_format``, ``file`` and ``properties``)."""
    with open(path) as handle:
        described = json.load(handle)
    for spec in described:
        md5, sha512, size = hashlib.md5(), hashlib.sha512(), 0
        with open(spec["file"], "rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                md5.update(chunk)
                sha512.update(chunk)
                size += len(chunk)
        image = dict(IMAGE)
        image.update({
            "id": spec["id"], "name": spec["name"], "disk_format": spec["disk_format"],
            "container_format": spec["container_format"], "size": size,
            "virtual_size": size if spec["disk_format"] == "raw" else None,
            "checksum": md5.hexdigest(), "os_hash_algo": "sha512",
            "os_hash_value": sha512.hexdigest(), "self": f"/v2/images/{spec['id']}",
            "file": f"/v2/images/{spec['id']}/file",
        })
        # custom properties (kernel_id, ramdisk_id, os_command_line, ...) are not in the schema's
        # "properties", so glanceclient and Nova read them as image properties
        image.update({k: str(v) for k, v in spec.get("properties", {}).items()})
        IMAGES[spec["id"]] = image
        # glanceclient compares the hex digest of what it read with the Content-MD5 header
        FILES[spec["id"]] = (spec["file"], md5.hexdigest())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    service = "?"
    log = sys.stderr

    def log_message(self, fmt: str, *args: object) -> None:
        self.log.write(f"{time.strftime('%H:%M:%S')} {self.service}-standin {fmt % args}\n")
        self.log.flush()

    def _reply(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)            # keep-alive needs the body consumed
        code, body = self.route(self.command, urlparse(self.path).path.rstrip("/"))
        if code == 200 and "__file__" in body:
            self._send_file(*FILES[body["__file__"]])
        elif code == 204:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._reply(code, body)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def _send_file(self, path: str, md5: str) -> None:
        """Stream an image's data (keep-alive: the exact length is announced)."""
        size = os.path.getsize(path)
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Content-MD5", md5)        # glanceclient checks the data against it
        self.end_headers()
        if self.command == "HEAD":
            return
        with open(path, "rb") as data:
            for chunk in iter(lambda: data.read(1 << 16), b""):
                self.wfile.write(chunk)

    def route(self, method: str, path: str) -> tuple[int, dict]:
        raise NotImplementedError


class GlanceStandin(_Handler):
    """Image API v2 with a single image."""

    service = "glance"

    def route(self, method: str, path: str) -> tuple[int, dict]:
        host = self.headers.get("Host", "")
        if path in ("", "/versions"):
            return 200, {"versions": [{"id": "v2.16", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"http://{host}/v2/"}]}]}
        if method != "GET":
            return 403, {"message": "the Glance stand-in is read-only"}
        if path == "/v2/schemas/image":
            return 200, IMAGE_SCHEMA
        if path == "/v2/images":
            return 200, {"images": list(IMAGES.values()), "schema": "/v2/schemas/images",
                         "first": "/v2/images"}
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["v2", "images"] and parts[2] in IMAGES:
            return 200, IMAGES[parts[2]]
        if len(parts) == 4 and parts[:2] == ["v2", "images"] and parts[3] == "file":
            if parts[2] in FILES:
                return 200, {"__file__": parts[2]}
            if parts[2] in IMAGES:
                return 204, {}             # Glance: an image without data answers 204
        return 404, {"message": "not found (Glance stand-in)"}


class NeutronStandin(_Handler):
    """Network API v2.0 where every collection is empty."""

    service = "neutron"

    def route(self, method: str, path: str) -> tuple[int, dict]:
        host = self.headers.get("Host", "")
        path = path.removesuffix(".json")
        if path in ("", "/v2.0"):
            return 200, {"versions": [{"id": "v2.0", "status": "CURRENT",
                                       "links": [{"rel": "self", "href": f"http://{host}/v2.0/"}]}]}
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 2 and parts[0] == "v2.0":
            return 200, {parts[1]: []}
        return 404, {"NeutronError": {"type": "NotFound", "detail": "",
                                      "message": "not found (Neutron stand-in)"}}


def main(argv: list[str]) -> None:
    """``standins.py ADDRESS GLANCE_PORT NEUTRON_PORT LOGFILE [IMAGES_JSON]``"""
    if len(argv) not in (5, 6):
        raise SystemExit("usage: standins.py ADDRESS GLANCE_PORT NEUTRON_PORT LOGFILE "
                         "[IMAGES_JSON]")
    address, glance_port, neutron_port, log = argv[1], int(argv[2]), int(argv[3]), argv[4]
    if len(argv) == 6:
        load_images(argv[5])
    _Handler.log = open(log, "a", buffering=1)
    servers = [ThreadingHTTPServer((address, glance_port), GlanceStandin),
               ThreadingHTTPServer((address, neutron_port), NeutronStandin)]
    for server in servers:
        server.daemon_threads = True
    threading.Thread(target=servers[1].serve_forever, daemon=True).start()
    servers[0].serve_forever()


if __name__ == "__main__":
    main(sys.argv)
