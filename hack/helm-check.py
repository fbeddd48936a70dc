#!/usr/bin/env python3
"""Checks the Helm chart charts/signet with Helm's own Go library, through PyPI's helm-sdkpy.

    pip install --ignore-requires-python helm-sdkpy==0.1.32 pyyaml==6.0.3
    python3 hack/helm-check.py [--signet-bin target/debug/signet]

What it does:

(a) Lint (helm-sdkpy `Lint`, Helm's `helm lint`): once with the chart's default values, where
    the empty `trustDomain` must be reported as an error, and once with `trustDomain` set, where
    it must report nothing at warning level or above (`helm lint --strict`). `Lint` takes no
    values, so that run lints a copy of the chart whose values.yaml sets `trustDomain`.

(b) Render and assert. helm-sdkpy has no `helm template`, no dry-run and no client-only
    install. It does have `Install` and `Upgrade`, which run Helm's real code paths: schema
    validation of the values, template rendering, NOTES, mapping every kind through API
    discovery, creating or patching the objects, then the hooks (the chart has none). So each
    render is an `Install` against a small fake Kubernetes API server started by this script on
    127.0.0.1, with `HELM_DRIVER=memory` so no release Secret is written. The fake keeps what is
    written to it in memory and serves the kinds of the CRDs created through it from then on,
    like a real one. It answers get, list and watch, validates custom resources against their
    CRD's schema, and logs every write in order. An `Upgrade` on the same server and
    Configuration (one in-memory release storage) shows what an upgrade writes. The manifest and
    notes come back in the release; the script parses them and asserts on the objects and on
    what reached the API.

    The default fallback ClusterSPIFFEID is not a chart object: the server's leader applies it
    (`--default-identity-template`, `--default-identity-name`). The checks assert that Helm
    writes no ClusterSPIFFEID, that the template reaches the server process literally (YAML
    quoting, and Kubernetes' `$(VAR)` expansion of container args, applied here as the kubelet
    does), that the object the server would apply is valid against the CRD, and that the
    server's RBAC allows exactly that name.

(c) Exits 1 with the failed checks listed when anything fails, 2 when a dependency is missing.

Also checked without Helm: charts/signet/files/crds/* are byte-for-byte copies of crds/*, and
every key path of values.yaml is described in values.schema.json. With --signet-bin (or
SIGNET_BIN) every `--flag` the templates pass to `signet server|agent|csi` must appear in that
binary's `--help`, and the binary must accept the default identity flags the chart passes (it
checks them before contacting the API server).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

# Helm's storage driver comes from HELM_DRIVER, and the discovery cache directory of the helm
# CLI's client (see Cluster) from KUBECACHEDIR. The library's Go runtime reads the environment
# the process started with (not later os.environ changes), so re-run with them set.
if os.environ.get("HELM_DRIVER") != "memory" or not os.environ.get("HELM_CHECK_TMP"):
    os.environ["HELM_DRIVER"] = "memory"
    os.environ["HELM_CHECK_TMP"] = tempfile.mkdtemp(prefix="helm-check-")
    os.environ["KUBECACHEDIR"] = os.path.join(os.environ["HELM_CHECK_TMP"], "kube-cache")
    os.execv(sys.executable, [sys.executable, *sys.argv])
TMP = Path(os.environ["HELM_CHECK_TMP"])
atexit.register(shutil.rmtree, TMP, ignore_errors=True)

try:
    import yaml
except ImportError:  # pragma: no cover - reported to the user
    print("hack/helm-check.py needs PyYAML: pip install pyyaml", file=sys.stderr)
    sys.exit(2)
try:
    import helm_sdkpy
except ImportError:  # pragma: no cover - reported to the user
    print(
        "hack/helm-check.py needs helm-sdkpy: pip install --ignore-requires-python helm-sdkpy",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "signet"
NAMESPACE = "signet-system"
DIGEST = "sha256:" + "ab" * 32
DEFAULT_TEMPLATE = (
    "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
)

# --------------------------------------------------------------------------------------------
# Results


class Checks:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, condition: bool, what: str, detail: str = "") -> bool:
        if condition:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failed.append(what + (f": {detail}" if detail else ""))
            print(f"  FAIL  {what}" + (f"\n        {detail}" if detail else ""))
        return condition

    def equal(self, actual, expected, what: str) -> bool:
        return self.check(actual == expected, what, f"expected {expected!r}, got {actual!r}")


C = Checks()

# --------------------------------------------------------------------------------------------
# A fake Kubernetes API server that keeps in memory what is written to it. It serves discovery
# for the groups a scenario declares plus those of every CustomResourceDefinition created through
# it (from the moment of the create, like an API server once the CRD is established); OpenAPI v3
# documents announcing `fieldValidation` on PATCH, so Helm leaves validation to the server; and
# create (409 when the object exists; custom resources are validated against their CRD's schema,
# 422 when invalid), get, list, watch, patch, update and delete. Every write is logged in order.

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
CORE = [
    ("configmaps", "ConfigMap", True),
    ("events", "Event", True),
    ("namespaces", "Namespace", False),
    ("nodes", "Node", False),
    ("pods", "Pod", True),
    ("secrets", "Secret", True),
    ("serviceaccounts", "ServiceAccount", True),
    ("services", "Service", True),
]
GROUPS = {
    "apps/v1": [("daemonsets", "DaemonSet", True), ("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("clusterrolebindings", "ClusterRoleBinding", False),
        ("clusterroles", "ClusterRole", False),
        ("rolebindings", "RoleBinding", True),
        ("roles", "Role", True),
    ],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "storage.k8s.io/v1": [("csidrivers", "CSIDriver", False)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True)],
}
SIGNET_GROUP = {
    "signet.dev/v1alpha1": [
        ("authorizationpolicies", "AuthorizationPolicy", True),
        ("clusterfederatedtrustdomains", "ClusterFederatedTrustDomain", False),
        ("clusterspiffeids", "ClusterSPIFFEID", False),
        ("clusterstaticentries", "ClusterStaticEntry", False),
    ]
}
MONITORING_GROUP = {
    "monitoring.coreos.com/v1": [
        ("podmonitors", "PodMonitor", True),
        ("servicemonitors", "ServiceMonitor", True),
    ]
}
QUOTED_TEMPLATE = 'spiffe://{{ .TrustDomain }}/{{ index .PodMeta.Labels "app" }}'
# `$(POD_NAME)` would be expanded by Kubernetes in container args unless the chart escapes `$`.
DOLLAR_TEMPLATE = "spiffe://{{ .TrustDomain }}/x/$(POD_NAME)/$$/{{ .PodMeta.Name }}"
DEFAULT_POLICIES = ["allow-trust-domain", "deny", "allow-authenticated"]
# agent.socketDir values the schema must refuse: shared host directories (their sockets would be
# mounted into every pod) and paths that are not a plain dedicated directory.
SHARED_SOCKET_DIRS = [
    ("/run", "shared, one segment"),
    ("/tmp", "shared, one segment"),
    ("/var/run", "shared (/run)"),
    ("/var/run/", "trailing slash"),
    ("/run/containerd", "the container runtime's socket directory"),
    ("/var/run/containerd/signet", "inside the container runtime's directory"),
    ("/run/docker", "Docker's directory"),
    ("/var/run/crio", "CRI-O's directory"),
    ("/run/k3s/containerd", "k3s' containerd directory"),
    ("/run/user/0", "a user's runtime directory"),
    ("/run/systemd", "systemd's directory"),
    ("/tmp/signet", "under /tmp"),
    ("/var/tmp/signet", "under /var/tmp"),
    ("/dev/shm/signet", "under /dev/shm"),
    ("/var/lib", "shared"),
    ("/var/lib/kubelet", "the kubelet's directory"),
    ("/var/lib/kubelet/plugins/signet", "inside the kubelet's directory"),
    ("/var/lib/docker/signet", "inside Docker's directory"),
    ("/etc/signet", "under /etc"),
    ("/run/signet/../containerd", "a .. segment"),
    ("/run/./containerd", "a . segment"),
    ("/run//signet", "an empty segment"),
    ("run/signet/sockets", "a relative path"),
]
SIGNET_BIN: str | None = None  # --signet-bin


def resource_list(group_version: str, resources) -> dict:
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": [
            {
                "name": name,
                "singularName": kind.lower(),
                "namespaced": namespaced,
                "kind": kind,
                "verbs": VERBS,
            }
            for name, kind, namespaced in resources
        ],
    }


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch. Strategic merge patches are applied the same way with their
    `$` directives dropped (lists are replaced, not merged by key): good enough for a fake whose
    patched built-in objects no check reads back."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Location:
    """What a request path names: a collection (name "") or one object."""

    def __init__(self, gv: str, resource: str, kind: str, namespaced: bool, namespace: str, name: str):
        self.gv, self.resource, self.kind, self.namespaced = gv, resource, kind, namespaced
        self.namespace, self.name = namespace, name

    def key(self, name: str | None = None) -> tuple[str, str, str, str]:
        return (self.gv, self.resource, self.namespace, self.name if name is None else name)


class FakeAPIServer:
    def __init__(self, groups: dict, git_version: str = "v1.31.4") -> None:
        self.groups = {gv: list(resources) for gv, resources in groups.items()}
        self.git_version = git_version
        self.objects: dict[tuple[str, str, str, str], dict] = {}
        self.schemas: dict[tuple[str, str], dict] = {}  # (group/version, kind) -> CRD schema
        self.created: list[dict] = []  # bodies of the successful creates, in order
        self.writes: list[tuple[str, str, str]] = []  # (create|update|patch|delete, kind, name)
        self.rejected: list[str] = []
        self.events: list[tuple[int, str, tuple, dict]] = []  # (revision, type, key, object)
        self.revision = 1
        self.lock = threading.Condition()
        self.stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def send(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def status(self, code: int, reason: str, message: str) -> None:
                self.send(
                    code,
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "reason": reason,
                        "code": code,
                        "message": message,
                    },
                )

            def not_found(self, what: str = "") -> None:
                self.status(404, "NotFound", f"{what or self.path} not found")

            def split(self) -> tuple[str, dict[str, str]]:
                path, _, query = self.path.partition("?")
                return path.rstrip("/"), {k: v[-1] for k, v in parse_qs(query).items()}

            def body(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    if "yaml" in (self.headers.get("Content-Type") or ""):
                        return yaml.safe_load(raw or b"{}")
                    return json.loads(raw or b"{}")
                except (ValueError, UnicodeDecodeError, yaml.YAMLError):
                    return {}

            def do_GET(self) -> None:
                path, query = self.split()
                if path == "/version":
                    major, minor = outer.git_version.lstrip("v").split(".")[:2]
                    return self.send(
                        200,
                        {
                            "major": major,
                            "minor": minor,
                            "gitVersion": outer.git_version,
                            "platform": "linux/amd64",
                        },
                    )
                if path == "/api":
                    return self.send(
                        200,
                        {
                            "kind": "APIVersions",
                            "versions": ["v1"],
                            "serverAddressByClientCIDRs": [
                                {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}
                            ],
                        },
                    )
                with outer.lock:
                    groups = {gv: list(resources) for gv, resources in outer.groups.items()}
                if path == "/apis":
                    listed = []
                    for gv in groups:
                        group, version = gv.split("/")
                        entry = {"groupVersion": gv, "version": version}
                        listed.append({"name": group, "versions": [entry], "preferredVersion": entry})
                    return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": listed})
                if path == "/api/v1":
                    return self.send(200, resource_list("v1", CORE))
                match = re.fullmatch(r"/apis/([^/]+/[^/]+)", path)
                if match and match.group(1) in groups:
                    return self.send(200, resource_list(match.group(1), groups[match.group(1)]))
                if path == "/openapi/v3":
                    return self.send(200, outer.openapi_root(groups))
                if path.startswith("/openapi/v3/"):
                    gv = path.removeprefix("/openapi/v3/").removeprefix("api/").removeprefix("apis/")
                    resources = CORE if gv == "v1" else groups.get(gv)
                    if resources is None:
                        return self.not_found()
                    return self.send(200, outer.openapi_document(gv, resources))
                loc = outer.locate(path)
                if loc is None:
                    return self.not_found()
                if loc.name:
                    with outer.lock:
                        obj = outer.objects.get(loc.key())
                    if obj is None:
                        return self.not_found(f'{loc.resource} "{loc.name}"')
                    return self.send(200, obj)
                if query.get("watch") in ("true", "1"):
                    return self.watch(loc, query)
                with outer.lock:
                    items = outer.matching(loc, query)
                    revision = outer.revision
                return self.send(
                    200,
                    {
                        "kind": f"{loc.kind}List",
                        "apiVersion": loc.gv,
                        "metadata": {"resourceVersion": str(revision)},
                        "items": items,
                    },
                )

            def watch(self, loc: Location, query: dict[str, str]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()  # HTTP/1.0: the stream ends when the connection closes
                with outer.lock:
                    seen = outer.revision
                    try:
                        seen = min(seen, int(query.get("resourceVersion") or seen))
                    except ValueError:
                        pass
                    lines = []
                    if query.get("sendInitialEvents") == "true":
                        lines = [{"type": "ADDED", "object": o} for o in outer.matching(loc, query)]
                        lines.append(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": loc.kind,
                                    "apiVersion": loc.gv,
                                    "metadata": {
                                        "resourceVersion": str(outer.revision),
                                        "annotations": {"k8s.io/initial-events-end": "true"},
                                    },
                                },
                            }
                        )
                        seen = outer.revision
                deadline = time.monotonic() + min(int(query.get("timeoutSeconds") or 30), 30)
                try:
                    while True:
                        for line in lines:
                            self.wfile.write(json.dumps(line).encode() + b"\n")
                        self.wfile.flush()
                        if outer.stopping.is_set() or time.monotonic() > deadline:
                            return
                        with outer.lock:
                            outer.lock.wait(0.2)
                            lines = []
                            for revision, kind, key, obj in outer.events:
                                if revision > seen and outer.matches(loc, query, key):
                                    lines.append({"type": kind, "object": obj})
                            seen = outer.revision
                except OSError:  # the client went away
                    return

            def do_POST(self) -> None:
                path, query = self.split()
                loc = outer.locate(path)
                if loc is None or loc.name:
                    return self.not_found()
                obj = self.body()
                name = (obj.get("metadata") or {}).get("name", "")
                with outer.lock:
                    if loc.key(name) in outer.objects:
                        return self.status(409, "AlreadyExists", f'{loc.resource} "{name}" already exists')
                    problem = outer.invalid(loc, obj, query)
                    if problem:
                        return self.status(422, "Invalid", problem)
                    stored = outer.store(loc, name, obj, "create", "ADDED")
                    outer.created.append(copy.deepcopy(stored))
                    if loc.kind == "CustomResourceDefinition":
                        outer.serve(stored)
                self.send(201, stored)

            def do_PUT(self) -> None:
                path, query = self.split()
                loc = outer.locate(path)
                if loc is None or not loc.name:
                    return self.not_found()
                obj = self.body()
                with outer.lock:
                    old = outer.objects.get(loc.key())
                    if old is None:
                        return self.not_found(f'{loc.resource} "{loc.name}"')
                    problem = outer.invalid(loc, obj, query)
                    if problem:
                        return self.status(422, "Invalid", problem)
                    obj.setdefault("metadata", {})["uid"] = old["metadata"]["uid"]
                    stored = outer.store(loc, loc.name, obj, "update", "MODIFIED")
                self.send(200, stored)

            def do_PATCH(self) -> None:
                path, query = self.split()
                loc = outer.locate(path)
                if loc is None or not loc.name:
                    return self.not_found()
                patch = self.body()
                apply = "apply-patch" in (self.headers.get("Content-Type") or "")
                with outer.lock:
                    old = outer.objects.get(loc.key())
                    if old is None and not apply:
                        return self.not_found(f'{loc.resource} "{loc.name}"')
                    obj = merge_patch(old or {}, patch)
                    problem = outer.invalid(loc, obj, query)
                    if problem:
                        return self.status(422, "Invalid", problem)
                    if old is not None:
                        obj["metadata"]["uid"] = old["metadata"]["uid"]
                    stored = outer.store(loc, loc.name, obj, "patch", "MODIFIED" if old else "ADDED")
                self.send(200 if old else 201, stored)

            def do_DELETE(self) -> None:
                path, _ = self.split()
                loc = outer.locate(path)
                if loc is None or not loc.name:
                    return self.not_found()
                with outer.lock:
                    obj = outer.objects.pop(loc.key(), None)
                    if obj is None:
                        return self.not_found(f'{loc.resource} "{loc.name}"')
                    outer.writes.append(("delete", loc.kind, loc.name))
                    outer.event("DELETED", loc.key(), obj)
                self.send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # Called with self.lock held.

    def resources(self, gv: str) -> list:
        return CORE if gv == "v1" else self.groups.get(gv, [])

    def locate(self, path: str) -> Location | None:
        parts = [p for p in path.split("/") if p]
        if parts[:2] == ["api", "v1"]:
            gv, rest = "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            gv, rest = f"{parts[1]}/{parts[2]}", parts[3:]
        else:
            return None
        with self.lock:
            table = {r[0]: r for r in self.resources(gv)}
        namespace = ""
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in table and table[rest[2]][2]:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in table:
            return None
        resource, kind, namespaced = table[rest[0]]
        return Location(gv, resource, kind, namespaced, namespace, rest[1] if len(rest) > 1 else "")

    def matches(self, loc: Location, query: dict[str, str], key: tuple) -> bool:
        if key[:2] != (loc.gv, loc.resource) or (loc.namespace and key[2] != loc.namespace):
            return False
        fields = {"metadata.name": key[3], "metadata.namespace": key[2]}
        for term in filter(None, (query.get("fieldSelector") or "").split(",")):
            field, _, value = term.partition("=")
            if field in fields and fields[field] != value.lstrip("="):
                return False
        return True

    def matching(self, loc: Location, query: dict[str, str]) -> list[dict]:
        return [o for key, o in sorted(self.objects.items()) if self.matches(loc, query, key)]

    def event(self, kind: str, key: tuple, obj: dict) -> None:
        self.revision += 1
        self.events.append((self.revision, kind, key, copy.deepcopy(obj)))
        self.lock.notify_all()

    def store(self, loc: Location, name: str, obj: dict, verb: str, event: str) -> dict:
        meta = obj.setdefault("metadata", {})
        meta["name"] = name
        if loc.namespaced:
            meta["namespace"] = loc.namespace
        meta.setdefault("uid", f"uid-{len(self.created) + 1}-{name}")
        meta.setdefault("creationTimestamp", "2025-01-01T00:00:00Z")
        meta["resourceVersion"] = str(self.revision + 1)
        obj.setdefault("apiVersion", loc.gv)
        obj.setdefault("kind", loc.kind)
        if loc.kind == "CustomResourceDefinition":
            obj["status"] = {
                "acceptedNames": obj.get("spec", {}).get("names", {}),
                "conditions": [
                    {"type": "NamesAccepted", "status": "True"},
                    {"type": "Established", "status": "True"},
                ],
            }
        self.objects[loc.key(name)] = obj
        self.writes.append((verb, loc.kind, name))
        self.event(event, loc.key(name), obj)
        return copy.deepcopy(obj)

    def serve(self, crd: dict) -> None:
        """Serves the kind of a created CustomResourceDefinition, and keeps its schema."""
        spec = crd.get("spec", {})
        names = spec.get("names", {})
        entry = (names.get("plural"), names.get("kind"), spec.get("scope") == "Namespaced")
        for version in spec.get("versions", []):
            if not version.get("served"):
                continue
            gv = f"{spec.get('group')}/{version['name']}"
            resources = self.groups.setdefault(gv, [])
            if entry not in resources:
                resources.append(entry)
            self.schemas[(gv, entry[1])] = (version.get("schema") or {}).get("openAPIV3Schema", {})

    def invalid(self, loc: Location, obj: dict, query: dict[str, str]) -> str:
        """Why the API server would refuse a custom resource ("" when it accepts it). Unknown
        fields are refused with fieldValidation=Strict, pruned otherwise."""
        schema = self.schemas.get((loc.gv, loc.kind))
        if schema is None:
            return ""
        errors: list[str] = []
        body = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata", "status")}
        props = {k: v for k, v in (schema.get("properties") or {}).items() if k != "status"}
        validate_openapi(body, {**schema, "properties": props}, loc.kind, errors, [])
        if query.get("fieldValidation") != "Strict":
            errors = [e for e in errors if not e.endswith("unknown field")]
        if errors:
            self.rejected.append(f"{loc.kind} {loc.name or obj['metadata'].get('name')}: {'; '.join(errors)}")
        return "; ".join(errors)

    def openapi_root(self, groups: dict) -> dict:
        paths = {"api/v1": {"serverRelativeURL": f"/openapi/v3/api/v1?hash={len(CORE)}"}}
        for gv, resources in groups.items():
            paths[f"apis/{gv}"] = {"serverRelativeURL": f"/openapi/v3/apis/{gv}?hash={len(resources)}"}
        return {"paths": paths}

    def openapi_document(self, gv: str, resources) -> dict:
        group, _, version = gv.rpartition("/")
        prefix = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        paths = {}
        for name, kind, namespaced in resources:
            path = (
                f"{prefix}/namespaces/{{namespace}}/{name}/{{name}}"
                if namespaced
                else f"{prefix}/{name}/{{name}}"
            )
            paths[path] = {
                "patch": {
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": kind},
                    "x-kubernetes-action": "patch",
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": self.git_version},
            "paths": paths,
        }

    def __enter__(self) -> "FakeAPIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        with self.lock:
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self) -> str:
        port = self.server.server_address[1]
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
                "users": [{"name": "fake", "user": {"token": "fake"}}],
                "contexts": [
                    {
                        "name": "fake",
                        "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE},
                    }
                ],
                "current-context": "fake",
            }
        )


# --------------------------------------------------------------------------------------------
# Rendering through Install and Upgrade


class Rendered:
    """A release as Install or Upgrade returned it, plus what that action did to the fake API
    server: `created` (bodies of the creates) and `writes` ((verb, kind, name) in order)."""

    def __init__(self, release: dict, created: list[dict] | None = None, writes: list | None = None) -> None:
        self.release = release
        self.manifest = release.get("manifest", "")
        self.notes = (release.get("info") or {}).get("notes", "")
        self.objects = [o for o in yaml.safe_load_all(self.manifest) if o]
        self.hooks = release.get("hooks") or []
        self.hook_objects = [o for h in self.hooks for o in yaml.safe_load_all(h.get("manifest", "")) if o]
        self.created = created or []
        self.writes = writes or []

    def kinds(self) -> list[str]:
        return sorted(o["kind"] for o in self.objects)

    def all(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}")
        return found[0]


class Cluster:
    """One fake API server and one helm-sdkpy Configuration (so one in-memory release storage):
    an Install followed by Upgrades sees the release history and the objects of the previous
    actions."""

    def __init__(self, groups: dict | None = None, kube: str = "v1.31.4") -> None:
        api_groups = dict(GROUPS)
        api_groups.update(groups or {})
        self.api = FakeAPIServer(api_groups, kube)

    def __enter__(self) -> "Cluster":
        self.api.__enter__()
        # A kubeconfig file, not the YAML text: helm-sdkpy then uses the helm CLI's own client
        # (cli.EnvSettings), which builds a new discovery client (over the disk cache in
        # KUBECACHEDIR) for every REST mapping, and so finds kinds created during the action.
        # With the text it keeps one in-memory discovery cache that never refreshes.
        port = self.api.server.server_address[1]
        self.kubeconfig = TMP / f"kubeconfig-{port}"
        self.kubeconfig.write_text(self.api.kubeconfig())
        self.config = helm_sdkpy.Configuration(namespace=NAMESPACE, kubeconfig=str(self.kubeconfig))
        return self

    def __exit__(self, *exc) -> None:
        self.api.__exit__(*exc)

    def run(self, action, *args, **kwargs) -> Rendered:
        created, writes = len(self.api.created), len(self.api.writes)
        result = asyncio.run(action(self.config).run(*args, **kwargs))
        return Rendered(result, self.api.created[created:], self.api.writes[writes:])

    def install(self, values: dict, release: str = "signet") -> Rendered:
        return self.run(helm_sdkpy.Install, release, str(CHART), values=values, wait=False, timeout=60)

    def upgrade(self, values: dict, release: str = "signet") -> Rendered:
        return self.run(helm_sdkpy.Upgrade, release, str(CHART), values=values, wait=False, timeout=60)


def install(
    values: dict, groups: dict | None = None, release: str = "signet", kube: str = "v1.31.4"
) -> Rendered:
    """Renders the chart through helm-sdkpy Install against a fresh fake API server."""
    with Cluster(groups, kube) as cluster:
        return cluster.install(values, release)


def install_error(values: dict, groups: dict | None = None, kube: str = "v1.31.4") -> str:
    """The error message of an Install expected to fail ("" when it succeeded)."""
    try:
        install(values, groups, kube=kube)
    except helm_sdkpy.HelmError as error:
        return str(error)
    return ""


# --------------------------------------------------------------------------------------------
# Helpers on objects


def containers(workload: dict) -> dict[str, dict]:
    return {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}


def flags(container: dict) -> dict[str, str]:
    out = {}
    for arg in container.get("args", []):
        if arg.startswith("--"):
            key, _, value = arg.partition("=")
            out[key] = value
    return out


def volumes(workload: dict) -> dict[str, dict]:
    return {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}


def mounts(container: dict) -> dict[str, dict]:
    return {m["name"]: m for m in container.get("volumeMounts", [])}


def signet_images(rendered: Rendered) -> list[str]:
    images = []
    for kind in ("Deployment", "DaemonSet"):
        for workload in rendered.all(kind):
            for c in workload["spec"]["template"]["spec"]["containers"]:
                if c["name"] != "node-driver-registrar":
                    images.append(c["image"])
    return images


def expected_server_cluster_rules(default_identity: str | None) -> list[dict]:
    """The server ClusterRole of docs/kubernetes.md; with the default identity (its name) the
    rule to apply it: get, patch and create on that name only (the server-side apply that
    creates it is authorized as `create` with the name; no unscoped create)."""
    rules = [
        {"apiGroups": [""], "resources": ["pods", "namespaces", "nodes"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        {
            "apiGroups": ["signet.dev"],
            "resources": [
                "clusterspiffeids",
                "clusterstaticentries",
                "clusterfederatedtrustdomains",
                "authorizationpolicies",
            ],
            "verbs": ["get", "list", "watch"],
        },
        {
            "apiGroups": ["signet.dev"],
            "resources": [
                "clusterspiffeids/status",
                "clusterstaticentries/status",
                "clusterfederatedtrustdomains/status",
                "authorizationpolicies/status",
            ],
            "verbs": ["get", "patch", "update"],
        },
    ]
    if default_identity is not None:
        rules += [
            {
                "apiGroups": ["signet.dev"],
                "resources": ["clusterspiffeids"],
                "resourceNames": [default_identity],
                "verbs": ["get", "patch", "create"],
            },
        ]
    return rules + [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]


def k8s_expand(value: str, env: dict[str, str]) -> str:
    """What the kubelet makes of a container arg: `$(NAME)` of a variable of the container's env
    becomes its value (an unknown one stays as written), `$$` becomes `$`
    (k8s.io/kubernetes third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "$" and i + 1 < len(value):
            following = value[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = value.find(")", i + 2)
                if end != -1:
                    name = value[i + 2 : end]
                    out.append(env.get(name, f"$({name})"))
                    i = end + 1
                    continue
                out.append("$(")
                i += 2
                continue
            out.append("$" + following)
            i += 2
            continue
        out.append(value[i])
        i += 1
    return "".join(out)


def server_process_args(rendered: Rendered) -> list[str]:
    """The server container's args as the process receives them (fieldRef variables stand in
    as `<fieldRef NAME>`)."""
    sc = containers(rendered.one("Deployment"))["server"]
    env = {e["name"]: e.get("value", f"<fieldRef {e['name']}>") for e in sc.get("env", [])}
    return [k8s_expand(a, env) for a in sc.get("args", [])]


def server_default_identity(rendered: Rendered) -> tuple[str | None, str | None]:
    """(template, name) of the default identity as the server process receives them."""
    received = flags({"args": server_process_args(rendered)})
    return received.get("--default-identity-template"), received.get("--default-identity-name")


def clusterspiffeid_schema() -> dict:
    crd = yaml.safe_load((CHART / "files" / "crds" / "clusterspiffeids.yaml").read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def check_server_default_identity(
    rendered: Rendered, template: str, name: str, what: str, class_name: str | None = None
) -> None:
    """The server is told to keep the default identity `name` with `template`, literally; Helm
    writes no ClusterSPIFFEID; the server's ClusterRole lets it apply exactly that name."""
    sc = containers(rendered.one("Deployment"))["server"]
    got_template, got_name = server_default_identity(rendered)
    C.equal(got_template, template, f"{what}: the server process gets the template literally")
    C.equal(got_name, name, f"{what}: the server gets --default-identity-name={name}")
    C.check(
        all(e["name"] != "SIGNET_DEFAULT_IDENTITY_TEMPLATE" for e in sc.get("env", [])),
        f"{what}: the template is passed once (no SIGNET_DEFAULT_IDENTITY_TEMPLATE besides the flag)",
    )
    C.check(
        not any(o["kind"] == "ClusterSPIFFEID" for o in rendered.objects + rendered.hook_objects)
        and not rendered.hooks,
        f"{what}: no ClusterSPIFFEID and no hook in the release",
    )
    C.equal(
        [(verb, n) for verb, kind, n in rendered.writes if kind == "ClusterSPIFFEID"],
        [],
        f"{what}: Helm writes no ClusterSPIFFEID",
    )
    role = [o for o in rendered.all("ClusterRole") if o["metadata"]["name"].endswith("-server")]
    C.equal(
        role[0]["rules"] if len(role) == 1 else None,
        expected_server_cluster_rules(got_name),
        f"{what}: server ClusterRole grants get/patch/create on {got_name} only",
    )
    # What the leader applies (crates/signet-server/src/k8s/default_identity.rs), against the CRD.
    spec = {"spiffeIDTemplate": got_template, "fallback": True, "hint": "default"}
    if class_name:
        spec["className"] = class_name
    errors: list[str] = []
    validate_openapi({"spec": spec}, clusterspiffeid_schema(), "ClusterSPIFFEID", errors, [])
    C.check(
        not errors,
        f"{what}: the ClusterSPIFFEID the server applies is valid against the CRD",
        "; ".join(errors),
    )
    if SIGNET_BIN:
        check_binary_default_identity(SIGNET_BIN, rendered, what)


def check_no_default_identity(rendered: Rendered, what: str) -> None:
    sflags = flags(containers(rendered.one("Deployment"))["server"])
    C.check(
        "--default-identity-template" not in sflags and "--default-identity-name" not in sflags,
        f"{what}: no --default-identity-* flag",
        str(sorted(sflags)),
    )
    role = [o for o in rendered.all("ClusterRole") if o["metadata"]["name"].endswith("-server")]
    C.equal(
        role[0]["rules"] if len(role) == 1 else None,
        expected_server_cluster_rules(None),
        f"{what}: server ClusterRole has no write access to clusterspiffeids",
    )
    C.check(
        not any(o["kind"] == "ClusterSPIFFEID" for o in rendered.objects + rendered.created)
        and not rendered.hooks,
        f"{what}: no ClusterSPIFFEID",
    )
    C.check("default identity" not in rendered.notes.lower(), f"{what}: NOTES omit the default identity")


def check_binary_default_identity(binary: str, rendered: Rendered, what: str) -> None:
    """Runs `signet server` with the default identity flags as the process receives them: it
    checks them before it reads the kubeconfig, so a missing kubeconfig being the error means
    they were accepted."""
    received = [a for a in server_process_args(rendered) if a.startswith("--default-identity-")]
    with tempfile.TemporaryDirectory(dir=TMP) as tmp:
        result = subprocess.run(
            [
                binary,
                "server",
                "--mode=kubernetes",
                "--trust-domain=example.org",
                f"--kubeconfig={tmp}/missing-kubeconfig",
                f"--data-dir={tmp}/data",
                *received,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={"PATH": os.environ.get("PATH", ""), "RUST_BACKTRACE": "0", "HOME": tmp},
        )
    message = result.stderr.strip()
    C.check(
        result.returncode != 0 and "kubeconfig" in message and "--default-identity" not in message,
        f"{what}: `signet server` accepts the default identity flags it gets",
        message[:300],
    )


def expected_server_role_rules(
    secret: str,
    configmap: str,
    lease: str,
    federated: str = "signet-federated-bundles",
    upstream: str | None = None,
) -> list[dict]:
    """The server Role of docs/kubernetes.md. Unscoped `create` only where the server POSTs
    (the CA Secret, the Lease); the bundle and federated-bundle ConfigMaps are server-side
    applied, so their `create` is limited to their names."""
    upstream_rules = (
        [{"apiGroups": [""], "resources": ["secrets"], "resourceNames": [upstream], "verbs": ["get", "list", "watch"]}]
        if upstream
        else []
    )
    return [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": [secret],
            "verbs": ["get", "list", "watch", "update"],
        },
        *upstream_rules,
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [configmap],
            "verbs": ["get", "patch", "create"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["signet-agents"],
            "verbs": ["get", "list", "watch", "patch", "create"],
        },
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": [federated],
            "verbs": ["get", "patch", "create"],
        },
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    ]


# --------------------------------------------------------------------------------------------
# Checks without Helm


def check_files() -> None:
    print("files")
    sources = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "files" / "crds").glob("*.yaml"))
    C.equal(copies, sources, "charts/signet/files/crds holds the same files as crds/")
    for name in sources:
        C.check(
            (ROOT / "crds" / name).read_bytes() == (CHART / "files" / "crds" / name).read_bytes(),
            f"files/crds/{name} is a byte-for-byte copy of crds/{name}",
        )

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    C.equal(
        schema.get("$schema"), "http://json-schema.org/draft-07/schema#", "values.schema.json is draft-07"
    )

    missing: list[str] = []
    open_objects: list[str] = []

    def walk(value, node, path: str) -> None:
        if isinstance(value, dict):
            if node.get("additionalProperties", True) is True and node.get("properties") is not None:
                open_objects.append(path or "<root>")
            for key, child in value.items():
                sub = f"{path}.{key}" if path else key
                props = node.get("properties") or {}
                if key not in props:
                    missing.append(sub)
                    continue
                described = props[key]
                if not described.get("description"):
                    missing.append(sub + " (no description)")
                walk(child, described, sub)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                walk(item, node.get("items") or {}, f"{path}[{i}]")

    walk(values, schema, "")
    C.check(not missing, "every values.yaml key path is described in values.schema.json", ", ".join(missing))
    C.check(
        not open_objects, "schema objects with properties set additionalProperties", ", ".join(open_objects)
    )

    # Every option has a comment right above it. Keys inside a documented default (a key whose
    # comment starts with "# --", e.g. resources.requests.cpu) are part of that default.
    lines = (CHART / "values.yaml").read_text().splitlines()
    uncommented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented default) of the enclosing keys
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z_][A-Za-z0-9_./-]*):", line)
        if not match:
            continue
        indent = len(match.group(1)) + (2 if match.group(2) else 0)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inside_default = any(documented for _, documented in stack)
        previous = lines[i - 1].strip() if i else ""
        comment_start = i - 1
        while comment_start >= 0 and lines[comment_start].strip().startswith("#"):
            comment_start -= 1
        documented = lines[comment_start + 1].strip().startswith("# --") if comment_start + 1 < i else False
        if not inside_default and not match.group(2) and not previous.startswith("#"):
            uncommented.append(f"line {i + 1}: {match.group(3)}")
        stack.append((indent, documented or inside_default))
    C.check(not uncommented, "every values.yaml key has a comment", ", ".join(uncommented))


# A subset of CEL, enough for the rules of crds/: unknown rules are reported, not guessed.
def cel_check(rule: str, value) -> bool | None:
    # The TTL rule: "self == '0' || (<syntax> && <bound>)".
    if m := re.fullmatch(r"self == '([^']*)' \|\| \((.*)\)", rule):
        return True if value == m.group(1) else cel_check(m.group(2), value)
    parts = [p.strip() for p in rule.split("&&")]
    results = []
    for part in parts:
        if m := re.fullmatch(r"self\.startsWith\('([^']*)'\)", part):
            results.append(isinstance(value, str) and value.startswith(m.group(1)))
        elif m := re.fullmatch(r"(!?)self\.matches\('([^']*)'\)", part):
            found = isinstance(value, str) and re.search(m.group(2), value) is not None
            results.append(found != bool(m.group(1)))
        elif m := re.fullmatch(r"size\(self\) <= (\d+)", part):
            results.append(len(value) <= int(m.group(1)))
        elif m := re.fullmatch(r"self\.all\((\w+), \1\.matches\('([^']*)'\)\)", part):
            results.append(all(re.search(m.group(2), v) for v in value))
        elif m := re.fullmatch(r"self\.all\((\w+), \1\.contains\('([^']*)'\)\)", part):
            results.append(all(m.group(2) in v for v in value))
        elif re.fullmatch(r"duration\(self\) [<>]=? duration\('[^']*'\)", part):
            units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
            terms = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", value)
            if not terms or "".join(a + b for a, b in terms) != value:
                results.append(False)
                continue
            seconds = sum(float(a) * units[b] for a, b in terms)
            op, bound = re.fullmatch(r"duration\(self\) ([<>]=?) duration\('([^']*)'\)", part).groups()
            limit = sum(float(a) * units[b] for a, b in re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", bound))
            results.append(
                {"<=": seconds <= limit, ">=": seconds >= limit, "<": seconds < limit, ">": seconds > limit}[
                    op
                ]
            )
        else:
            return None
    return all(results)


def validate_openapi(value, schema: dict, path: str, errors: list[str], unevaluated: list[str]) -> None:
    """Structural validation as the API server does it, plus the CEL rules above. Unknown
    fields are errors: the API server would silently prune them."""
    if value is None:
        if not schema.get("nullable"):
            errors.append(f"{path}: null")
        return
    kind = schema.get("type")
    expected = {"object": dict, "array": list, "string": str, "boolean": bool, "integer": int}.get(kind)
    if expected and (not isinstance(value, expected) or (kind == "integer" and isinstance(value, bool))):
        errors.append(f"{path}: expected {kind}, got {type(value).__name__}")
        return
    if isinstance(value, str):
        if len(value) > schema.get("maxLength", 1 << 30) or len(value) < schema.get("minLength", 0):
            errors.append(f"{path}: length {len(value)} outside the schema's bounds")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{path}: {value!r} does not match {schema['pattern']}")
        if "enum" in schema and value not in schema["enum"]:
            errors.append(f"{path}: {value!r} not in {schema['enum']}")
    if isinstance(value, list):
        if len(value) > schema.get("maxItems", 1 << 30) or len(value) < schema.get("minItems", 0):
            errors.append(f"{path}: {len(value)} items outside the schema's bounds")
        for i, item in enumerate(value):
            validate_openapi(item, schema.get("items", {}), f"{path}[{i}]", errors, unevaluated)
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}.{key}: required")
        for key, item in value.items():
            if props is not None and key in props:
                validate_openapi(item, props[key], f"{path}.{key}", errors, unevaluated)
            elif isinstance(extra, dict):
                validate_openapi(item, extra, f"{path}.{key}", errors, unevaluated)
            elif props is not None or extra is False:
                errors.append(f"{path}.{key}: unknown field")
    for rule in schema.get("x-kubernetes-validations", []):
        verdict = cel_check(rule["rule"], value)
        if verdict is None:
            unevaluated.append(f"{path}: {rule['rule']}")
        elif not verdict:
            errors.append(f"{path}: {rule.get('message', rule['rule'])}")


def check_examples() -> None:
    print("config/examples against crds/")
    crds = {}
    for path in (ROOT / "crds").glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        version = crd["spec"]["versions"][0]
        crds[(f"{crd['spec']['group']}/{version['name']}", crd["spec"]["names"]["kind"])] = version["schema"][
            "openAPIV3Schema"
        ]
    examples = sorted((ROOT / "config" / "examples").glob("*.yaml"))
    C.check(len(examples) >= 3, "config/examples has the example manifests")
    custom = 0
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc:
                continue
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key[0] and key[0].startswith("signet.dev/"):
                custom += 1
                schema = crds.get(key)
                if not C.check(schema is not None, f"{path.name}: {key[1]} is a kind of crds/"):
                    continue
                errors: list[str] = []
                unevaluated: list[str] = []
                body = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "metadata")}
                validate_openapi(body, schema, key[1], errors, unevaluated)
                C.check(
                    not errors,
                    f"{path.name}: {key[1]} {doc['metadata']['name']} is valid against its CRD",
                    "; ".join(errors),
                )
                C.check(
                    not unevaluated,
                    f"{path.name}: every CEL rule of {key[1]} was evaluated",
                    "; ".join(unevaluated),
                )
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            csi = [v for v in pod.get("volumes", []) if "csi" in v]
            csi_names = {v["name"] for v in csi}
            if pod:
                C.check(
                    bool(csi)
                    and all(v["csi"] == {"driver": "csi.signet.dev", "readOnly": True} for v in csi),
                    f"{path.name}: {doc['kind']} declares the CSI volume read-only",
                )
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                mounts = [m for m in container.get("volumeMounts", []) if m["name"] in csi_names]
                if not mounts:
                    # Containers that read files the helper wrote need no socket.
                    continue
                C.check(
                    all(m.get("readOnly") is True for m in mounts),
                    f"{path.name}: container {container['name']} mounts the socket read-only",
                )
                env = {e["name"]: e.get("value") for e in container.get("env", [])}
                C.equal(
                    env.get("SPIFFE_ENDPOINT_SOCKET"),
                    "unix:///spiffe-workload-api/api.sock",
                    f"{path.name}: SPIFFE_ENDPOINT_SOCKET",
                )
    C.check(custom >= 2, "the examples include Signet resources")


def check_binary_flags(rendered: Rendered, binary: str) -> None:
    print(f"flags against {binary}")
    seen: dict[str, set[str]] = {}
    for kind in ("Deployment", "DaemonSet"):
        for workload in rendered.all(kind):
            for c in workload["spec"]["template"]["spec"]["containers"]:
                args = c.get("args", [])
                if c["name"] == "node-driver-registrar" or not args:
                    continue
                seen.setdefault(args[0], set()).update(flags(c))
    for command, used in sorted(seen.items()):
        result = subprocess.run([binary, command, "--help"], capture_output=True, text=True)
        if not C.check(result.returncode == 0, f"`signet {command}` exists", result.stderr.strip()[:300]):
            continue
        unknown = sorted(f for f in used if not re.search(re.escape(f) + r"\b", result.stdout))
        C.check(not unknown, f"`signet {command}` knows every flag the chart passes", ", ".join(unknown))


# --------------------------------------------------------------------------------------------
# (a) lint


def lint(chart: Path) -> tuple[dict, str]:
    """Lints; returns the result and what Helm logged (helm-sdkpy drops the message texts)."""
    config = helm_sdkpy.Configuration(namespace=NAMESPACE)
    with tempfile.TemporaryFile() as log:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(log.fileno(), 2)
        try:
            result = asyncio.run(helm_sdkpy.Lint(config).run(str(chart)))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        log.seek(0)
        return result, log.read().decode(errors="replace")


def lint_messages(result: dict, minimum: int) -> list[str]:
    # Severity: 0 unknown, 1 info, 2 warning, 3 error (Helm's support.Severity).
    return [
        f"severity {m.get('Severity')} in {m.get('Path')}"
        for m in result.get("Messages") or []
        if (m.get("Severity") or 0) >= minimum
    ]


def check_lint() -> None:
    print("lint (default values: trustDomain is empty)")
    result, logged = lint(CHART)
    # Helm's lint mode turns `required` into a logged warning (and ignores `fail`); helm-sdkpy
    # has no --strict, so the log is what shows it.
    C.check(
        "trustDomain is required" in logged,
        "lint with default values warns about the missing trustDomain",
        f"{result} {logged.strip()}",
    )
    message = install_error({})
    C.check(
        "trustDomain is required" in message,
        "rendering with default values fails with the trustDomain message",
        message[:300],
    )

    print("lint, strict (trustDomain=example.org)")
    with tempfile.TemporaryDirectory() as tmp:
        copy_dir = Path(tmp) / "signet"
        shutil.copytree(CHART, copy_dir)
        values_file = copy_dir / "values.yaml"
        text = values_file.read_text()
        values_file.write_text(text.replace('trustDomain: ""', "trustDomain: example.org", 1))
        result, logged = lint(copy_dir)
    C.equal(result.get("TotalChartsLinted"), 1, "lint linted the chart")
    # --strict: a warning fails, whether in the result or only in Helm's log.
    C.check(
        not lint_messages(result, 2) and not re.search(r"\b(WARN|ERROR)\b", logged),
        "strict lint reports no warning or error",
        f"{result} {logged.strip()}",
    )


# --------------------------------------------------------------------------------------------
# (b) render


def check_defaults(binary: str | None) -> None:
    print("render: defaults, first install (the API serves ClusterSPIFFEID only once the CRDs exist)")
    with Cluster() as cluster:
        r = cluster.install({"trustDomain": "example.org"})
        api = cluster.api
    for kind, count in [
        # One per generated CRD file (crds/ is the source of truth).
        ("CustomResourceDefinition", len(list((ROOT / "crds").glob("*.yaml")))),
        ("Deployment", 1),
        ("DaemonSet", 1),
        ("Service", 2),
        ("ServiceAccount", 2),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("PodDisruptionBudget", 1),
        ("CSIDriver", 1),
    ]:
        C.equal(len(r.all(kind)), count, f"{count} {kind}")
    for kind in ("ServiceMonitor", "ConfigMap", "Secret"):
        C.equal(len(r.all(kind)), 0, f"no {kind}")
    C.equal(r.hooks, [], "the release has no hooks")

    # The default identity: not a chart object; the server is told to keep it applied.
    check_server_default_identity(r, DEFAULT_TEMPLATE, "signet-default", "default identity")
    C.check(
        f'"--default-identity-template={DEFAULT_TEMPLATE}"' in r.manifest,
        "the manifest carries the template as written (one double-quoted YAML string)",
    )
    C.check(
        not api.rejected,
        "the API server accepted every object",
        "; ".join(api.rejected),
    )
    C.check(
        not any(key[1] == "clusterspiffeids" for key in api.objects),
        "no ClusterSPIFFEID exists after the install (the server applies it, not Helm)",
    )

    C.check(
        "signet-default" in r.notes and DEFAULT_TEMPLATE in r.notes and "helm upgrade" not in r.notes,
        "NOTES name the default identity and its template, and ask for no further `helm upgrade`",
    )
    C.check(
        "hook" not in r.notes and "leader" in r.notes,
        "NOTES say the server's leader applies the default identity (no hook)",
    )
    C.check(
        "unix:///spiffe-workload-api/api.sock" in r.notes and "driver: csi.signet.dev" in r.notes,
        "NOTES show the CSI volume and SPIFFE_ENDPOINT_SOCKET",
    )
    C.check("pod-security.kubernetes.io/enforce=privileged" in r.notes, "NOTES give the pod-security label")
    C.check("kubectl get csid" in r.notes, "NOTES show `kubectl get csid`")
    plurals = sorted(
        yaml.safe_load(path.read_text())["spec"]["names"]["plural"] for path in (ROOT / "crds").glob("*.yaml")
    )
    C.check(
        f"installed ({len(plurals)})" in r.notes and all(p in r.notes for p in plurals),
        f"NOTES name the {len(plurals)} CRDs the chart installs",
        r.notes[:300],
    )
    readme = (CHART / "README.md").read_text()
    C.check(
        all(f"`{p}.signet.dev`" in readme for p in plurals),
        "chart README's object table names every CRD of crds/",
    )
    for text, where in ((r.notes, "NOTES"), (readme, "chart README")):
        C.check(
            "not enforced yet" not in text and "signet proxy" in text,
            f"{where} describe AuthorizationPolicy enforcement (signet proxy), not a reserved feature",
        )
        C.check(
            not re.search(r"\b(three|3) (CRDs|CustomResourceDefinitions)\b", text, re.IGNORECASE),
            f"{where} do not speak of three CRDs",
        )
    C.equal(
        sorted((o["kind"], o["metadata"]["name"]) for o in r.created),
        sorted((o["kind"], o["metadata"]["name"]) for o in r.objects),
        "Helm created every rendered object through the API",
    )

    for obj in r.objects:
        labels = obj["metadata"].get("labels") or {}
        if labels.get("app.kubernetes.io/managed-by") != "Helm":
            C.check(False, f"{obj['kind']} {obj['metadata']['name']} has the chart labels")
            break
    else:
        C.check(True, "every object has the chart labels")

    # CRDs: the files, parsed, plus labels and the keep annotation.
    sources = {}
    for path in sorted((CHART / "files" / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        sources[crd["metadata"]["name"]] = crd
    for crd in r.all("CustomResourceDefinition"):
        name = crd["metadata"]["name"]
        C.equal(
            (crd["metadata"].get("annotations") or {}).get("helm.sh/resource-policy"),
            "keep",
            f"CRD {name} is annotated helm.sh/resource-policy: keep",
        )
        stripped = copy.deepcopy(crd)
        stripped["metadata"].pop("labels", None)
        stripped["metadata"].pop("annotations", None)
        C.check(
            stripped == sources.get(name), f"CRD {name} equals files/crds apart from labels and annotations"
        )

    server = r.one("Deployment", "signet-server")
    sspec = server["spec"]["template"]["spec"]
    C.equal(server["spec"]["replicas"], 2, "server has 2 replicas")
    C.equal(server["spec"]["strategy"]["type"], "RollingUpdate", "server rolls out with RollingUpdate")
    sc = containers(server)["server"]
    sflags = flags(sc)
    C.equal(sc["args"][0], "server", "server container runs `signet server`")
    for flag, value in {
        "--mode": "kubernetes",
        "--trust-domain": "example.org",
        "--cluster-name": "cluster",
        "--cluster-domain": "cluster.local",
        "--bind-address": "0.0.0.0:8081",
        "--health-address": "0.0.0.0:8082",
        "--data-dir": "/var/lib/signet/server",
        "--ca-key-type": "ec-p256",
        "--ca-ttl": "24h",
        "--default-x509-svid-ttl": "1h",
        "--default-jwt-svid-ttl": "5m",
        "--agent-svid-ttl": "1h",
        "--psat-audience": "signet-server",
        "--agent-service-accounts": f"{NAMESPACE}:signet-agent",
        "--ignore-namespaces": f"kube-system,kube-public,{NAMESPACE}",
        "--ca-secret": "signet-ca",
        "--bundle-configmap": "signet-bundle",
        "--agent-state-configmap": "signet-agents",
        "--lease-name": "signet-server",
        "--default-policy": "allow-trust-domain",
        "--log-level": "info",
        "--log-format": "json",
    }.items():
        C.equal(sflags.get(flag), value, f"server {flag}={value}")
    C.check(
        "--node-label-keys" not in sflags and "--class-name" not in sflags,
        "server omits empty optional flags",
    )
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in sc["env"]}
    C.equal(
        env,
        {"POD_NAME": "metadata.name", "SIGNET_NAMESPACE": "metadata.namespace"},
        "server env POD_NAME and SIGNET_NAMESPACE",
    )
    C.equal(
        sc["livenessProbe"]["httpGet"], {"path": "/livez", "port": "health"}, "server liveness probe /livez"
    )
    C.equal(
        sc["readinessProbe"]["httpGet"],
        {"path": "/readyz", "port": "health"},
        "server readiness probe /readyz",
    )
    C.check("startupProbe" in sc, "server has a startup probe")
    C.equal(
        {p["name"]: p["containerPort"] for p in sc["ports"]}, {"grpc": 8081, "health": 8082}, "server ports"
    )
    ssc = sc["securityContext"]
    C.check(
        ssc.get("runAsNonRoot") is True
        and ssc.get("runAsUser") == 65532
        and ssc.get("readOnlyRootFilesystem") is True
        and ssc.get("allowPrivilegeEscalation") is False
        and ssc.get("capabilities", {}).get("drop") == ["ALL"],
        "server container is non-root, read-only, no escalation, drops ALL",
    )
    C.equal(
        sspec["securityContext"].get("seccompProfile"),
        {"type": "RuntimeDefault"},
        "server pod seccomp RuntimeDefault",
    )
    C.check(not sspec.get("hostNetwork"), "server has no hostNetwork")
    # The kubelet makes an emptyDir root:<fsGroup> 2777; the non-root server cannot chmod it, so
    # its data directory must be a subdirectory it creates, never the mount point itself.
    server_mounts = [m["mountPath"] for m in sc.get("volumeMounts", [])]
    data_dir = sflags.get("--data-dir", "")
    C.check(
        any(data_dir.startswith(path.rstrip("/") + "/") for path in server_mounts)
        and data_dir not in server_mounts,
        "server --data-dir is a subdirectory of its volume, not the mount point",
    )
    # Pod Security Standard "restricted" (the agent DaemonSet is privileged on purpose).
    pod_sc = sspec["securityContext"]
    C.check(
        not sspec.get("hostPID")
        and not sspec.get("hostIPC")
        and all("hostPath" not in v for v in sspec.get("volumes", []))
        and all(
            set(c["securityContext"].get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}
            and c["securityContext"].get("allowPrivilegeEscalation") is False
            and not c["securityContext"].get("privileged")
            and (c["securityContext"].get("runAsNonRoot") or pod_sc.get("runAsNonRoot"))
            and c["securityContext"].get("capabilities", {}).get("drop") == ["ALL"]
            for c in sspec["containers"]
        )
        and (pod_sc.get("seccompProfile", {}).get("type") in ("RuntimeDefault", "Localhost")),
        "server pod satisfies Pod Security 'restricted'",
    )
    C.check(
        sspec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0][
            "podAffinityTerm"
        ]["topologyKey"]
        == "kubernetes.io/hostname",
        "server prefers spreading over hostnames",
    )
    C.equal(volumes(server)["data"], {"name": "data", "emptyDir": {}}, "server data dir is an emptyDir")

    service = r.one("Service", "signet-server")
    C.equal(
        {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]},
        {"grpc": (8081, "grpc")},
        "Service signet-server exposes only the agent API (grpc 8081)",
    )
    C.equal(service["spec"]["type"], "ClusterIP", "Service signet-server is ClusterIP by default")
    C.check(
        "signet.dev/metrics" not in service["metadata"]["labels"],
        "Service signet-server is not labelled for metrics scraping",
    )
    server_metrics = r.one("Service", "signet-server-metrics")
    C.equal(
        {p["name"]: (p["port"], p["targetPort"]) for p in server_metrics["spec"]["ports"]},
        {"metrics": (8082, "health")},
        "Service signet-server-metrics exposes only metrics 8082",
    )
    C.equal(server_metrics["spec"]["type"], "ClusterIP", "Service signet-server-metrics is ClusterIP")
    C.equal(
        server_metrics["spec"]["selector"],
        service["spec"]["selector"],
        "Service signet-server-metrics selects the server pods",
    )
    C.equal(r.one("PodDisruptionBudget")["spec"]["minAvailable"], 1, "PDB minAvailable 1")

    # RBAC exactly as docs/kubernetes.md.
    C.equal(
        r.one("ClusterRole", f"signet-{NAMESPACE}-server")["rules"],
        expected_server_cluster_rules(sflags.get("--default-identity-name")),
        "server ClusterRole rules (the default identity's resourceNames is the name the server gets)",
    )
    C.equal(
        r.one("Role", "signet-server")["rules"],
        expected_server_role_rules(
            sflags["--ca-secret"],
            sflags["--bundle-configmap"],
            sflags["--lease-name"],
            sflags["--federated-bundles-configmap"],
        ),
        "server Role rules name the Secret, ConfigMap and Lease the server is told to use",
    )
    C.equal(
        r.one("ClusterRole", f"signet-{NAMESPACE}-agent")["rules"],
        [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}],
        "agent ClusterRole: pods list/watch only (no get)",
    )
    for binding in r.all("ClusterRoleBinding") + r.all("RoleBinding"):
        subject = binding["subjects"][0]
        C.check(
            subject["namespace"] == NAMESPACE and subject["name"] in ("signet-server", "signet-agent"),
            f"{binding['kind']} {binding['metadata']['name']} binds a chart ServiceAccount",
        )

    agent = r.one("DaemonSet", "signet-agent")
    aspec = agent["spec"]["template"]["spec"]
    C.equal(aspec.get("hostPID"), True, "agent DaemonSet has hostPID")
    C.check(not aspec.get("hostNetwork"), "agent DaemonSet has no hostNetwork")
    C.equal(aspec.get("serviceAccountName"), "signet-agent", "agent runs as ServiceAccount signet-agent")
    C.equal(aspec.get("automountServiceAccountToken"), False, "agent pod does not automount the API token")
    C.equal(
        aspec["securityContext"].get("seccompProfile"),
        {"type": "RuntimeDefault"},
        "agent pod seccomp RuntimeDefault",
    )
    C.equal(aspec.get("tolerations"), [{"operator": "Exists"}], "agent tolerates every taint")
    C.equal(
        agent["spec"]["updateStrategy"],
        {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
        "agent updateStrategy",
    )
    C.check("priorityClassName" not in aspec, "agent has no priority class by default")
    cs = containers(agent)
    C.equal(
        sorted(cs),
        ["agent", "csi", "node-driver-registrar"],
        "agent pod has agent, csi and node-driver-registrar",
    )
    ac = cs["agent"]
    aflags = flags(ac)
    for flag, value in {
        "--mode": "kubernetes",
        "--trust-domain": "example.org",
        "--server-address": f"signet-server.{NAMESPACE}.svc:8081",
        "--trust-bundle": "/run/signet/bundle/bundle.pem",
        "--socket-path": "/run/signet/sockets/api.sock",
        "--data-dir": "/var/lib/signet/agent",
        "--token-path": "/var/run/secrets/tokens/signet-agent",
        "--health-address": "0.0.0.0:8082",
        "--container-wait": "10s",
    }.items():
        C.equal(aflags.get(flag), value, f"agent {flag}={value}")
    C.equal(
        ac["env"],
        [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}],
        "agent env NODE_NAME",
    )
    asc = ac["securityContext"]
    C.check(
        asc.get("runAsUser") == 0
        and asc.get("readOnlyRootFilesystem") is True
        and asc.get("allowPrivilegeEscalation") is False
        and asc.get("capabilities") == {"drop": ["ALL"]}
        and not asc.get("privileged"),
        "agent container: root, read-only, no capabilities, not privileged",
    )
    C.equal(ac["readinessProbe"]["httpGet"]["path"], "/readyz", "agent readiness probe /readyz")
    C.equal(ac["livenessProbe"]["httpGet"]["path"], "/livez", "agent liveness probe /livez")
    vols = volumes(agent)
    C.equal(
        vols["sockets"]["hostPath"],
        {"path": "/run/signet/sockets", "type": "DirectoryOrCreate"},
        "socket dir hostPath",
    )
    C.equal(
        vols["data"]["hostPath"],
        {"path": "/var/lib/signet/agent", "type": "DirectoryOrCreate"},
        "agent data dir hostPath",
    )
    C.check(
        vols["bundle"]["configMap"]["name"] == "signet-bundle"
        and not vols["bundle"]["configMap"].get("optional"),
        "agent mounts ConfigMap signet-bundle, not optional",
    )
    C.equal(
        vols["psat"]["projected"]["sources"],
        [
            {
                "serviceAccountToken": {
                    "path": "signet-agent",
                    "audience": "signet-server",
                    "expirationSeconds": 7200,
                }
            }
        ],
        "agent PSAT token: audience signet-server, 7200 s",
    )
    am = mounts(ac)
    C.equal(am["psat"]["mountPath"], "/var/run/secrets/tokens", "PSAT mounted at /var/run/secrets/tokens")
    C.equal(am["bundle"]["mountPath"], "/run/signet/bundle", "bundle mounted at /run/signet/bundle")
    C.equal(
        am["kube-api-access"]["mountPath"],
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "API token mounted into the agent container",
    )

    csi = cs["csi"]
    C.equal(csi["args"][0], "csi", "csi container runs `signet csi`")
    C.equal(
        flags(csi),
        {
            "--csi-socket": "/csi/csi.sock",
            "--workload-socket-dir": "/run/signet/sockets",
            "--kubelet-pods-dir": "/var/lib/kubelet/pods",
            "--driver-name": "csi.signet.dev",
            "--log-level": "info",
            "--log-format": "json",
        },
        "csi flags",
    )
    C.equal(csi["securityContext"].get("privileged"), True, "csi container is privileged")
    C.equal(csi["securityContext"].get("runAsUser"), 0, "csi container runs as root")
    C.equal(csi["securityContext"].get("readOnlyRootFilesystem"), True, "csi container has a read-only root")
    cm = mounts(csi)
    C.equal(
        cm["kubelet-pods"],
        {"name": "kubelet-pods", "mountPath": "/var/lib/kubelet/pods", "mountPropagation": "Bidirectional"},
        "csi mounts the kubelet pods dir at the same path with Bidirectional propagation",
    )
    C.equal(cm["sockets"].get("readOnly"), True, "csi mounts the socket dir read-only")
    C.check("kube-api-access" not in cm, "csi container gets no API token")
    C.equal(
        vols["kubelet-pods"]["hostPath"],
        {"path": "/var/lib/kubelet/pods", "type": "Directory"},
        "kubelet pods hostPath",
    )
    C.equal(
        vols["csi-plugin"]["hostPath"],
        {"path": "/var/lib/kubelet/plugins/csi.signet.dev", "type": "DirectoryOrCreate"},
        "plugin dir hostPath",
    )
    reg = cs["node-driver-registrar"]
    C.equal(reg["image"], "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0", "registrar image")
    C.equal(
        reg["args"],
        [
            "--csi-address=/csi/csi.sock",
            "--kubelet-registration-path=/var/lib/kubelet/plugins/csi.signet.dev/csi.sock",
            "--health-port=9809",
        ],
        "registrar args",
    )
    C.equal(
        reg["livenessProbe"]["httpGet"],
        {"path": "/healthz", "port": "registrar"},
        "registrar liveness /healthz",
    )
    C.equal(
        vols["kubelet-plugin-registry"]["hostPath"]["path"],
        "/var/lib/kubelet/plugins_registry",
        "registration dir hostPath",
    )

    driver = r.one("CSIDriver", "csi.signet.dev")
    C.equal(
        driver["spec"],
        {
            "attachRequired": False,
            "podInfoOnMount": True,
            "fsGroupPolicy": "None",
            "volumeLifecycleModes": ["Ephemeral"],
            "requiresRepublish": False,
        },
        "CSIDriver spec",
    )
    C.equal(sorted(set(signet_images(r))), ["signet:0.1.0"], "Signet image defaults to the appVersion tag")

    if binary:
        check_binary_flags(r, binary)


def check_upgrade() -> None:
    print("render: install, then upgrade on the same API server and release storage")
    custom = {
        "trustDomain": "example.org",
        "server": {"className": "blue"},
        "identities": {"default": {"spiffeIDTemplate": QUOTED_TEMPLATE}},
    }
    with Cluster() as cluster:
        cluster.install({"trustDomain": "example.org"})
        r = cluster.upgrade(custom)
        C.equal(r.release.get("version"), 2, "the upgrade is revision 2 of the same release")
        check_server_default_identity(
            r, QUOTED_TEMPLATE, "signet-default", "upgrade to a template with quotes", class_name="blue"
        )
        C.equal(
            flags(containers(r.one("Deployment"))["server"]).get("--class-name"),
            "blue",
            "server gets --class-name (the default identity's className comes from it)",
        )
        C.check(QUOTED_TEMPLATE in r.notes, "NOTES show the new template")
        C.check(
            not cluster.api.rejected, "the API server accepted every object", "; ".join(cluster.api.rejected)
        )

        r = cluster.upgrade({"trustDomain": "example.org", "identities": {"default": {"enabled": False}}})
        check_no_default_identity(r, "upgrade with identities.default.enabled=false")
        C.equal(
            [w for w in r.writes if w[1] == "ClusterSPIFFEID"],
            [],
            "identities.default.enabled=false on upgrade: Helm deletes no ClusterSPIFFEID (README.md: delete it by hand)",
        )

    r = install({"trustDomain": "example.org", "identities": {"default": {"enabled": False}}})
    check_no_default_identity(r, "identities.default.enabled=false")

    print("render: templates Kubernetes would expand, other release names")
    r = install(
        {"trustDomain": "example.org", "identities": {"default": {"spiffeIDTemplate": DOLLAR_TEMPLATE}}}
    )
    check_server_default_identity(r, DOLLAR_TEMPLATE, "signet-default", "a template with $(POD_NAME) and $$")
    r = install({"trustDomain": "example.org"}, release="prod")
    check_server_default_identity(r, DEFAULT_TEMPLATE, "prod-signet-default", "release prod")
    C.check("prod-signet-default" in r.notes, "release prod: NOTES name prod-signet-default")
    r = install({"trustDomain": "example.org", "fullnameOverride": "idp"})
    check_server_default_identity(r, DEFAULT_TEMPLATE, "idp-default", "fullnameOverride=idp")

    print("render: crds.install=false")
    r = install({"trustDomain": "example.org", "crds": {"install": False}}, SIGNET_GROUP)
    C.equal(len(r.all("CustomResourceDefinition")), 0, "crds.install=false: no CRDs")
    check_server_default_identity(r, DEFAULT_TEMPLATE, "signet-default", "crds.install=false")
    message = install_error({"trustDomain": "example.org", "crds": {"install": False}})
    C.equal(
        message,
        "",
        "crds.install=false: Helm itself needs no Signet kind (the server applies the default identity)",
    )


def check_variants() -> None:
    print("render: server.upstreamCA.secretName")
    r = install({"trustDomain": "example.org", "server": {"upstreamCA": {"secretName": "signet-upstream"}}})
    sflags = flags(containers(r.one("Deployment"))["server"])
    C.equal(sflags.get("--upstream-ca-secret"), "signet-upstream", "upstreamCA.secretName becomes --upstream-ca-secret")
    C.equal(
        r.one("Role", "signet-server")["rules"],
        expected_server_role_rules(
            sflags["--ca-secret"],
            sflags["--bundle-configmap"],
            sflags["--lease-name"],
            sflags["--federated-bundles-configmap"],
            upstream="signet-upstream",
        ),
        "the server Role may read and watch the upstream Secret, by name, and not write it",
    )

    print("render: csi.enabled=false")
    r = install({"trustDomain": "example.org", "csi": {"enabled": False}})
    C.equal(len(r.all("CSIDriver")), 0, "no CSIDriver")
    agent = r.one("DaemonSet")
    C.equal(sorted(containers(agent)), ["agent"], "agent pod has only the agent container")
    C.check(not any("kubelet" in str(v) for v in volumes(agent).values()), "no kubelet hostPaths")
    C.check("driver: csi.signet.dev" not in r.notes, "NOTES omit the CSI volume")

    print("render: crds.keep=false")
    r = install({"trustDomain": "example.org", "crds": {"keep": False}})
    C.check(
        all(
            "helm.sh/resource-policy" not in (c["metadata"].get("annotations") or {})
            for c in r.all("CustomResourceDefinition")
        ),
        "crds.keep=false: no keep annotation",
    )

    print("render: serviceMonitor and Grafana dashboard, server.service.type=LoadBalancer")
    r = install(
        {
            "trustDomain": "example.org",
            "commonLabels": {"team": "identity"},
            "server": {"service": {"type": "LoadBalancer"}},
            "metrics": {
                "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prom"}},
                "grafanaDashboard": {"enabled": True},
            },
        },
        MONITORING_GROUP,
    )
    monitors = {m["metadata"]["name"]: m for m in r.all("ServiceMonitor")}
    C.equal(sorted(monitors), ["signet-agent", "signet-server"], "ServiceMonitors for server and agents")
    for name, monitor in monitors.items():
        endpoint = monitor["spec"]["endpoints"][0]
        C.check(
            endpoint["port"] == "metrics"
            and endpoint["path"] == "/metrics"
            and endpoint["interval"] == "15s",
            f"ServiceMonitor {name} scrapes port metrics /metrics every 15s",
        )
        C.equal(
            monitor["metadata"]["labels"].get("release"),
            "prom",
            f"ServiceMonitor {name} has the extra labels",
        )
    services = {s["metadata"]["name"]: s for s in r.all("Service")}
    for name, monitor in monitors.items():
        wanted = monitor["spec"]["selector"]["matchLabels"]
        selected = sorted(
            n for n, svc in services.items() if wanted.items() <= svc["metadata"]["labels"].items()
        )
        C.equal(
            selected,
            [f"{name}-metrics"],
            f"ServiceMonitor {name} selects only Service {name}-metrics",
        )
    C.equal(
        services["signet-server"]["spec"]["type"],
        "LoadBalancer",
        "server.service.type=LoadBalancer applies to the agent API Service",
    )
    C.equal(
        services["signet-server-metrics"]["spec"]["type"],
        "ClusterIP",
        "server.service.type=LoadBalancer: the metrics Service stays ClusterIP",
    )
    C.equal(
        [p["name"] for p in services["signet-server"]["spec"]["ports"]],
        ["grpc"],
        "server.service.type=LoadBalancer: metrics are not exposed through the load balancer",
    )
    headless = r.one("Service", "signet-agent-metrics")
    C.equal(headless["spec"].get("clusterIP"), "None", "agent metrics Service is headless")
    C.equal(headless["spec"]["ports"][0]["name"], "metrics", "agent metrics Service port is named metrics")
    dashboard = r.one("ConfigMap", "signet-dashboard")
    C.equal(
        dashboard["metadata"]["labels"].get("grafana_dashboard"),
        "1",
        'dashboard ConfigMap has grafana_dashboard: "1"',
    )
    board = json.loads(dashboard["data"]["signet.json"])
    C.check(len(board.get("panels", [])) >= 8, "dashboard JSON parses and has panels")
    C.check(
        all(o["metadata"]["labels"].get("team") == "identity" for o in r.objects),
        "commonLabels reach every object",
    )

    print("render: image digest, registry, agent and server options")
    r = install(
        {
            "trustDomain": "example.org",
            "image": {
                "registry": "registry.example.com",
                "repository": "platform/signet",
                "tag": "9.9.9",
                "digest": DIGEST,
            },
            "server": {
                "replicas": 1,
                "nodeLabelKeys": ["topology.kubernetes.io/zone"],
                "ignoreNamespaces": ["kube-.*"],
            },
            "agent": {"priorityClassName": "system-node-critical", "healthPort": 9090},
            "csi": {"kubeletDir": "/var/lib/k0s/kubelet", "driverName": "csi.example.com"},
        },
    )
    images = set(signet_images(r))
    C.equal(
        images,
        {f"registry.example.com/platform/signet@{DIGEST}"},
        "the digest wins over the tag in every Signet container",
    )
    C.equal(len(r.all("PodDisruptionBudget")), 0, "no PDB with one replica")
    sflags = flags(containers(r.one("Deployment"))["server"])
    C.equal(sflags.get("--node-label-keys"), "topology.kubernetes.io/zone", "server --node-label-keys")
    C.equal(
        sflags.get("--ignore-namespaces"), f"kube-.*,{NAMESPACE}", "the release namespace is always ignored"
    )
    agent = r.one("DaemonSet")
    C.equal(
        agent["spec"]["template"]["spec"].get("priorityClassName"),
        "system-node-critical",
        "agent priorityClassName",
    )
    cs = containers(agent)
    C.equal(flags(cs["agent"]).get("--health-address"), "0.0.0.0:9090", "agent health port")
    C.equal(flags(cs["csi"]).get("--kubelet-pods-dir"), "/var/lib/k0s/kubelet/pods", "custom kubelet dir")
    C.equal(
        mounts(cs["csi"])["kubelet-pods"]["mountPath"],
        "/var/lib/k0s/kubelet/pods",
        "kubelet pods mounted at the kubelet's path",
    )
    C.check(
        "--kubelet-registration-path=/var/lib/k0s/kubelet/plugins/csi.example.com/csi.sock"
        in cs["node-driver-registrar"]["args"],
        "registrar registration path follows kubeletDir and driverName",
    )
    C.equal(r.one("CSIDriver")["metadata"]["name"], "csi.example.com", "CSIDriver named after csi.driverName")


def check_default_policy() -> None:
    print("defaultPolicy (reserved)")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    C.equal(values.get("defaultPolicy"), "allow-trust-domain", "defaultPolicy defaults to allow-trust-domain")
    C.equal(
        schema["properties"]["defaultPolicy"].get("enum"),
        DEFAULT_POLICIES,
        "defaultPolicy enum is allow-trust-domain | deny | allow-authenticated (DESIGN §10)",
    )
    for policy in DEFAULT_POLICIES:
        r = install({"trustDomain": "example.org", "defaultPolicy": policy})
        passed = [
            c["name"]
            for kind in ("Deployment", "DaemonSet")
            for w in r.all(kind)
            for c in w["spec"]["template"]["spec"]["containers"]
            if policy in json.dumps(c)
        ]
        C.equal(passed, ["server"], f"defaultPolicy={policy} is accepted and passed to the server only")
        C.equal(
            flags(containers(r.one("Deployment"))["server"]).get("--default-policy"),
            policy,
            f"defaultPolicy={policy} becomes --default-policy={policy}",
        )


def check_failures() -> None:
    print("render: refused values")
    for values, what in [
        ({"trustDomain": "Example.ORG"}, "an uppercase trust domain"),
        ({"trustDomain": "example.org", "server": {"ca": {"keyType": "ed25519"}}}, "an unknown CA key type"),
        (
            {"trustDomain": "example.org", "server": {"svidTtl": "1h30m"}},
            "a duration the binary cannot parse",
        ),
        ({"trustDomain": "example.org", "server": {"replica": 3}}, "an unknown key"),
        ({"trustDomain": "example.org", "image": {"digest": "sha256:short"}}, "a malformed digest"),
        ({"trustDomain": "example.org", "defaultPolicy": "maybe"}, "an unknown defaultPolicy"),
        (
            {"trustDomain": "example.org", "defaultPolicy": "allow"},
            "defaultPolicy allow (now allow-trust-domain)",
        ),
        (
            {"trustDomain": "example.org", "identities": {"default": {"podSelector": {}}}},
            "identities.default.podSelector (removed: the server-managed identity has no selectors)",
        ),
        (
            {
                "trustDomain": "example.org",
                "identities": {"default": {"namespaceSelector": {"matchLabels": {"a": "b"}}}},
            },
            "identities.default.namespaceSelector (removed)",
        ),
        (
            {
                "trustDomain": "example.org",
                "identities": {"default": {"spiffeIDTemplate": "{{ .TrustDomain }}/x"}},
            },
            "a default identity template not starting with spiffe://",
        ),
    ]:
        message = install_error(values)
        C.check(
            bool(message) and "schema" in message.lower(),
            f"the schema refuses {what}",
            message[:300] or "install succeeded",
        )
    # agent.socketDir: the CSI driver bind-mounts the whole directory into every pod, and a
    # read-only mount does not stop connect(2): a shared directory would hand pods its sockets.
    for socket_dir, why in SHARED_SOCKET_DIRS:
        message = install_error({"trustDomain": "example.org", "agent": {"socketDir": socket_dir}})
        C.check(
            bool(message) and "schema" in message.lower() and "socketDir" in message,
            f"the schema refuses agent.socketDir={socket_dir} ({why})",
            message[:300] or "install succeeded",
        )
    for values, what in [
        ({"agent": {"socketDir": "/var/lib/signet/agent"}}, "agent.dataDir itself"),
        ({"agent": {"socketDir": "/opt/signet", "dataDir": "/opt/signet/agent"}}, "a parent of agent.dataDir"),
        ({"agent": {"socketDir": "/opt/signet/agent/sockets", "dataDir": "/opt/signet/agent"}}, "inside agent.dataDir"),
        (
            {"agent": {"socketDir": "/opt/k/kubelet/signet"}, "csi": {"kubeletDir": "/opt/k/kubelet/"}},
            "inside a custom csi.kubeletDir",
        ),
    ]:
        message = install_error({"trustDomain": "example.org", **values})
        C.check(
            "must be a dedicated directory" in message,
            f"rendering refuses an agent.socketDir {what}",
            message[:300] or "install succeeded",
        )
    for socket_dir in ("/run/signet-sockets", "/var/run/signet/sockets", "/opt/signet/sockets"):
        r = install({"trustDomain": "example.org", "agent": {"socketDir": socket_dir}})
        C.equal(
            volumes(r.one("DaemonSet"))["sockets"]["hostPath"]["path"],
            socket_dir,
            f"agent.socketDir={socket_dir} is accepted and becomes the socket hostPath",
        )

    message = install_error({"trustDomain": "example.org"}, kube="v1.28.9")
    C.check(
        "kubeVersion" in message or "incompatible" in message.lower(),
        "Kubernetes 1.28 is refused (kubeVersion >=1.29)",
        message[:300],
    )
    message = install_error({"trustDomain": "example.org", "metrics": {"serviceMonitor": {"enabled": True}}})
    C.check(
        "ServiceMonitor" in message,
        "serviceMonitor without the Prometheus Operator CRDs fails at install",
        message[:300],
    )

    # Federation and OIDC discovery.
    r = install(
        {
            "trustDomain": "example.org",
            "federation": {"bundleEndpoint": {"enabled": True, "profile": "https_web", "tlsSecretName": "bundle-tls"}},
            "oidc": {"enabled": True, "issuer": "https://oidc.example.org", "insecureHttp": True,
                     "ingress": {"enabled": True, "host": "oidc.example.org", "tlsSecretName": "oidc-tls"}},
        }
    )
    server = containers(r.one("Deployment"))["server"]
    sflags = flags(server)
    C.equal(
        {k: sflags.get(k) for k in ("--bundle-endpoint-address", "--bundle-endpoint-profile", "--bundle-endpoint-cert-file", "--jwt-issuer", "--oidc-address")},
        {
            "--bundle-endpoint-address": "0.0.0.0:8443",
            "--bundle-endpoint-profile": "https_web",
            "--bundle-endpoint-cert-file": "/etc/signet/bundle-endpoint-tls/tls.crt",
            "--jwt-issuer": "https://oidc.example.org",
            "--oidc-address": "0.0.0.0:8444",
        },
        "the bundle endpoint and OIDC discovery flags follow the values",
    )
    C.check("--oidc-insecure-http" in server.get("args", []), "oidc.insecureHttp passes --oidc-insecure-http")
    C.equal(
        volumes(r.one("Deployment"))["bundle-endpoint-tls"]["secret"]["secretName"],
        "bundle-tls",
        "https_web mounts the bundle endpoint's TLS Secret",
    )
    C.equal(
        [p["targetPort"] for p in r.one("Service", "signet-bundle-endpoint")["spec"]["ports"]]
        + [p["targetPort"] for p in r.one("Service", "signet-oidc")["spec"]["ports"]],
        ["bundle-endpoint", "oidc"],
        "the bundle endpoint and discovery get their Services",
    )
    ingress = r.one("Ingress", "signet-oidc")
    C.equal(ingress["spec"]["rules"][0]["host"], "oidc.example.org", "the discovery Ingress serves the issuer's host")
    for values, expected, what in [
        ({"federation": {"bundleEndpoint": {"enabled": True, "profile": "https_web"}}}, "tlsSecretName", "https_web without a TLS Secret"),
        ({"oidc": {"enabled": True, "insecureHttp": True}}, "oidc.issuer", "OIDC discovery without an issuer"),
        ({"oidc": {"enabled": True, "issuer": "https://o.example"}}, "exactly one of", "OIDC discovery with neither TLS nor insecureHttp"),
        ({"oidc": {"enabled": True, "issuer": "https://o.example", "insecureHttp": True, "tlsSecretName": "x"}}, "exactly one of", "OIDC discovery with both TLS and insecureHttp"),
    ]:
        message = install_error({"trustDomain": "example.org", **values})
        C.check(expected in message, f"rendering refuses {what}", message[:300] or "install succeeded")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--signet-bin",
        default=os.environ.get("SIGNET_BIN"),
        help="check the chart's flags against this signet binary's --help",
    )
    args = parser.parse_args()
    global SIGNET_BIN
    SIGNET_BIN = args.signet_bin
    print(
        f"helm-sdkpy {helm_sdkpy.__version__} ({helm_sdkpy.get_version()}); chart {CHART.relative_to(ROOT)}"
    )
    print(
        "rendering: helm-sdkpy Install and Upgrade against a fake API server on 127.0.0.1 (HELM_DRIVER=memory)"
    )

    def check_defaults_and_flags() -> None:
        check_defaults(args.signet_bin)

    steps = [
        check_files,
        check_examples,
        check_lint,
        check_defaults_and_flags,
        check_upgrade,
        check_variants,
        check_default_policy,
        check_failures,
    ]
    for step in steps:
        try:
            step()
        except Exception as error:  # noqa: BLE001 - any crash is a failed check
            C.check(
                False,
                f"{getattr(step, '__name__', 'check')} ran to the end",
                f"{type(error).__name__}: {error}",
            )
    print()
    print(f"helm-check: {C.passed} passed, {len(C.failed)} failed")
    if C.failed:
        print("failed:", file=sys.stderr)
        for failure in C.failed:
            print(f"  - {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
