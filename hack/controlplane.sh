#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy into a cache outside the checkout.
#
# Nothing but Go modules can be downloaded here, so setup-envtest's release downloads are not an option.
# Instead a throwaway module requires k8s.io/kubernetes and points each staging module that Kubernetes'
# go.mod replaces with ./staging/... at the published k8s.io/<staging> module of the matching version.
#
# Usage:
#   hack/controlplane.sh ensure   build whatever is missing (progress on stderr), print the assets dir
#   hack/controlplane.sh path     print the assets dir without building
#   hack/controlplane.sh local    also build kube-controller-manager (make run-local: garbage collection and
#                                 ClusterRole aggregation, as in a cluster); print the dir
#   hack/controlplane.sh node     also build what a real node needs (kubelet, kube-proxy, kube-scheduler,
#                                 kube-controller-manager, and the helm CLI at go.mod's version); print the dir
#
# Environment:
#   KUBEBUILDER_ASSETS   a directory that already holds the three binaries; used as is when complete
#   KEYWARD_CACHE_DIR    cache root (default: ${XDG_CACHE_HOME:-$HOME/.cache}/keyward)
set -euo pipefail

KUBE_VERSION=${KUBE_VERSION:-v1.37.2}
STAGING_VERSION=${STAGING_VERSION:-v0.${KUBE_VERSION#v1.}}
ETCD_VERSION=${ETCD_VERSION:-v3.7.0}
CACHE_ROOT=${KEYWARD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyward}
ASSETS_DIR="$CACHE_ROOT/controlplane/k8s-${KUBE_VERSION}-etcd-${ETCD_VERSION}"
BINARIES=(kube-apiserver kubectl etcd)
# What hack/e2e runs beyond the control plane: a node and the scheduling and service machinery around it.
NODE_BINARIES=(kubelet kube-proxy kube-scheduler kube-controller-manager helm)

log() { printf '[controlplane] %s\n' "$*" >&2; }

complete_in() {
	local dir=$1 bin
	for bin in "${BINARIES[@]}"; do [[ -x "$dir/$bin" ]] || return 1; done
}

# extra_binaries prints what a mode needs beyond the control plane.
extra_binaries() {
	case $1 in
	node) echo "${NODE_BINARIES[@]}" ;;
	local) echo kube-controller-manager ;;
	esac
}

extras_complete_in() {
	local dir=$1 want=$2 bin
	complete_in "$dir" || return 1
	for bin in $(extra_binaries "$want"); do [[ -x "$dir/$bin" ]] || return 1; done
}

assets_dir() {
	if [[ -n "${KUBEBUILDER_ASSETS:-}" ]] && complete_in "$KUBEBUILDER_ASSETS"; then
		echo "$KUBEBUILDER_ASSETS"
	else
		echo "$ASSETS_DIR"
	fi
}

# prepare_module writes the throwaway build module into $1.
prepare_module() {
	local dir=$1
	mkdir -p "$dir"
	cd "$dir"
	export GOFLAGS=-mod=mod GOWORK=off
	cat >go.mod <<MOD
module keyward.dev/controlplane-build

go 1.26
MOD
	log "resolving k8s.io/kubernetes@${KUBE_VERSION}"
	local kmod
	kmod=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[[ -f "$kmod" ]] || { log "could not download the go.mod of k8s.io/kubernetes@${KUBE_VERSION}"; exit 1; }
	local staging
	staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$kmod")
	local args=(-require="k8s.io/kubernetes@${KUBE_VERSION}" -require="go.etcd.io/etcd/server/v3@${ETCD_VERSION}")
	local m
	for m in $staging; do args+=(-replace="$m=$m@${STAGING_VERSION}"); done
	# Every module Keyward requires, at Keyward's version (or newer, where Kubernetes needs it): a package
	# that kube-apiserver and Keyward's own code both import then has the same dependencies in both builds,
	# so the Go build cache compiles it once for both (client-go, apimachinery, grpc, protobuf, ...).
	if [[ -n "${PROJECT_DIR:-}" ]]; then
		local req
		while read -r req; do
			[[ -n "$req" ]] && args+=(-require="$req")
		done < <(cd "$PROJECT_DIR" && GOFLAGS= go list -m -f '{{if not .Main}}{{.Path}}@{{.Version}}{{end}}' all)
	fi
	go mod edit "${args[@]}"
}

ldflags() {
	local minor=${KUBE_VERSION#v1.}
	minor=${minor%%.*}
	local f="-s -w"
	local pkg
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		f+=" -X $pkg.gitVersion=${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
		f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	echo "$f"
}

build() {
	local bin=$1 pkg=$2 version=$3 flags=$4 work=$5
	local start=$SECONDS
	log "building $bin from $pkg@$version (this takes minutes on a cold cache)"
	# No -trimpath: compiled packages then match those of Keyward's own builds (see prepare_module).
	(cd "$work" && go get "$pkg@$version" >&2 && go build -ldflags "$flags" -o "$ASSETS_DIR/$bin.tmp" "$pkg")
	mv "$ASSETS_DIR/$bin.tmp" "$ASSETS_DIR/$bin"
	log "built $bin in $((SECONDS - start))s"
}

ensure() {
	local want=${1:-controlplane}
	local dir
	dir=$(assets_dir)
	if extras_complete_in "$dir" "$want"; then
		echo "$dir"
		return
	fi
	# Extras are built beside the cached control plane, never into a KUBEBUILDER_ASSETS given from outside.
	[[ $want == controlplane ]] || dir=$ASSETS_DIR
	mkdir -p "$ASSETS_DIR"
	local work
	work=$(mktemp -d)
	# Expanded now: the local variable is gone by the time the shell exits.
	# shellcheck disable=SC2064
	trap "rm -rf '$work'" EXIT
	(PROJECT_DIR="$(cd "$(dirname "$0")/.." && pwd)" prepare_module "$work")
	local kflags
	kflags=$(ldflags)
	[[ -x "$ASSETS_DIR/etcd" ]] || build etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" "-s -w" "$work"
	[[ -x "$ASSETS_DIR/kube-apiserver" ]] || build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "${KUBE_VERSION}" "$kflags" "$work"
	[[ -x "$ASSETS_DIR/kubectl" ]] || build kubectl k8s.io/kubernetes/cmd/kubectl "${KUBE_VERSION}" "$kflags" "$work"
	local bin
	for bin in $(extra_binaries "$want"); do
		[[ $bin == helm || -x "$ASSETS_DIR/$bin" ]] || build "$bin" "k8s.io/kubernetes/cmd/$bin" "${KUBE_VERSION}" "$kflags" "$work"
	done
	if [[ $want == node ]]; then
		# The helm CLI at the version of the Helm SDK that Keyward's chart test already uses.
		if [[ ! -x "$ASSETS_DIR/helm" ]]; then
			local helmv
			helmv=$(cd "$(dirname "$0")/.." && go list -m -f '{{.Version}}' helm.sh/helm/v4)
			build helm helm.sh/helm/v4/cmd/helm "$helmv" "-s -w -X helm.sh/helm/v4/internal/version.version=$helmv" "$work"
		fi
	fi
	log "control plane ready in $ASSETS_DIR"
	echo "$ASSETS_DIR"
}

case "${1:-ensure}" in
ensure) ensure ;;
local) ensure local ;;
node) ensure node ;;
path) assets_dir ;;
*) echo "usage: $0 [ensure|path|local|node]" >&2; exit 2 ;;
esac
