#!/usr/bin/env bash
# Mint a kubeconfig for the fractal-scheduler ServiceAccount (standalone RUNNER=kubernetes).
#
#   serviceaccount/mint-kubeconfig.sh [-n NAMESPACE] [-d DURATION] [-o FILE]
#
# Uses the current kubectl context's server and CA, and a bound token from
# `kubectl create token` (https://kubernetes.io/docs/reference/kubectl/generated/kubectl_create/kubectl_create_token/).
# The token expires after DURATION (default 24h; the cluster may cap it): mint again then.
set -euo pipefail

namespace=fractal
duration=24h
out=fractal-scheduler.kubeconfig
account=fractal-scheduler
while getopts "n:d:o:a:h" opt; do
  case "$opt" in
    n) namespace=$OPTARG ;;
    d) duration=$OPTARG ;;
    o) out=$OPTARG ;;
    a) account=$OPTARG ;;
    *) sed -n '2,9p' "$0"; exit 2 ;;
  esac
done

command -v kubectl >/dev/null || { echo "kubectl is not on PATH" >&2; exit 1; }
cluster=$(kubectl config view --minify -o jsonpath='{.contexts[0].context.cluster}')
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca_data=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -z "$ca_data" ]; then
  # minikube and kind reference a CA file instead of embedding it.
  ca_file=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
  [ -n "$ca_file" ] || { echo "no CA for cluster $cluster in the current context" >&2; exit 1; }
  ca_data=$(base64 < "$ca_file" | tr -d '\n')
fi
token=$(kubectl -n "$namespace" create token "$account" --duration="$duration")

umask 077
cat > "$out" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: ${cluster}
    cluster:
      server: ${server}
      certificate-authority-data: ${ca_data}
users:
  - name: ${account}
    user:
      token: ${token}
contexts:
  - name: ${account}@${cluster}
    context:
      cluster: ${cluster}
      namespace: ${namespace}
      user: ${account}
current-context: ${account}@${cluster}
YAML
echo "wrote $out (server $server, namespace $namespace, token valid for $duration)" >&2
echo "use: KUBECONFIG=$PWD/$out KUBE_NAMESPACE=$namespace RUNNER=kubernetes python -m scheduler" >&2
