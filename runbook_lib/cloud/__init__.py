"""The lab's cloud: a real OpenStack compute API (Keystone, Placement, Nova) for the runbooks.

Real: Keystone 30, Placement 16, nova-api, nova-conductor, nova-scheduler and nova-compute 34
(from PyPI, in their own venv), RabbitMQ and MariaDB (Debian).  Fake: the guests (Nova's fake virt
driver, sized per host).  Stand-ins, not the real services: Glance (one image) and Neutron (no
ports) answer only what Nova asks for port-less servers (:mod:`runbook_lib.cloud.standins`).

``runbook lab up`` brings the cloud up with the lab (``--no-cloud`` skips it) and writes
``<lab_dir>/clouds.yaml`` with the cloud ``lab``:

>>> from runbook_lib import cloud
>>> info = cloud.up()                                  # doctest: +SKIP
>>> conn = info.connect()                              # doctest: +SKIP
>>> [h.name for h in cloud.api.hypervisors(conn)]      # doctest: +SKIP
['compute1', 'compute2']
>>> cloud.down()                                       # doctest: +SKIP
"""

from runbook_lib.cloud.errors import (CloudAPIError, CloudError, CloudPrerequisiteError,
                                      CloudStartError)
from runbook_lib.cloud.layout import CLOUD_NAME, DEFAULT_SIZES, IMAGE_ID, ComputeSize
from runbook_lib.cloud.lifecycle import CloudInfo, CloudStatus, down, status, up

__all__ = [
    "up", "down", "status", "CloudInfo", "CloudStatus", "ComputeSize", "CLOUD_NAME",
    "DEFAULT_SIZES", "IMAGE_ID", "CloudError", "CloudAPIError", "CloudPrerequisiteError",
    "CloudStartError",
]
