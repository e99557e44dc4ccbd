"""
deploy/kubernetes renders offline with kubectl's Kustomize; every rendered
manifest validates against the Kubernetes schemas (kubernetes-validate's
bundled ones, no network) and the PodMonitor against the fields of the
Prometheus Operator's CRD that it uses; the numbers in the manifests agree
with the configuration they carry (drain_timeout, the admin port, the token
path) and with each other (N, written once).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from supervisor.config import Config, parseConfig
from supervisor.daemon import Options
from supervisor.shard import Shard
from tests.programs import requireProgram

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still commonly run, and the newest the schemas know.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())
KINDS = {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget", "PodMonitor"}

# The PodMonitor fields this deployment uses, with the types, patterns and
# requirements of the Prometheus Operator's CRD (monitoring.coreos.com/v1,
# openAPIV3Schema of podmonitors, operator 0.7x-0.9x). Anything else is
# refused, so that a typo cannot pass as an unknown field.
DURATION = (
    r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
)
LABELS = {"type": "object", "additionalProperties": {"type": "string"}}
PODMONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                "namespace": {"type": "string"},
                "labels": LABELS,
                "annotations": LABELS,
            },
        },
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"matchLabels": LABELS},
                },
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}


def render(directory: Path = DEPLOY) -> list[dict[str, Any]]:
    kubectl = requireProgram("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


@pytest.fixture(scope="module")
def manifests() -> dict[str, dict[str, Any]]:
    rendered = render()
    byKind = {m["kind"]: m for m in rendered}
    assert len(byKind) == len(rendered), "one manifest of each kind"
    return byKind


def podSpec(manifests: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = manifests["StatefulSet"]["spec"]["template"]["spec"]
    return spec


def container(manifests: dict[str, dict[str, Any]], name: str = "netsupervisor") -> dict[str, Any]:
    spec = podSpec(manifests)
    [found] = [c for c in spec["containers"] + spec["initContainers"] if c["name"] == name]
    return found  # type: ignore[no-any-return]


def carriedConfig(manifests: dict[str, dict[str, Any]]) -> Config:
    text = manifests["ConfigMap"]["data"]["netsupervisor.toml"]
    return parseConfig(text, "netsupervisor.toml")


def seconds(value: str) -> float:
    found = re.fullmatch(r"(\d+)s", value)
    assert found, value
    return float(found.group(1))


def test_everyManifestValidatesAgainstTheKubernetesSchemas(
    manifests: dict[str, dict[str, Any]],
) -> None:
    assert set(manifests) == KINDS
    for kind, manifest in manifests.items():
        if kind == "PodMonitor":
            continue
        for version in VERSIONS:
            kubernetes_validate.validate(manifest, version, strict=True)


def test_aBrokenManifestWouldBeCaught(manifests: dict[str, dict[str, Any]]) -> None:
    """
    The validation can fail: a misspelt field and a wrong type are refused.
    """
    broken = yaml.safe_load(yaml.safe_dump(manifests["StatefulSet"]))
    broken["spec"]["template"]["spec"]["terminationGracePeriodSecond"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)
    monitor = yaml.safe_load(yaml.safe_dump(manifests["PodMonitor"]))
    monitor["spec"]["podMetricsEndpoints"][0]["interval"] = "15 seconds"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(monitor, PODMONITOR_SCHEMA)


def test_thePodMonitorScrapesTheShards(manifests: dict[str, dict[str, Any]]) -> None:
    monitor = manifests["PodMonitor"]
    jsonschema.validate(monitor, PODMONITOR_SCHEMA)
    labels = manifests["StatefulSet"]["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    ports = {p["name"]: p["containerPort"] for p in container(manifests)["ports"]}
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert seconds(endpoint["scrapeTimeout"]) <= seconds(endpoint["interval"])


def test_theConfigMapCarriesAValidConfig(manifests: dict[str, dict[str, Any]]) -> None:
    config = carriedConfig(manifests)
    assert config.connections, "an example with connections"
    assert config.admin.token_file, "a non-loopback admin listener needs a token"


def test_terminationCoversPreStopAndTheWholeDrain(manifests: dict[str, dict[str, Any]]) -> None:
    config = carriedConfig(manifests)
    drain = max(c.drain_timeout for c in config.connections)
    pod = podSpec(manifests)
    preStop = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert preStop[0] == "sleep"
    pause = float(preStop[1])
    # SIGTERM comes after preStop; the drain may take drain_timeout, and SPEC
    # allows a second past it: 5 s covers that and the process's exit.
    assert pod["terminationGracePeriodSeconds"] >= pause + drain + 5
    assert 0 < pause <= 10


def test_probes(manifests: dict[str, dict[str, Any]]) -> None:
    config = carriedConfig(manifests)
    drain = max(c.drain_timeout for c in config.connections)
    c = container(manifests)
    ready, live = c["readinessProbe"], c["livenessProbe"]
    assert ready["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert live["httpGet"] == {"path": "/healthz", "port": "admin"}
    for probe in (ready, live):
        assert probe["timeoutSeconds"] < probe["periodSeconds"]
    # A drain turns /readyz to 503 at once: seen well within the drain.
    assert ready["periodSeconds"] * ready["failureThreshold"] < drain
    # A busy reactor (a reconnect storm) must not get the pod killed as soon
    # as it stops being ready.
    window = live["periodSeconds"] * live["failureThreshold"]
    assert window > ready["periodSeconds"] * ready["failureThreshold"]
    assert window >= 30


def test_theAdminPortIsTheSameEverywhere(manifests: dict[str, dict[str, Any]]) -> None:
    config = carriedConfig(manifests)
    listen = config.admin.listen
    assert re.fullmatch(r"tcp:(\d+)", listen), "every interface: probes reach the pod IP"
    port = int(listen.split(":")[1])
    c = container(manifests)
    assert c["ports"] == [{"name": "admin", "containerPort": port}]
    annotations = manifests["StatefulSet"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(port),
        "prometheus.io/path": "/metrics",
    }
    service = manifests["Service"]["spec"]
    assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"] is True
    assert service["ports"] == [{"name": "admin", "port": port, "targetPort": "admin"}]
    assert (
        manifests["StatefulSet"]["spec"]["serviceName"] == manifests["Service"]["metadata"]["name"]
    )


def test_theTokenReachesTheProcessReadableByItsUserOnly(
    manifests: dict[str, dict[str, Any]],
) -> None:
    tokenFile = carriedConfig(manifests).admin.token_file
    init = container(manifests, "admin-token")
    assert init["command"][:3] == ["install", "-m", "0400"]
    source, target = init["command"][3:]
    assert target == tokenFile
    mounts = {m["name"]: m for m in init["volumeMounts"]}
    assert source.startswith(mounts["admin-token-secret"]["mountPath"] + "/")
    assert target.startswith(mounts["runtime"]["mountPath"] + "/")
    main = {m["name"]: m for m in container(manifests)["volumeMounts"]}
    assert "admin-token-secret" not in main, "the process sees only its own copy"
    assert tokenFile.startswith(main["runtime"]["mountPath"] + "/")
    volumes = {v["name"]: v for v in podSpec(manifests)["volumes"]}
    assert volumes["runtime"]["emptyDir"]["medium"] == "Memory"
    secret = volumes["admin-token-secret"]["secret"]
    # Secret files belong to root: the copy, run as the pod's user, must read it.
    assert secret["defaultMode"] & stat.S_IROTH


def test_nIsWrittenOnceAndEveryPodGetsIt(
    manifests: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    def shards(rendered: dict[str, dict[str, Any]]) -> tuple[int, str]:
        env = {e["name"]: e for e in container(rendered)["env"]}
        return rendered["StatefulSet"]["spec"]["replicas"], env["NETSUPERVISOR_SHARDS"]["value"]

    assert shards(manifests) == (4, "4")
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    kustomization = copy / "kustomization.yaml"
    kustomization.write_text(kustomization.read_text().replace("count: 4", "count: 7"))
    assert shards({m["kind"]: m for m in render(copy)}) == (7, "7")


def test_aPodTakesItsShardFromItsName(manifests: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """
    The container's command, run by a real shell with a stand-in twistd that
    prints its arguments, as pod netsupervisor-3 of 4 would run it.
    """
    c = container(manifests)
    assert c["command"] == ["/bin/sh", "-c"]
    fake = tmp_path / "twistd"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {
        "PATH": f"{tmp_path}:{os.environ['PATH']}",
        "POD_NAME": "netsupervisor-3",
        "NETSUPERVISOR_SHARDS": "4",
    }
    done = subprocess.run(
        [*c["command"], *c["args"]], env=env, capture_output=True, text=True, timeout=10, check=True
    )
    argv = done.stdout.splitlines()
    assert argv[argv.index("--shard") + 1] == "3/4"
    assert argv[argv.index("--config") + 1] == "/etc/netsupervisor/netsupervisor.toml"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["config"] == "/etc/netsupervisor"
    assert list(manifests["ConfigMap"]["data"]) == ["netsupervisor.toml"]
    assert "--nodaemon" in argv and "--pidfile=" in argv
    command = Options()
    command.parseOptions(argv[argv.index("netsupervisor") + 1 :])
    assert command["shard"] == Shard(3, 4)


def test_aChangedConfigRollsThePods(manifests: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    """
    No SIGHUP in Kubernetes: the ConfigMap's name carries a hash of the file,
    so a changed file changes the pod template, and the StatefulSet rolls
    the pods one at a time.
    """
    name = manifests["ConfigMap"]["metadata"]["name"]
    assert re.fullmatch(r"netsupervisor-config-[a-z0-9]{10}", name)
    volumes = {v["name"]: v for v in podSpec(manifests)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == name
    assert manifests["StatefulSet"]["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    copy = tmp_path / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    toml = copy / "netsupervisor.toml"
    toml.write_text(toml.read_text().replace("drain_timeout = 30.0", "drain_timeout = 20.0"))
    changed = {m["kind"]: m for m in render(copy)}
    newName = changed["ConfigMap"]["metadata"]["name"]
    assert newName != name
    volumes = {v["name"]: v for v in podSpec(changed)["volumes"]}
    assert volumes["config"]["configMap"]["name"] == newName


def test_resources(manifests: dict[str, dict[str, Any]]) -> None:
    resources = container(manifests)["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "cpu" not in resources.get("limits", {}), "CPU throttling delays heartbeats"
    assert "memory" in resources["limits"]
    pod = podSpec(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert manifests["StatefulSet"]["spec"]["podManagementPolicy"] == "Parallel"
    # The file the deployment documents is the one the tests read.
    assert tomllib.loads((DEPLOY / "netsupervisor.toml").read_text())
