#!/usr/bin/env bash
# make run-cluster's first step, run by hack/node inside the cluster's namespace: install Keyward from
# charts/keyward with the working tree's images (pinned by digest in VALUES, written by hack/e2e) into
# keyward-system under the restricted Pod Security level, as a platform team installs it.
set -euo pipefail
values=${1:?usage: hack/run-cluster.sh VALUES.yaml}
kubectl create namespace keyward-system
kubectl label namespace keyward-system pod-security.kubernetes.io/enforce=restricted
helm install keyward charts/keyward --namespace keyward-system --values "$values" --wait --timeout 10m
kubectl --namespace keyward-system get deployments,pods -o wide
