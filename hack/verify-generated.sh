#!/usr/bin/env bash
# Fails when `make generate manifests` would change the generated files: deepcopy code, CRDs, RBAC and the
# generated reference pages (hack/apidocs).
# It compares snapshots taken before and after generating, so it works on a dirty tree as well as in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

generated=(api/v1alpha1/zz_generated.deepcopy.go config/crd/bases config/rbac/role.yaml config/verifier/role.yaml docs/reference/api.md
	docs/reference/annotations.md docs/reference/events.md docs/reference/conditions.md)
before=$(mktemp -d)
trap 'rm -rf "$before"' EXIT
for path in "${generated[@]}"; do
	if [[ -e $path ]]; then
		mkdir -p "$before/$(dirname "$path")"
		cp -r "$path" "$before/$path"
	fi
done

make --no-print-directory generate manifests >/dev/null

stale=0
for path in "${generated[@]}"; do
	if ! diff -r -u "$before/$path" "$path" >/dev/null 2>&1; then
		echo "stale generated file(s): $path" >&2
		diff -r -u "$before/$path" "$path" 2>&1 | head -40 >&2 || true
		stale=1
	fi
done
if ((stale)); then
	echo "run 'make generate manifests' and commit the result" >&2
	exit 1
fi
