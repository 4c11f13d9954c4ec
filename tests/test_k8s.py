"""Offline checks of deploy/k8s, since no cluster runs here or in CI.

- kustomize (v5: a `kustomize` binary, or the one built into kubectl) renders the deployment as
  shipped and with every optional component on;
- every rendered object validates, strictly (no unknown field), against the Kubernetes API's
  schemas of the oldest version the manifests claim and of the newest the validator knows
  (kubernetes-validate ships them in its wheel);
- the properties the deployment promises are asserted on the rendered objects: a trainer
  StatefulSet and headless Service per registry framework, one GPU per pod, native gRPC probes,
  the dataset read-only, non-root pods with read-only root filesystems, nothing exposed, the
  Jobs' commands, the namespace and pool sizes set in one place;
- base/wait_for_pool.py, the orchestrator's init container, runs for real against local DNS.

Each check also runs on a deliberately broken copy, to show that it would fail.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from services.common import frameworks
from tests.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"
WAIT_FOR_POOL = K8S / "base" / "wait_for_pool.py"
# Native gRPC probes are GA from 1.27; the newest schemas the validator ships.
KUBERNETES_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
PORT = 50051
USER_ID = 10001  # the images' user (services/Dockerfile, orchestrator/Dockerfile)
TRAINER = "app.kubernetes.io/component"
ORCHESTRATOR_POD = {"app.kubernetes.io/name": "fwbench-orchestrator"}
SEED_COMMAND = [
    "fwbench", "suite", "suites/seed.yaml", "--launcher", "remote",
    "--service", "pytorch=dns:///pytorch.$(POD_NAMESPACE).svc.cluster.local:50051",
    "--service", "tensorflow=dns:///tensorflow.$(POD_NAMESPACE).svc.cluster.local:50051",
    "--data-dir", "/data/cifar10", "--out", "/results/seed-{time}",
]  # fmt: skip
DATA_COMMAND = [
    "sh",
    "-c",
    "test -f /data/cifar10/meta.json || "
    "exec fwbench data prepare --source cifar10 --out /data/cifar10",
]


# ---- rendering and validation -------------------------------------------------------------------


def kustomize_command() -> list[str]:
    """kustomize v5's build command: `kustomize build`, else `kubectl kustomize`."""
    if tool := shutil.which("kustomize"):
        return [tool, "build"]
    if tool := shutil.which("kubectl"):
        version = json.loads(
            subprocess.run(
                [tool, "version", "--client", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        ).get("kustomizeVersion", "none")
        if re.match(r"v[5-9]\.", version):
            return [tool, "kustomize"]
        pytest.fail(
            f"{tool} embeds kustomize {version}, and deploy/k8s needs v5 (components, "
            "replacements, labels): install kubectl 1.27 or later, or a kustomize v5 binary"
        )
    pytest.fail(
        "neither kustomize nor kubectl is installed: install kubectl 1.27 or later "
        "(`kubectl kustomize`) or a kustomize v5 binary; no cluster is needed"
    )


def render(directory: Path = K8S) -> list[dict]:
    """The objects `kubectl apply -k directory` would send, or the test fails with kustomize's
    own message."""
    result = subprocess.run(
        [*kustomize_command(), str(directory)], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"kustomize cannot render {directory}:\n{result.stderr}")
    return [o for o in yaml.safe_load_all(result.stdout) if o]


def schema_errors(objects: list[dict], version: str) -> list[str]:
    """Each object that does not validate strictly against Kubernetes `version`'s schemas."""
    errors = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(map(str, e.path))
            errors.append(f"{name(o)} at {path or 'top level'} ({version}): {e.message}")
    return errors


def name(o: dict) -> str:
    return f"{o['kind']}/{o['metadata']['name']}"


def find(objects: list[dict], kind: str, object_name: str) -> dict | None:
    return next(
        (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == object_name), None
    )


def pod_specs(objects: list[dict]) -> Iterator[tuple[str, dict, dict]]:
    """(object name, pod spec, pod labels) of every workload."""
    for o in objects:
        if o["kind"] == "Pod":
            yield name(o), o["spec"], o["metadata"].get("labels", {})
        elif "template" in o.get("spec", {}):
            template = o["spec"]["template"]
            yield name(o), template["spec"], template["metadata"].get("labels", {})


def has_labels(labels: dict, wanted: dict) -> bool:
    return labels.items() >= wanted.items()


def option_values(command: list[str], option: str) -> list[str]:
    """The word after each occurrence of option."""
    return [value for word, value in itertools.pairwise(command) if word == option]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def mounts(container: dict) -> dict[str, dict]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


def volume(pod: dict, volume_name: str) -> dict:
    return next(v for v in pod.get("volumes", []) if v["name"] == volume_name)


# ---- what the deployment promises, as functions that list what is wrong ------------------------


def trainer_problems(objects: list[dict], framework: str) -> list[str]:
    """What framework's StatefulSet and headless Service lack."""
    stateful = find(objects, "StatefulSet", framework)
    if stateful is None:
        return [f"{framework}: no StatefulSet (a registry framework without a pool)"]
    problems = []
    pod = stateful["spec"]["template"]["spec"]
    labels = stateful["spec"]["template"]["metadata"]["labels"]
    if labels.get(TRAINER) != "trainer":
        problems.append(f"{framework}: pods lack {TRAINER}=trainer (shared spec, NetworkPolicy)")
    server = next((c for c in pod["containers"] if c["name"] == "server"), None)
    if server is None:
        return [*problems, f"{framework}: no container named server"]
    command = server.get("command", []) + server.get("args", [])
    if command[:3] != ["python", "-m", "services.common.server"]:
        problems.append(f"{framework}: command {command} is not services.common.server")
    for option, value in (("--framework", framework), ("--host", "0.0.0.0"), ("--port", "50051")):
        if option_values(command, option) != [value]:
            problems.append(f"{framework}: the server lacks {option} {value}")
    if "--insecure" not in command:
        problems.append(f"{framework}: no --insecure (the server refuses 0.0.0.0 without it)")
    if not re.fullmatch(rf"(.+/)?fwbench/{framework}(:[^/]+|@sha256:\w+)", server["image"]):
        problems.append(f"{framework}: image {server['image']} is not fwbench/{framework}")
    limits = server.get("resources", {}).get("limits", {})
    if str(limits.get("nvidia.com/gpu")) != "1":
        problems.append(
            f"{framework}: nvidia.com/gpu limit is {limits.get('nvidia.com/gpu')}, not 1"
        )
    for kind, service in (("readinessProbe", "fwbench.v1.TrainerService"), ("livenessProbe", "")):
        probe = server.get(kind, {})
        if probe.get("grpc") != {"port": PORT, "service": service}:
            problems.append(
                f"{framework}: {kind} is {probe or 'missing'}, not a gRPC probe of "
                f"{service or 'the overall health service'} on {PORT}"
            )
    data = mounts(server).get("/data")
    if data is None or not data.get("readOnly"):
        problems.append(f"{framework}: the dataset is not mounted readOnly at /data")
    elif volume(pod, data["name"]).get("persistentVolumeClaim", {}) != {
        "claimName": "fwbench-data",
        "readOnly": True,
    }:
        problems.append(f"{framework}: /data is not the fwbench-data claim, read-only")
    for path, medium in (("/tmp", None), ("/dev/shm", "Memory")):
        mount = mounts(server).get(path)
        empty_dir = volume(pod, mount["name"]).get("emptyDir") if mount else None
        if empty_dir is None or empty_dir.get("medium") != medium:
            problems.append(f"{framework}: {path} is not an emptyDir (medium {medium})")
    service = find(objects, "Service", stateful["spec"]["serviceName"])
    if service is None:
        problems.append(f"{framework}: no Service {stateful['spec']['serviceName']} (serviceName)")
        return problems
    spec = service["spec"]
    if spec.get("clusterIP") != "None":
        problems.append(f"{framework}: Service is not headless (clusterIP: None)")
    if {(p.get("name"), p["port"]) for p in spec.get("ports", [])} != {("grpc", PORT)}:
        problems.append(f"{framework}: Service ports {spec.get('ports')} are not grpc {PORT}")
    selector = spec.get("selector", {})
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        problems.append(f"{framework}: Service selector {selector} does not select its pods")
    if service["metadata"]["name"] != framework:
        problems.append(f"{framework}: Service is {service['metadata']['name']}, DNS expects it")
    return problems


def exposure_problems(objects: list[dict]) -> list[str]:
    """Any way in from outside the cluster, and trainers reachable by more than the orchestrator."""
    problems = [
        f"{name(o)} is of type {o['spec']['type']}"
        for o in objects
        if o["kind"] == "Service" and o["spec"].get("type") in ("NodePort", "LoadBalancer")
    ]
    problems += [f"{name(o)}: nothing may be exposed" for o in objects if o["kind"] == "Ingress"]
    for where, pod, _ in pod_specs(objects):
        if pod.get("hostNetwork") or any(
            "hostPort" in p for c in containers(pod) for p in c.get("ports", [])
        ):
            problems.append(f"{where}: uses the host's network")
    # Policies add up: any policy that selects a trainer pod must be this one.
    trainer_pods = [labels for _, _, labels in pod_specs(objects) if labels.get(TRAINER)]
    policies = [
        o
        for o in objects
        if o["kind"] == "NetworkPolicy"
        and any(
            has_labels(labels, o["spec"]["podSelector"].get("matchLabels", {}))
            for labels in trainer_pods
        )
    ]
    expected = {
        "podSelector": {"matchLabels": {TRAINER: "trainer"}},
        "policyTypes": ["Ingress"],
        "ingress": [
            {
                "from": [{"podSelector": {"matchLabels": ORCHESTRATOR_POD}}],
                "ports": [{"protocol": "TCP", "port": PORT}],
            }
        ],
    }
    if [p["spec"] for p in policies] != [expected]:
        problems.append(
            "no NetworkPolicy that lets only the orchestrator's pods reach the trainers on "
            f"{PORT}: {[p['spec'] for p in policies]}"
        )
    return problems


def security_problems(objects: list[dict]) -> list[str]:
    """Pods that may run as root, containers that may escalate or write their root filesystem,
    and containers without memory requests and limits."""
    problems = []
    for where, pod, _ in pod_specs(objects):
        context = pod.get("securityContext", {})
        if context.get("runAsNonRoot") is not True or context.get("runAsUser") != USER_ID:
            problems.append(f"{where}: runAsNonRoot/runAsUser {USER_ID} not set for the pod")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a service account token it never uses")
        for c in containers(pod):
            own = c.get("securityContext", {})
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where} {c['name']}: allowPrivilegeEscalation is not false")
            if own.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where} {c['name']}: the root filesystem is writable")
            if own.get("runAsUser", USER_ID) == 0:
                problems.append(f"{where} {c['name']}: runs as root")
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                if "memory" not in resources.get(part, {}):
                    problems.append(f"{where} {c['name']}: no memory {part}")
    return problems


def data_problems(objects: list[dict]) -> list[str]:
    """Who mounts the dataset how: read-write only in the data Job."""
    problems = []
    for where, pod, _ in pod_specs(objects):
        for c in containers(pod):
            for path, mount in mounts(c).items():
                claim = volume(pod, mount["name"]).get("persistentVolumeClaim", {})
                if claim.get("claimName") != "fwbench-data":
                    continue
                writable = not (mount.get("readOnly") and claim.get("readOnly"))
                if writable != (where == "Job/fwbench-data"):
                    problems.append(f"{where} {c['name']}: {path} is writable={writable}")
    return problems


def job_problems(objects: list[dict], names: tuple[str, ...] = frameworks.NAMES) -> list[str]:
    """The data Job's and the orchestrator Job's commands, and what the orchestrator waits for."""
    problems = []
    data = find(objects, "Job", "fwbench-data")
    if data is None:
        problems.append("no Job fwbench-data")
    else:
        prepare = data["spec"]["template"]["spec"]["containers"][0]
        if prepare["command"] != DATA_COMMAND or not prepare["image"].endswith(
            "orchestrator:latest"
        ):
            problems.append(f"fwbench-data runs {prepare['command']}, not {DATA_COMMAND}")
    job = find(objects, "Job", "fwbench-orchestrator")
    if job is None:
        return [*problems, "no Job fwbench-orchestrator"]
    pod = job["spec"]["template"]["spec"]
    if not has_labels(job["spec"]["template"]["metadata"].get("labels", {}), ORCHESTRATOR_POD):
        problems.append(f"fwbench-orchestrator's pods lack {ORCHESTRATOR_POD} (NetworkPolicy)")
    main = pod["containers"][0]
    command = main["command"]
    services = dict(value.split("=", 1) for value in option_values(command, "--service"))
    for framework in names:
        address = f"dns:///{framework}.$(POD_NAMESPACE).svc.cluster.local:{PORT}"
        if services.get(framework) != address:
            problems.append(
                f"orchestrator: --service {framework}={services.get(framework)}, not {address}"
            )
    expected = without_services(SEED_COMMAND)
    if without_services(command)[: len(expected)] != expected:
        problems.append(f"orchestrator: command {command} is not the seed suite's {SEED_COMMAND}")
    for c in containers(pod):
        namespace = next((e for e in c.get("env", []) if e["name"] == "POD_NAMESPACE"), {})
        if namespace.get("valueFrom") != {"fieldRef": {"fieldPath": "metadata.namespace"}}:
            problems.append(f"orchestrator {c['name']}: POD_NAMESPACE is not the pod's namespace")
    results = mounts(main).get("/results")
    if (
        results is None
        or results.get("readOnly")
        or volume(pod, results["name"]).get("persistentVolumeClaim", {}).get("claimName")
        != "fwbench-results"
    ):
        problems.append("orchestrator: /results is not the fwbench-results claim, writable")
    wait = next((c for c in pod.get("initContainers", []) if c["name"] == "wait-for-pool"), None)
    if wait is None:
        return [*problems, "orchestrator: no wait-for-pool init container"]
    env = {e["name"]: e.get("value") for e in wait.get("env", [])}
    for framework in names:
        variable = f"{framework.upper()}_REPLICAS"
        expect = f"{framework}.$(POD_NAMESPACE).svc.cluster.local=$({variable})"
        if expect not in wait["command"]:
            problems.append(f"wait-for-pool: does not --expect {expect}")
        stateful = find(objects, "StatefulSet", framework)
        replicas = stateful["spec"].get("replicas", 1) if stateful else None
        if env.get(variable) != str(replicas):
            problems.append(
                f"wait-for-pool: {variable}={env.get(variable)}, the pool has {replicas}"
            )
    if "/data/cifar10/meta.json" not in wait["command"]:
        problems.append("wait-for-pool: does not wait for the dataset's meta.json")
    return problems


def without_services(command: list[str]) -> list[str]:
    """command less its `--service NAME=ADDRESS` pairs (components add some)."""
    pairs = {i for i, word in enumerate(command) if word == "--service"}
    return [word for i, word in enumerate(command) if i not in pairs and i - 1 not in pairs]


def all_problems(
    objects: list[dict],
    names: tuple[str, ...] = frameworks.NAMES,
    versions: tuple[str, ...] = KUBERNETES_VERSIONS,
) -> list[str]:
    problems = [p for framework in names for p in trainer_problems(objects, framework)]
    return [
        *problems,
        *exposure_problems(objects),
        *security_problems(objects),
        *data_problems(objects),
        *job_problems(objects, names),
        *(e for version in versions for e in schema_errors(objects, version)),
    ]


# ---- copies to change ---------------------------------------------------------------------------


def copy_of_k8s(tmp_path: Path) -> Path:
    target = tmp_path / "k8s"
    shutil.copytree(K8S, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} is not in {path}: update this test's breakage"
    path.write_text(text.replace(old, new, 1))


def set_choices(copy: Path, **choices) -> None:
    """Changes the top-level kustomization.yaml of a copy (its comments are lost)."""
    path = copy / "kustomization.yaml"
    kustomization = yaml.safe_load(path.read_text())
    kustomization.update(choices)
    path.write_text(yaml.safe_dump(kustomization, sort_keys=False))


def enable_components(copy: Path, *components: str, jax_replicas: int = 1) -> None:
    """What a user changes in kustomization.yaml: optional components on, JAX's pool size."""
    kustomization = yaml.safe_load((copy / "kustomization.yaml").read_text())
    enabled = kustomization.get("components", [])
    wanted = [f"components/{c}" for c in components if f"components/{c}" not in enabled]
    replicas = [
        r | {"count": jax_replicas} if r["name"] == "jax" else r for r in kustomization["replicas"]
    ]
    set_choices(copy, components=[*enabled, *wanted], replicas=replicas)


# ---- the deployment as shipped ------------------------------------------------------------------


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render()


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(objects, version):
    assert schema_errors(objects, version) == []
    assert {o["kind"] for o in objects} >= {
        "Namespace", "PersistentVolumeClaim", "NetworkPolicy", "StatefulSet", "Service", "Job",
        "Pod", "ConfigMap",
    }  # fmt: skip


@pytest.mark.parametrize("framework", frameworks.NAMES)
def test_every_registry_framework_has_a_one_gpu_trainer_pool_behind_a_headless_service(
    objects, framework
):
    assert trainer_problems(objects, framework) == []


def test_nothing_is_exposed_and_only_the_orchestrator_reaches_the_trainers(objects):
    assert exposure_problems(objects) == []


def test_every_pod_runs_as_the_images_user_without_privileges_or_a_writable_root(objects):
    assert security_problems(objects) == []


def test_the_dataset_is_read_only_everywhere_but_in_the_data_job(objects):
    assert data_problems(objects) == []
    assert find(objects, "PersistentVolumeClaim", "fwbench-data") is not None


def test_the_jobs_prepare_cifar10_and_run_the_seed_suite_on_pools_found_through_dns(objects):
    assert job_problems(objects) == []
    results_pod = find(objects, "Pod", "fwbench-results")
    assert mounts(results_pod["spec"]["containers"][0])["/results"]["readOnly"] is True


def test_every_object_lands_in_the_one_namespace_set_in_kustomization_yaml(tmp_path):
    copy = copy_of_k8s(tmp_path)
    set_choices(copy, namespace="bench-42")
    objects = render(copy)
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == ["bench-42"]
    assert {o["metadata"].get("namespace") for o in objects if o["kind"] != "Namespace"} == {
        "bench-42"
    }
    # The DNS names read the pod's own namespace, so nothing else has to change with it.
    assert all_problems(objects) == []


def test_replicas_set_each_pool_and_the_orchestrator_waits_for_all_of_them(tmp_path):
    copy = copy_of_k8s(tmp_path)
    set_choices(
        copy, replicas=[{"name": n, "count": 3 + i} for i, n in enumerate(frameworks.NAMES)]
    )
    objects = render(copy)
    for i, framework in enumerate(frameworks.NAMES):
        assert find(objects, "StatefulSet", framework)["spec"]["replicas"] == 3 + i
    assert job_problems(objects) == []  # the wait-for-pool counts followed


def test_images_can_come_from_another_registry(tmp_path):
    copy = copy_of_k8s(tmp_path)
    components = (*frameworks.NAMES, "orchestrator")
    set_choices(
        copy,
        images=[
            {
                "name": f"fwbench/{c}",
                "newName": f"registry.example.com/ml/fwbench-{c}",
                "newTag": "v7",
            }
            for c in components
        ],
    )
    images = {c["image"] for _, pod, _ in pod_specs(render(copy)) for c in containers(pod)}
    assert images == {f"registry.example.com/ml/fwbench-{c}:v7" for c in components}


def test_the_optional_components_render_valid_and_jax_gets_the_shared_trainer_spec(tmp_path):
    copy = copy_of_k8s(tmp_path)
    enable_components(copy, "jax", "token", "single-node", jax_replicas=2)
    objects = render(copy)
    assert all_problems(objects, (*frameworks.NAMES, "jax")) == []
    assert find(objects, "StatefulSet", "jax")["spec"]["replicas"] == 2
    for _, pod, labels in pod_specs(objects):
        if labels.get(TRAINER) == "trainer" or has_labels(labels, ORCHESTRATOR_POD):
            main = next(c for c in pod["containers"] if c["name"] in ("server", "orchestrator"))
            token = next(e for e in main["env"] if e["name"] == "FWBENCH_TOKEN")
            assert token["valueFrom"] == {"secretKeyRef": {"name": "fwbench-token", "key": "token"}}
    claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert [c["spec"]["accessModes"] for c in claims] == [["ReadWriteOnce"]] * 2


# ---- each check fails on a broken copy ----------------------------------------------------------

PROBE = "grpc:\n              port: 50051\n              service: fwbench.v1.TrainerService"
ORCHESTRATOR_JOB = "base/orchestrator-job.yaml"
# name: ([(file, old text, new text), ...], a phrase the checks must then report)
BREAKAGES = {
    "data mounted writable": (
        [("trainer.yaml", "mountPath: /data\n              readOnly: true", "mountPath: /data")],
        "the dataset is not mounted readOnly",
    ),
    "two GPUs per pod": (
        [("trainer.yaml", "nvidia.com/gpu: 1", "nvidia.com/gpu: 2")],
        "nvidia.com/gpu limit is 2",
    ),
    "TCP readiness": (
        [("trainer.yaml", PROBE, "tcpSocket:\n              port: 50051")],
        "readinessProbe is",
    ),
    "liveness on the TrainerService": (
        [("trainer.yaml", 'service: ""', "service: fwbench.v1.TrainerService")],
        "livenessProbe is",
    ),
    "no --insecure": ([("trainer.yaml", "            - --insecure\n", "")], "no --insecure"),
    "root allowed": (
        [("trainer.yaml", "runAsNonRoot: true", "runAsNonRoot: false")],
        "runAsNonRoot",
    ),
    "writable root": (
        [(ORCHESTRATOR_JOB, "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false")],
        "root filesystem is writable",
    ),
    "no shm": ([("trainer.yaml", "medium: Memory", "medium: ''")], "/dev/shm is not an emptyDir"),
    "not headless": ([("base/pytorch.yaml", "  clusterIP: None\n", "")], "not headless"),
    "public service": (
        [("base/tensorflow.yaml", "clusterIP: None", "type: LoadBalancer")],
        "of type LoadBalancer",
    ),
    "a second policy lets everyone in": (
        [
            (
                "base/network-policy.yaml",
                "apiVersion: networking.k8s.io/v1",
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: all\n"
                "spec:\n  podSelector: {}\n  ingress: [{}]\n---\napiVersion: networking.k8s.io/v1",
            )
        ],
        "no NetworkPolicy",
    ),
    "policy lets anyone in": (
        [("base/network-policy.yaml", "name: fwbench-orchestrator", "name: anything")],
        "no NetworkPolicy",
    ),
    "orchestrator by ClusterIP": (
        [(ORCHESTRATOR_JOB, "pytorch=dns:///pytorch.", "pytorch=pytorch.")],
        "--service pytorch=pytorch.",
    ),
    "orchestrator does not wait for a pool": (
        [(ORCHESTRATOR_JOB, "- tensorflow.$(POD_NAMESPACE)", "- tf.$(POD_NAMESPACE)")],
        "does not --expect tensorflow.",
    ),
    "wait count from the wrong pool": (
        [
            (
                "kustomization.yaml",
                "name: tensorflow\n    count: 1",
                "name: tensorflow\n    count: 2",
            ),
            ("kustomization.yaml", "name: tensorflow, fieldPath", "name: pytorch, fieldPath"),
        ],
        "TENSORFLOW_REPLICAS=1, the pool has 2",
    ),
    "data prepared elsewhere": (
        [("base/data-job.yaml", "--out /data/cifar10", "--out /data/elsewhere")],
        "fwbench-data runs",
    ),
    "unknown field": (
        [("trainer.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFileSystem: true")],
        "'readOnlyRootFileSystem' was unexpected",
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_each_check_flags_a_broken_copy(tmp_path, breakage):
    edits, phrase = BREAKAGES[breakage]
    copy = copy_of_k8s(tmp_path)
    for file, old, new in edits:
        edit(copy / file, old, new)
    # One schema version is enough to show a schema error is caught, and halves the time.
    problems = all_problems(render(copy), versions=KUBERNETES_VERSIONS[-1:])
    assert any(phrase in p for p in problems), problems


def test_a_registry_framework_without_a_statefulset_is_flagged(objects):
    without = [o for o in objects if name(o) != "StatefulSet/tensorflow"]
    assert trainer_problems(without, "tensorflow") == [
        "tensorflow: no StatefulSet (a registry framework without a pool)"
    ]


def test_a_missing_kustomize_feature_is_kustomizes_own_message(tmp_path):
    copy = copy_of_k8s(tmp_path)
    edit(copy / "kustomization.yaml", "path: trainer.yaml", "path: trainers.yaml")
    with pytest.raises(pytest.fail.Exception, match=r"trainers\.yaml"):
        render(copy)


# ---- the orchestrator's init container ----------------------------------------------------------


def wait_for_pool(*args: str) -> subprocess.CompletedProcess:
    """The script, in a network namespace of its own: its lookups of names that do not exist
    fail there at once instead of reaching a DNS server; /etc/hosts still answers localhost."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is missing: `apt-get install util-linux`")
    result = subprocess.run(
        [unshare, "--map-root-user", "--net", sys.executable, str(WAIT_FOR_POOL), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.stderr.startswith("unshare:"):
        pytest.fail(f"cannot make a network namespace here: {result.stderr}")
    return result


def test_wait_for_pool_returns_once_the_dataset_and_every_trainer_are_there(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text("{}")
    result = wait_for_pool("--timeout-s", "5", "--file", str(meta), "--expect", "localhost=1")
    assert result.returncode == 0, result.stderr
    assert "ready: localhost (1)" in result.stdout


def test_wait_for_pool_gives_up_at_its_deadline_saying_what_is_missing(tmp_path):
    result = wait_for_pool(
        "--timeout-s", "0.3", "--poll-s", "0.1",
        "--file", str(tmp_path / "meta.json"),
        "--expect", "localhost=99", "--expect", "no-such-trainer.invalid=1",
    )  # fmt: skip
    assert result.returncode == 1
    assert f"{tmp_path / 'meta.json'} does not exist yet" in result.stderr
    assert re.search(r"localhost: \d of 99 trainers ready", result.stderr)
    assert "no-such-trainer.invalid: 0 of 1 trainers ready" in result.stderr
    assert "kubectl get pods,jobs" in result.stderr


@pytest.mark.parametrize("expect", ["localhost", "localhost=0", "localhost=two", "=2"])
def test_wait_for_pool_refuses_an_expectation_it_cannot_read(expect):
    result = wait_for_pool("--timeout-s", "1", "--expect", expect)
    assert result.returncode == 2
    assert "expected HOST=COUNT with COUNT >= 1" in result.stderr
