"""Keeps the cluster test's Ray nodes on 127.0.0.1: every Python process the test starts has this folder on
``PYTHONPATH``, so Python imports this module at start-up.

A second node needs ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=1``, and with it Ray (2.60) replaces 127.0.0.1 in
``--node-ip-address`` and ``--address`` by the machine's own address (``services.resolve_ip_for_localhost``,
the only place that does); its servers then listen on every interface. Given exactly 127.0.0.1 they listen on
loopback alone. This keeps 127.0.0.1 as given, patched when Ray imports ``ray._private.services`` (a process
that never imports Ray is not touched and does not import it).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys

_SERVICES = "ray._private.services"


def _keep_loopback(services) -> None:
    resolve = services.resolve_ip_for_localhost

    def resolve_ip_for_localhost(host: str) -> str:
        return host if host == "127.0.0.1" else resolve(host)

    services.resolve_ip_for_localhost = resolve_ip_for_localhost


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != _SERVICES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module) -> None:
            exec_module(module)
            _keep_loopback(module)

        spec.loader.exec_module = exec_and_patch  # this module's own loader object
        return spec


sys.meta_path.insert(0, _PatchOnImport())
