#!/usr/bin/env bash
# Proves the suite is green on a busy machine: two CPU hogs run beside
#   1. make test, three times in a row, and
#   2. go test -race -count=20 of ./pkg/verifier/... and of ./controllers.
# Any failure stops the run with a non-zero exit. Each step's wall time goes to stderr.
#
# Usage: hack/stress.sh [runs of make test (3)] [count for the package runs (20)]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-3}
count=${2:-20}
hogs=()
stop_hogs() { ((${#hogs[@]})) && kill "${hogs[@]}" 2>/dev/null || true; }
trap stop_hogs EXIT
for _ in 1 2; do
	(while :; do :; done) &
	hogs+=($!)
done
echo "stress: two CPU hogs running (pids ${hogs[*]})" >&2

step() {
	local start=$SECONDS
	echo "stress: $*" >&2
	"$@"
	echo "stress: passed in $((SECONDS - start))s: $*" >&2
}

for i in $(seq "$runs"); do
	step make test
done
assets=$(hack/controlplane.sh ensure)
export KUBEBUILDER_ASSETS="$assets"
# -timeout 0: twenty runs of a package under load take longer than go test's default ten minutes, and a
# test that waits too long fails on its own deadline (internal/eventually).
step go test -race -count="$count" -timeout 0 ./pkg/verifier/...
step go test -race -count="$count" -timeout 0 ./controllers
echo "stress: all passed" >&2
