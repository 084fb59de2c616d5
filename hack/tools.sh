#!/usr/bin/env bash
# Prints the path of a development tool Keyward pins, building it into the cache first when missing.
# Tools are built with `go install pkg@version`, outside Keyward's module, so their dependencies never touch
# Keyward's go.mod (golangci-lint's own advice: it is not meant to be a `go tool` of the module it lints).
#
# Usage: hack/tools.sh golangci-lint
set -euo pipefail

GOLANGCI_LINT_VERSION=v2.15.0

cache=${KEYWARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward}/tools
case ${1:-} in
golangci-lint)
	dir=$cache/golangci-lint-$GOLANGCI_LINT_VERSION
	if [[ ! -x $dir/golangci-lint ]]; then
		echo "hack/tools.sh: building golangci-lint $GOLANGCI_LINT_VERSION into $dir (once)" >&2
		mkdir -p "$dir"
		GOBIN=$dir go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$GOLANGCI_LINT_VERSION"
	fi
	echo "$dir/golangci-lint"
	;;
*)
	echo "usage: hack/tools.sh golangci-lint" >&2
	exit 2
	;;
esac
