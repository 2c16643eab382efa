#!/usr/bin/env bash
# Regenerates the example manifests of this folder (tests/deploy checks they are up to date).
# One command per line; each writes one file with -o.
set -euo pipefail
cd "$(dirname "$0")/../.."
STORES="--namespace reset-tune --mlflow-uri http://mlflow.reset-tune.svc.cluster.local:5000 --tune-storage s3://reset-tune/tune --s3-endpoint http://seaweedfs-s3.reset-tune.svc.cluster.local:8333"
reset-tune deploy rayjob search_spaces/cifar10-sym60.yaml $STORES --data-pvc reset-tune-data -o deploy/kuberay/rayjob-cifar10-sym60.yaml
reset-tune deploy rayjob search_spaces/fashion-mnist.yaml $STORES -o deploy/kuberay/rayjob-fashion-mnist.yaml
reset-tune deploy raycluster --name reset-tune $STORES --data-pvc reset-tune-data -o deploy/kuberay/raycluster.yaml
