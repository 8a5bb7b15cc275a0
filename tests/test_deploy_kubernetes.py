"""Kubernetes manifests (deploy/kubernetes), validated offline.

- Custom kinds (DaskCluster, DaskWorkerGroup, DaskJob) against the operator's
  CRD schemas vendored in deploy/kubernetes/crds, made strict: an unknown
  field is an error here, as with ``kubectl apply --validate=strict`` (without
  it the API server drops unknown fields silently, dask/dask-kubernetes#650).
  Nulls are stripped first; quantities are not converted: the CRDs declare
  them as strings and the API server rejects a bare ``1``.
- Core kinds, and every pod spec and Service embedded in the custom kinds,
  with kubernetes-validate (strict) for one Kubernetes version.
- The wiring: GPUs on the GPU workers only, real CLI flags for astrodask and
  Dask, the operator's scheduler Service name, one shared volume, one image.
"""

import copy
from pathlib import Path
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.31.0"
GPU = "nvidia.com/gpu"
SHARED_PATH = "/data"
# `dask cuda worker` options used in the manifests, as read in dask-cuda 26.10's
# cli.py (dask-cuda cannot even be imported without CUDA); `dask worker` has them too.
DASK_CUDA_WORKER_FLAGS = {"--name", "--nthreads", "--resources", "--dashboard-address",
                          "--memory-limit"}


def load(name):
    return [doc for doc in yaml.safe_load_all((KUBE / name).read_text()) if doc]


def manifests():
    """Every (file name, document) of the deploy manifests."""
    return [(path.name, doc) for path in sorted(KUBE.glob("*.yaml"))
            if path.name != "helm-values.yaml" for doc in load(path.name)]


def by_kind(kind):
    return [doc for _, doc in manifests() if doc["kind"] == kind]


def strip_nulls(value):
    if isinstance(value, dict):
        return {k: strip_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_nulls(v) for v in value]
    return value


def strict(schema):
    """The schema with unknown object fields forbidden (in a copy)."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def crds():
    """kind -> (apiVersion, strict openAPIV3Schema) from the vendored CRDs."""
    found = {}
    for path in (KUBE / "crds").glob("*.yaml"):
        crd = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        version = next(v for v in crd["spec"]["versions"] if v["storage"])
        found[crd["spec"]["names"]["kind"]] = (
            f"{crd['spec']['group']}/{version['name']}",
            strict(version["schema"]["openAPIV3Schema"]))
    return found


CRDS = crds()


def validate_custom(doc):
    api_version, schema = CRDS[doc["kind"]]
    assert doc["apiVersion"] == api_version
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
    jsonschema.validate({"spec": strip_nulls(doc["spec"])}, schema)


def validate_core(doc):
    kubernetes_validate.validate(strip_nulls(doc), K8S_VERSION, strict=True)


def pod_specs(doc):
    """(role, pod spec) of every pod a manifest makes: scheduler, worker, job."""
    kind, spec = doc["kind"], doc["spec"]
    if kind == "DaskCluster":
        return [("scheduler", spec["scheduler"]["spec"]), ("worker", spec["worker"]["spec"])]
    if kind == "DaskWorkerGroup":
        return [("worker", spec["worker"]["spec"])]
    if kind == "DaskJob":
        cluster = spec["cluster"]["spec"]
        return [("job", spec["job"]["spec"]), ("scheduler", cluster["scheduler"]["spec"]),
                ("worker", cluster["worker"]["spec"])]
    if kind == "Job":
        return [("job", spec["template"]["spec"])]
    return []


def containers(pod):
    return pod.get("initContainers", []) + pod["containers"]


def gpu_amounts(container):
    resources = container.get("resources", {})
    return [resources.get(part, {}).get(GPU) for part in ("requests", "limits")]


def has_gpu_resource_arg(args):
    return any(a == "--resources" and b == "GPU=1" for a, b in zip(args, args[1:]))


def astrodask_args(container):
    from astrodask.cli import build_parser

    return build_parser().parse_args(container["args"])


@pytest.mark.parametrize("name,doc", [m for m in manifests() if m[1]["kind"] in CRDS],
                         ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_custom_kinds_match_the_operator_crds(name, doc):
    validate_custom(doc)
    for _, pod in pod_specs(doc):
        validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": pod})
    cluster = doc["spec"]["cluster"]["spec"] if doc["kind"] == "DaskJob" else doc["spec"]
    if "scheduler" in cluster:
        validate_core({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
                       "spec": cluster["scheduler"]["service"]})


@pytest.mark.parametrize("name,doc", [m for m in manifests() if m[1]["kind"] not in CRDS],
                         ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_core_kinds_validate(name, doc):
    validate_core(doc)


def test_validation_catches_mistakes():
    """The checks above can fail: a bare quantity, a typo, a wrong core field."""
    group = copy.deepcopy(by_kind("DaskWorkerGroup")[0])
    container = group["spec"]["worker"]["spec"]["containers"][0]
    container["resources"]["limits"][GPU] = 1
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(group)
    container["resources"]["limits"][GPU] = "1"
    container["resource"] = container.pop("resources")
    with pytest.raises(jsonschema.ValidationError):
        validate_custom(group)
    job = copy.deepcopy(by_kind("Job")[0])
    job["spec"]["template"]["spec"]["containers"][0]["volumeMount"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_core(job)


def test_gpus_only_on_gpu_workers():
    gpu_groups = 0
    for _, doc in manifests():
        for role, pod in pod_specs(doc):
            for container in containers(pod):
                amounts = gpu_amounts(container)
                if role != "worker":
                    assert amounts == [None, None], f"{role} of {doc['metadata']['name']}"
                    continue
                gpu = amounts[1] == "1"
                assert amounts[0] in (None, amounts[1])
                # A worker advertises GPU=1 exactly when it has a GPU.
                assert gpu == has_gpu_resource_arg(container["args"])
                gpu_groups += gpu
    assert gpu_groups == 2  # gpu-workers.yaml and the DaskJob's cluster
    default_group = by_kind("DaskCluster")[0]["spec"]["worker"]["spec"]["containers"][0]
    assert gpu_amounts(default_group) == [None, None]


def test_dask_commands_use_real_flags():
    from distributed.cli import dask_scheduler, dask_worker

    for _, doc in manifests():
        for role, pod in pod_specs(doc):
            if role == "job":
                continue
            args = pod["containers"][0]["args"]
            if role == "scheduler":
                assert args[:2] == ["dask", "scheduler"]
                dask_scheduler.main.make_context("dask scheduler", args[2:])
            elif args[:3] == ["dask", "cuda", "worker"]:
                assert {a for a in args if a.startswith("--")} <= DASK_CUDA_WORKER_FLAGS
                dask_worker.main.make_context("dask worker", args[3:])
            else:
                assert args[:2] == ["dask", "worker"]
                dask_worker.main.make_context("dask worker", args[2:])


def scheduler_address_waited_for(pod):
    """The address the init container waits for before astrodask starts."""
    (init,) = pod["initContainers"]
    return re.search(r"Client\('([^']+)'", " ".join(init["args"])).group(1)


def test_run_jobs_reach_the_operator_scheduler_service():
    (cluster,) = by_kind("DaskCluster")
    name = cluster["metadata"]["name"]
    (group,) = by_kind("DaskWorkerGroup")
    assert group["spec"]["cluster"] == name
    run_job = next(d for d in by_kind("Job") if d["metadata"]["name"] == "astrodask-run")
    (daskjob,) = by_kind("DaskJob")
    # The operator names the scheduler Service "<cluster>-scheduler"; a DaskJob's
    # cluster is named after the DaskJob.
    for pod, cluster_name, service in (
            (pod_specs(run_job)[0][1], name, cluster["spec"]["scheduler"]["service"]),
            (pod_specs(daskjob)[0][1], daskjob["metadata"]["name"],
             daskjob["spec"]["cluster"]["spec"]["scheduler"]["service"])):
        args = astrodask_args(pod["containers"][0])
        assert args.command == "run"
        assert args.scheduler == f"tcp://{cluster_name}-scheduler:8786"
        assert scheduler_address_waited_for(pod) == args.scheduler
        assert service["selector"]["dask.org/cluster-name"] == cluster_name
        assert 8786 in [port["port"] for port in service["ports"]]
        for path in (args.mosaic, args.out):
            assert path.startswith(SHARED_PATH + "/")
    merge_job = next(d for d in by_kind("Job") if d["metadata"]["name"] == "astrodask-merge")
    pod = pod_specs(merge_job)[0][1]
    args = astrodask_args(pod["containers"][0])
    assert args.command == "merge" and args.results == run_job["spec"]["template"]["spec"][
        "containers"][0]["args"][3]
    assert args.scheduler == scheduler_address_waited_for(pod) == f"tcp://{name}-scheduler:8786"
    ingest = next(d for d in by_kind("Job") if d["metadata"]["name"] == "astrodask-ingest")
    args = astrodask_args(pod_specs(ingest)[0][1]["containers"][0])
    assert args.command == "ingest"
    assert args.out == run_job["spec"]["template"]["spec"]["containers"][0]["args"][1]


def mounts_shared_volume(pod, claim):
    volumes = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName")
               for v in pod.get("volumes", [])}
    mounts = [m for m in pod["containers"][0].get("volumeMounts", [])
              if volumes.get(m["name"]) == claim]
    return [m["mountPath"] for m in mounts] == [SHARED_PATH]


def test_jobs_and_workers_share_one_volume():
    (claim,) = by_kind("PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    for _, doc in manifests():
        for role, pod in pod_specs(doc):
            if role in ("job", "worker"):
                assert mounts_shared_volume(pod, claim["metadata"]["name"]), \
                    f"{role} of {doc['metadata']['name']}"


def test_one_image_per_cluster():
    """Workers load models by the client's path and need the client's dask version."""
    for files in (("cluster.yaml", "gpu-workers.yaml", "run-job.yaml", "ingest-job.yaml",
                   "merge-job.yaml"),
                  ("daskjob.yaml",)):
        images = {c["image"] for name, doc in manifests() if name in files
                  for _, pod in pod_specs(doc) for c in containers(pod)}
        assert len(images) == 1, images


def test_helm_values():
    values = yaml.safe_load((KUBE / "helm-values.yaml").read_text())
    worker, (gpu_group,) = values["worker"], values["additional_worker_groups"]
    assert GPU not in str(values["scheduler"]) and GPU not in str(worker)
    assert gpu_group["resources"]["limits"][GPU] == "1"
    assert gpu_group["image"]["dask_worker"] == "dask-cuda-worker"
    assert has_gpu_resource_arg(gpu_group["extraArgs"])
    assert not has_gpu_resource_arg(worker.get("extraArgs", []))
    # The chart names the scheduler Service "<fullname>-scheduler" (port 8786):
    # the address run-job.yaml connects to.
    run_job = next(d for d in by_kind("Job") if d["metadata"]["name"] == "astrodask-run")
    args = astrodask_args(run_job["spec"]["template"]["spec"]["containers"][0])
    assert args.scheduler == f"tcp://{values['fullnameOverride']}-scheduler:8786"
    (claim,) = by_kind("PersistentVolumeClaim")
    images = set()
    for group in (worker, {**worker, **gpu_group}, values["scheduler"]):
        image = f"{group['image']['repository']}:{group['image']['tag']}"
        images.add(image)
        container = {"name": "c", "image": image, "resources": group["resources"]}
        pod = {"containers": [container], "securityContext": group["securityContext"],
               "tolerations": group.get("tolerations", [])}
        if "mounts" in group:
            container["volumeMounts"] = group["mounts"]["volumeMounts"]
            pod["volumes"] = group["mounts"]["volumes"]
            assert mounts_shared_volume(pod, claim["metadata"]["name"])
        validate_core({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                       "spec": pod})
    assert len(images) == 1
    assert values["jupyter"]["enabled"] is False
