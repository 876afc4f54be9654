#!/usr/bin/env python3
"""Validates the rendered Kubernetes manifests of every overlay.

Run by deploy/check.sh, which renders the overlays and builds the binaries
this script asks for the truth (`spoolctl keys --json`, `spool-encoder-worker
--help`, the worker's own HTTP endpoints). Exits non-zero with one line per
problem.
"""

import json
import os
import re
import subprocess
import sys
import urllib.request

import jsonschema
import kubernetes_validate
import yaml

# spool_worker::SHUTDOWN_MARGIN, in seconds (crates/worker/src/runtime.rs).
SHUTDOWN_MARGIN_S = 3

K8S_VERSION = "1.30.0"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def _keda_schema_dir():
    """The KEDA CRDs: $SPOOL_SHARED_DIR, or shared/ in or beside the checkout."""
    candidates = [os.environ.get("SPOOL_SHARED_DIR", ""), os.path.join(ROOT, "shared"), os.path.join(ROOT, "..", "shared")]
    for base in candidates:
        d = os.path.join(base, "schemas", "keda")
        if base and os.path.isdir(d):
            return d
    sys.exit("check.py: KEDA CRD schemas not found in shared/schemas/keda (set SPOOL_SHARED_DIR)")


KEDA_SCHEMAS = _keda_schema_dir()

problems = []


def problem(overlay, msg):
    problems.append(f"{overlay}: {msg}")


def keda_schemas():
    out = {}
    for name in os.listdir(KEDA_SCHEMAS):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(KEDA_SCHEMAS, name)) as f:
            crd = yaml.safe_load(f)
        kind = crd["spec"]["names"]["kind"]
        for v in crd["spec"]["versions"]:
            out[(f"keda.sh/{v['name']}", kind)] = v["schema"]["openAPIV3Schema"]
    return out


def duration_s(v):
    m = re.fullmatch(r"([0-9.]+)(ms|s|m|h)?", v.strip())
    if not m:
        raise ValueError(v)
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[m.group(2)]


def worker_settings(worker_bin):
    help_text = subprocess.run([worker_bin, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"\[env: (SPOOL_[A-Z0-9_]+)", help_text))


def outstanding_key(spoolctl, queue):
    out = subprocess.run([spoolctl, "-q", queue, "keys", "--json"], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["outstanding"]


def check_overlay(overlay, docs, schemas, settings, spoolctl, probes):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
        api, kind = d["apiVersion"], d["kind"]
        name = d["metadata"]["name"]
        if api.startswith("keda.sh/"):
            schema = schemas.get((api, kind))
            if schema is None:
                problem(overlay, f"{kind}/{name}: no KEDA schema for {api}")
                continue
            try:
                jsonschema.validate(d, schema)
            except jsonschema.ValidationError as e:
                problem(overlay, f"{kind}/{name}: {e.message} at {list(e.absolute_path)}")
        elif api.startswith("monitoring.coreos.com/"):
            # No Prometheus Operator schema ships with the repo: check shape.
            if kind == "PrometheusRule" and not d.get("spec", {}).get("groups"):
                problem(overlay, f"{kind}/{name}: no rule groups")
            if kind == "ServiceMonitor" and not d.get("spec", {}).get("endpoints"):
                problem(overlay, f"{kind}/{name}: no endpoints")
        else:
            try:
                kubernetes_validate.validate(d, K8S_VERSION, strict=True)
            except kubernetes_validate.ValidationError as e:
                problem(overlay, f"{kind}/{name}: {e.message}")
            except Exception as e:  # unknown kind or version
                problem(overlay, f"{kind}/{name}: {e}")

    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    worker = deployments.get("spool-encoder-worker")
    scaled_jobs = by_kind.get("ScaledJob", [])
    if worker is None and not scaled_jobs:
        problem(overlay, "no spool-encoder-worker Deployment and no ScaledJob")
        return
    # The pod the checks below look at: the Deployment's, or the Job's.
    pod_spec = (worker["spec"]["template"]["spec"] if worker is not None
                else scaled_jobs[0]["spec"]["jobTargetRef"]["template"]["spec"])
    # One autoscaler per Deployment.
    targets = {}
    for d in by_kind.get("HorizontalPodAutoscaler", []):
        targets.setdefault(d["spec"]["scaleTargetRef"]["name"], []).append("HPA/" + d["metadata"]["name"])
    for d in by_kind.get("ScaledObject", []):
        targets.setdefault(d["spec"]["scaleTargetRef"]["name"], []).append("ScaledObject/" + d["metadata"]["name"])
    for target, owners in targets.items():
        if len(owners) > 1:
            problem(overlay, f"Deployment {target} has more than one autoscaler: {owners}")

    config = {}
    for cm in by_kind.get("ConfigMap", []):
        if cm["metadata"]["name"].startswith("spool-worker-config"):
            config = cm.get("data", {})
    if not config:
        problem(overlay, "no spool-worker-config ConfigMap")
        return
    for key in config:
        if key.startswith("SPOOL_") and key not in settings:
            problem(overlay, f"config key {key} is not a setting spool-encoder-worker accepts")
    queue = config.get("SPOOL_QUEUE", "encode")
    expected_key = outstanding_key(spoolctl, queue)
    # A ScaledObject and a ScaledJob on the same queue would both start
    # workers for the same jobs.
    readers = {}
    for kind in ("ScaledObject", "ScaledJob"):
        for d in by_kind.get(kind, []):
            for t in d["spec"]["triggers"]:
                if t["type"] == "redis":
                    readers.setdefault(t["metadata"].get("listName"), set()).add(kind)
    for key, kinds in readers.items():
        if len(kinds) > 1:
            problem(overlay, f"queue key {key!r} is scaled by both a ScaledObject and a ScaledJob: choose one")
    for sj in scaled_jobs:
        name = sj["metadata"]["name"]
        job = sj["spec"]["jobTargetRef"]
        for t in sj["spec"]["triggers"]:
            if t["type"] == "redis" and t["metadata"].get("listName") != expected_key:
                problem(overlay, f"ScaledJob {name} listName {t['metadata'].get('listName')!r} is not the queue's outstanding key {expected_key!r}")
            if t["type"] == "redis" and t["metadata"].get("listLength") != "1":
                problem(overlay, f"ScaledJob {name}: listLength must be 1 (one job per Job)")
        if sj["spec"].get("scalingStrategy", {}).get("strategy", "default") != "default":
            problem(overlay, f"ScaledJob {name}: with the outstanding key the strategy must be default (docs/autoscaling.md)")
        if config.get("SPOOL_MAX_JOBS") != "1" or config.get("SPOOL_CONCURRENCY", "1") != "1":
            problem(overlay, f"ScaledJob {name}: its pods must run SPOOL_MAX_JOBS=1 and SPOOL_CONCURRENCY=1, or a Job never ends")
        if job.get("backoffLimit", 6) != 0:
            problem(overlay, f"ScaledJob {name}: backoffLimit must be 0 (the queue retries a job, not the Job)")
        if job["template"]["spec"].get("restartPolicy") != "Never":
            problem(overlay, f"ScaledJob {name}: restartPolicy must be Never")
    for so in by_kind.get("ScaledObject", []):
        for t in so["spec"]["triggers"]:
            if t["type"] == "redis" and t["metadata"].get("listName") != expected_key:
                problem(overlay, f"ScaledObject listName {t['metadata'].get('listName')!r} is not the queue's outstanding key {expected_key!r}")
            if t["type"] == "redis" and "SPOOL_CONCURRENCY" in config and t["metadata"].get("listLength") != config["SPOOL_CONCURRENCY"]:
                problem(overlay, f"listLength {t['metadata'].get('listLength')} differs from SPOOL_CONCURRENCY {config['SPOOL_CONCURRENCY']}: jobs per pod must match")

    # Scale to zero strands due work unless something promotes it: a
    # ScaledJob, or a ScaledObject that may reach 0 replicas, needs the
    # promoter (docs/autoscaling.md).
    at_zero = bool(scaled_jobs) or any(
        so["spec"].get("minReplicaCount", 0) == 0 for so in by_kind.get("ScaledObject", []))
    promoter = deployments.get("spool-promoter")
    if at_zero and promoter is None:
        problem(overlay, "the workers can scale to zero but no spool-promoter Deployment runs: delayed and retried jobs would never reach the KEDA keys (add components/promoter)")
    if promoter is not None:
        pc = promoter["spec"]["template"]["spec"]["containers"][0]
        cmd = pc.get("command", [])
        if cmd[1:3] != ["promote", "--every"]:
            problem(overlay, f"spool-promoter runs {cmd}, not `spoolctl promote --every …`")
        if not pc.get("resources", {}).get("limits"):
            problem(overlay, "spool-promoter has no resource limits")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            if pc.get(probe, {}).get("httpGet", {}).get("path") != path:
                problem(overlay, f"spool-promoter {probe} must GET {path}")
        if promoter["spec"].get("replicas", 1) < 2:
            problem(overlay, "spool-promoter should run 2 replicas (a drained node must not stop promotion)")

    spec = pod_spec
    grace = spec.get("terminationGracePeriodSeconds", 30)
    drain = duration_s(config.get("SPOOL_DRAIN_TIMEOUT", "25s"))
    # The worker exits within the drain timeout plus spool_worker::SHUTDOWN_MARGIN
    # (3 s) whatever Redis does (docs/operations.md); a second more for the exit.
    if grace < drain + SHUTDOWN_MARGIN_S + 1:
        problem(overlay, f"terminationGracePeriodSeconds {grace} must be at least SPOOL_DRAIN_TIMEOUT {drain:g}s + {SHUTDOWN_MARGIN_S + 1}s (the shutdown bound)")
    c = next((c for c in spec["containers"] if c["name"] == "worker"), None)
    if c is None:
        problem(overlay, "no worker container")
        return
    port = int(config.get("SPOOL_METRICS_ADDR", "0.0.0.0:9464").rsplit(":", 1)[1])
    named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    if named.get("metrics") != port:
        problem(overlay, f"container port `metrics` is {named.get('metrics')}, the worker listens on {port}")
    for probe in ("readinessProbe", "livenessProbe"):
        path = c.get(probe, {}).get("httpGet", {}).get("path")
        if path not in probes:
            problem(overlay, f"{probe} path {path!r} is not served by the worker")
    # The root filesystem is read-only: the scratch directory must be a
    # writable volume, or every download and s3:// output fails.
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for key in ("SPOOL_SCRATCH_DIR", "SPOOL_OUTPUT_ROOT"):
        path = config.get(key)
        if path and (path not in mounts or mounts[path].get("readOnly")):
            problem(overlay, f"{key} {path} is not a writable volume mount of the worker")
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    scratch = mounts.get(config.get("SPOOL_SCRATCH_DIR", ""), {}).get("name")
    if scratch and "sizeLimit" not in volumes.get(scratch, {}).get("emptyDir", {"sizeLimit": None}):
        problem(overlay, "the scratch emptyDir has no sizeLimit: one large input could fill the node's disk")
    sc = c.get("securityContext", {})
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(overlay, "worker allows privilege escalation")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(overlay, "worker root filesystem is writable")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        problem(overlay, "worker does not drop all capabilities")
    if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
        problem(overlay, "worker may run as root")


def served_paths(worker_bin, redis_url, port):
    """Starts the worker and asks which probe paths answer 200, until all do
    or 20 s pass. Returns them, and what the worker printed if it exited."""
    env = dict(os.environ, SPOOL_REDIS_URL=redis_url, SPOOL_METRICS_ADDR=f"127.0.0.1:{port}",
               SPOOL_INPUT_ROOT="/tmp", SPOOL_OUTPUT_ROOT=os.environ.get("CHECK_OUT", "/tmp"),
               SPOOL_QUEUE="deploy-check", RUST_LOG="error")
    import tempfile
    import time
    paths = {"/readyz", "/healthz", "/metrics"}
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([worker_bin], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            served = set()
            deadline = time.time() + 20
            # /readyz answers 503 until the worker's first ping of Redis: ask
            # until every path has answered, not only the first.
            while time.time() < deadline and served != paths and proc.poll() is None:
                for path in sorted(paths - served):
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                            if r.status == 200:
                                served.add(path)
                    except Exception:
                        pass
                time.sleep(0.2)
            exited = proc.poll()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        said = ""
        if exited is not None:
            err.seek(0)
            said = f"the worker exited {exited}: " + err.read().decode(errors="replace")[-2000:]
        return served, said


def main():
    rendered_dir, spoolctl, worker_bin, redis_url, port = sys.argv[1:6]
    schemas = keda_schemas()
    settings = worker_settings(worker_bin)
    probes, said = served_paths(worker_bin, redis_url, int(port))
    if probes != {"/readyz", "/healthz", "/metrics"}:
        problems.append(f"worker served only {sorted(probes)} {said}".rstrip())
    rules = []
    for name in sorted(os.listdir(rendered_dir)):
        overlay = name.removesuffix(".yaml")
        with open(os.path.join(rendered_dir, name)) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        check_overlay(overlay, docs, schemas, settings, spoolctl, probes)
        for d in docs:
            if d["kind"] == "PrometheusRule":
                rules.append(d["spec"])
        print(f"{overlay}: {len(docs)} objects checked")
    if rules:
        with open(os.path.join(rendered_dir, "rules.yml.out"), "w") as f:
            yaml.safe_dump(rules[0], f)
    for p in problems:
        print("PROBLEM", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
