"""Checks on rendered Helm manifests that no schema expresses (run by scripts/ci-deploy.sh).

    python scripts/deploy_checks.py CHECK RENDERED.yaml

Each check prints one line of what it proved and exits 1 naming every violation, so the
script's negative cases can assert that a bad render is caught and why.

- restricted: every pod (init containers included) meets Pod Security "restricted": non-root,
  no privilege escalation, capabilities drop ALL, seccomp RuntimeDefault/Localhost, no host
  namespaces, ports or paths, no privileged containers.
- netpol: with NetworkPolicies rendered, every workload is selected by one; the API admits
  only its configured peers, every other workload only the API (Qdrant's p2p port: Qdrant).
- vllm: each vLLM Deployment runs `vllm serve MODEL`, takes its key from VLLM_API_KEY (never
  argv), has progressDeadlineSeconds >= its startup probe budget, and, when it prefetches,
  pins --revision and serves with HF_HUB_OFFLINE=1.
- ingress: the Ingress publishes /v1 paths only (not /metrics, /readyz, /healthz).
- redis: the Redis password reaches the API apart from the URL (covrag escapes it).
- gpus: GPUs requested at the minimum replica counts (KEDA minReplicas where KEDA owns the
  count), at most 1 per pod; with a limit argument, at most that many in all.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import yaml

Doc = dict[str, Any]
POD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}
SAFE_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def pods(docs: list[Doc]) -> Iterator[tuple[str, Doc]]:
    for d in docs:
        if d["kind"] in POD_KINDS:
            yield f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]


def restricted(docs: list[Doc]) -> list[str]:
    errors: list[str] = []
    count = 0
    for name, template in pods(docs):
        spec = template["spec"]
        psc = spec.get("securityContext") or {}
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(key):
                errors.append(f"{name}: {key}")
        for v in spec.get("volumes", []):
            kinds = set(v) - {"name"}
            if not kinds <= SAFE_VOLUMES:
                errors.append(f"{name}: volume {v['name']} of type {sorted(kinds)}")
        for c in spec.get("initContainers", []) + spec["containers"]:
            count += 1
            where = f"{name} container {c['name']}"
            sc = c.get("securityContext") or {}
            if not sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
                errors.append(f"{where}: runAsNonRoot not true")
            if sc.get("runAsUser", psc.get("runAsUser")) == 0:
                errors.append(f"{where}: runAsUser 0")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation not false")
            if sc.get("privileged"):
                errors.append(f"{where}: privileged")
            caps = sc.get("capabilities") or {}
            if "ALL" not in (caps.get("drop") or []):
                errors.append(f"{where}: capabilities do not drop ALL")
            if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
                errors.append(f"{where}: adds capabilities {caps['add']}")
            seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
            if seccomp not in ("RuntimeDefault", "Localhost"):
                errors.append(f"{where}: seccompProfile {seccomp}")
            if any(p.get("hostPort") for p in c.get("ports", [])):
                errors.append(f"{where}: hostPort")
    if not errors:
        print(f"    restricted: {count} containers in {len(list(pods(docs)))} pods comply")
    return errors


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def netpol(docs: list[Doc]) -> list[str]:
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    if not policies:
        return ["no NetworkPolicy rendered"]
    errors: list[str] = []
    for name, template in pods(docs):
        labels = template["metadata"]["labels"]
        component = labels["app.kubernetes.io/component"]
        mine = [p for p in policies if _selects(p["spec"]["podSelector"], labels)]
        if not mine:
            errors.append(f"{name}: no NetworkPolicy selects it")
            continue
        for p in mine:
            for rule in p["spec"].get("ingress", []):
                if not rule.get("from"):
                    errors.append(f"{name}: {p['metadata']['name']} admits any source")
                for peer in rule.get("from", []):
                    source = (peer.get("podSelector") or {}).get("matchLabels", {})
                    src = source.get("app.kubernetes.io/component")
                    ports = {str(x.get("port")) for x in rule.get("ports", [])}
                    if component == "api":
                        if src is not None:
                            errors.append(f"{name}: admits pods of {src}")
                    elif component == "qdrant" and src == "qdrant":
                        if ports - {str(_p2p(docs))}:
                            errors.append(f"{name}: Qdrant peers admitted on {sorted(ports)}")
                    elif src != "api" and not (
                        component.startswith("vllm-") and "podSelector" not in peer
                    ):
                        errors.append(f"{name}: admits {peer} (only the API may connect)")
    if not errors:
        print(f"    netpol: {len(policies)} policies; every pod selected; workers <- API only")
    return errors


def _p2p(docs: list[Doc]) -> int:
    for d in docs:
        if d["kind"] == "StatefulSet" and d["metadata"]["name"].endswith("-qdrant"):
            ports = d["spec"]["template"]["spec"]["containers"][0]["ports"]
            return int(next(p["containerPort"] for p in ports if p["name"] == "p2p"))
    return -1


def vllm(docs: list[Doc]) -> list[str]:
    errors: list[str] = []
    found = 0
    for d in docs:
        if d["kind"] != "Deployment" or "-vllm-" not in d["metadata"]["name"]:
            continue
        found += 1
        name = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        [c] = [c for c in spec["containers"] if c["name"] == "vllm"]
        args = [str(a) for a in c.get("args", [])]
        if c.get("command") != ["vllm", "serve"] or not args or args[0].startswith("-"):
            errors.append(f"{name}: not `vllm serve MODEL`: {c.get('command')} {args[:2]}")
        if "--api-key" in args or any("API_KEY" in a for a in args):
            errors.append(f"{name}: API key on argv")
        env = {e["name"]: e for e in c.get("env", [])}
        if "secretKeyRef" not in (env.get("VLLM_API_KEY", {}).get("valueFrom") or {}):
            errors.append(f"{name}: VLLM_API_KEY not from a Secret")
        probe = c["startupProbe"]
        budget = probe["periodSeconds"] * probe["failureThreshold"]
        deadline = d["spec"].get("progressDeadlineSeconds", 600)
        if deadline < budget:
            errors.append(f"{name}: progressDeadlineSeconds {deadline} < startup budget {budget}")
        inits = {i["name"] for i in spec.get("initContainers", [])}
        if "prefetch-model" in inits:
            if "--revision" not in args:
                errors.append(f"{name}: prefetches but serves no pinned --revision")
            if env.get("HF_HUB_OFFLINE", {}).get("value") != "1":
                errors.append(f"{name}: prefetches but does not serve with HF_HUB_OFFLINE=1")
    if not errors:
        print(f"    vllm: {found} Deployments: vllm serve, key from env, deadline >= startup")
    return errors


def gpus(docs: list[Doc], limit: int | None) -> list[str]:
    errors: list[str] = []
    minimum = {
        d["spec"]["scaleTargetRef"]["name"]: int(d["spec"].get("minReplicaCount", 1))
        for d in docs
        if d["kind"] == "ScaledObject"
    }
    total = 0
    parts = []
    for name, template in pods(docs):
        short = name.split("/", 1)[1]
        per_pod = sum(
            int(((c.get("resources") or {}).get("limits") or {}).get("nvidia.com/gpu", 0))
            for c in template["spec"]["containers"]
        )
        if per_pod == 0:
            continue
        if per_pod > 1:
            errors.append(f"{name}: {per_pod} GPUs per pod")
        [d] = [d for d in docs if d["metadata"]["name"] == short and d["kind"] in POD_KINDS]
        replicas = minimum.get(short, d["spec"].get("replicas", 1))
        total += per_pod * replicas
        parts.append(f"{short} {replicas}x{per_pod}")
    if limit is not None and total > limit:
        errors.append(f"{total} GPUs at the minimum replica counts ({', '.join(parts)}) > {limit}")
    if not errors:
        print(f"    gpus: {total} at minimum replicas ({', '.join(parts) or 'none'})")
    return errors


def ingress(docs: list[Doc]) -> list[str]:
    paths = [
        p["path"]
        for d in docs
        if d["kind"] == "Ingress"
        for rule in d["spec"]["rules"]
        for p in rule["http"]["paths"]
    ]
    errors = [f"Ingress publishes {p} (only /v1)" for p in paths if not p.startswith("/v1")]
    if not paths:
        errors.append("no Ingress rendered")
    if not errors:
        print(f"    ingress: publishes {', '.join(sorted(set(paths)))} only")
    return errors


def redis_url(docs: list[Doc]) -> list[str]:
    errors: list[str] = []
    for name, template in pods(docs):
        for c in template["spec"]["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            url = env.get("COVRAG_REDIS_URL", {}).get("value", "")
            if "@" in url or "$(" in url:
                errors.append(f"{name}: a password inside COVRAG_REDIS_URL ({url}) is not escaped")
            if url and "secretKeyRef" not in (
                env.get("COVRAG_REDIS_PASSWORD", {}).get("valueFrom") or {}
            ):
                errors.append(f"{name}: COVRAG_REDIS_PASSWORD not from the Secret")
    if not errors:
        print("    redis: the password reaches the API apart from the URL (escaped by covrag)")
    return errors


def main() -> int:
    check, path, *rest = sys.argv[1:]
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    if check == "gpus":
        errors = gpus(docs, int(rest[0]) if rest else None)
    else:
        checks = {
            "restricted": restricted,
            "netpol": netpol,
            "vllm": vllm,
            "ingress": ingress,
            "redis": redis_url,
        }
        errors = checks[check](docs)
    for e in errors:
        print(f"    {check}: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
