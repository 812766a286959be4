#!/usr/bin/env bash
# Container entry point of the kiwi-fhir image (docker/Dockerfile.cpu).
#
# Why a script: compose's depends_on only orders *starts*; the service must
# not race PostgreSQL on its first migration, so `serve` waits (bounded) for
# the TCP endpoints in KIWI_WAIT_FOR first. Triton and vLLM need no wait:
# the service starts without them and answers UNAVAILABLE until they are up.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: kiwi-entrypoint [--dry-run] COMMAND [ARGS...]

commands:
  serve [ARGS]        wait for KIWI_WAIT_FOR, then run `kiwi-fhir serve ARGS`
                      (settings come from KIWI_FHIR_* variables)
  healthcheck         exit 0 when the gRPC health service answers SERVING for
                      the process (service ""); used by HEALTHCHECK
  triton-repo OUT [ARGS]
                      assemble a Triton model repository from the packaged
                      model into OUT (a volume shared with Triton)
  help, --help        this text
  anything else       run as given (e.g. `kiwi-fhir extract -`)

environment:
  KIWI_WAIT_FOR       space-separated host:port list to wait for (default: none)
  KIWI_WAIT_TIMEOUT   seconds to wait for each (default: 120)
  KIWI_FHIR_GRPC_PORT the port `healthcheck` probes on 127.0.0.1 (default: 50051)
  PYTHON              the interpreter with kiwi-fhir installed (default: python3)
  --dry-run           print what would run (and what would be waited for), run nothing
EOF
}

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
    DRY_RUN=1
    shift
fi

run() {
    if [[ $DRY_RUN == 1 ]]; then
        printf 'would run:'
        printf ' %q' "$@"
        printf '\n'
        return 0
    fi
    exec "$@"
}

wait_for() {
    local target=$1 timeout=${KIWI_WAIT_TIMEOUT:-120}
    local host=${target%:*} port=${target##*:}
    if [[ -z "$host" || -z "$port" || "$host" == "$target" ]]; then
        echo "kiwi-entrypoint: KIWI_WAIT_FOR entry '$target' is not host:port" >&2
        return 2
    fi
    if [[ $DRY_RUN == 1 ]]; then
        echo "would wait up to ${timeout}s for $host:$port"
        return 0
    fi
    local deadline=$((SECONDS + timeout))
    until (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            echo "kiwi-entrypoint: $host:$port not reachable after ${timeout}s" >&2
            return 1
        fi
        sleep 1
    done
    echo "kiwi-entrypoint: $host:$port is up"
}

healthcheck() {
    run "${PYTHON:-python3}" -c '
import os, sys
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
port = os.environ.get("KIWI_FHIR_GRPC_PORT") or "50051"
try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=4)
except grpc.RpcError as exc:
    sys.exit(f"unhealthy: {exc.code().name}")
sys.exit(0 if r.status == health_pb2.HealthCheckResponse.SERVING else "not serving")
'
}

cmd=${1:-serve}
[[ $# -gt 0 ]] && shift
case "$cmd" in
    help | -h | --help)
        usage
        ;;
    serve)
        for target in ${KIWI_WAIT_FOR:-}; do
            wait_for "$target"
        done
        run kiwi-fhir serve "$@"
        ;;
    healthcheck)
        healthcheck
        ;;
    triton-repo)
        if [[ $# -lt 1 ]]; then
            echo "kiwi-entrypoint: triton-repo needs an output directory" >&2
            exit 2
        fi
        out=$1
        shift
        run "${PYTHON:-python3}" -m kiwi_fhir.extractors.triton_repo --out "$out" "$@"
        ;;
    *)
        run "$cmd" "$@"
        ;;
esac
