#!/usr/bin/env bash
# Mint a kubeconfig for the fractal-scheduler ServiceAccount (standalone RUNNER=kubernetes).
# Uses the current kubectl context's cluster (server and CA) and a bound token from
# `kubectl create token` (https://kubernetes.io/docs/reference/kubectl/generated/kubectl_create/kubectl_create_token/).
set -euo pipefail

usage() {
  cat <<'USAGE'
usage: serviceaccount/mint-kubeconfig.sh [-n NAMESPACE] [-a ACCOUNT] [-d DURATION] [-s SERVER] [-o FILE]
  -n NAMESPACE  where the ServiceAccount lives, and the kubeconfig's namespace
                (default: the current context's namespace if it names one, else fractal)
  -a ACCOUNT    the ServiceAccount (default fractal-scheduler)
  -d DURATION   token lifetime (default 24h; the cluster may cap it): mint again after it
  -s SERVER     the API server URL to write (default: the current context's). Use it when
                the kubeconfig is used where that address does not lead to the cluster,
                e.g. in the dev container (.devcontainer/) while your context says
                https://127.0.0.1:<port> (minikube's docker driver on macOS/Windows):
                  -s "https://$(minikube ip):8443"
                The server's certificate must name that address (minikube's names its IP).
  -o FILE       output (default fractal-scheduler.kubeconfig, mode 0600; *.kubeconfig is
                git- and docker-ignored: it holds a token)
USAGE
}

namespace=
duration=24h
out=fractal-scheduler.kubeconfig
account=fractal-scheduler
server=
while getopts "n:d:o:a:s:h" opt; do
  case "$opt" in
    n) namespace=$OPTARG ;;
    d) duration=$OPTARG ;;
    o) out=$OPTARG ;;
    a) account=$OPTARG ;;
    s) server=$OPTARG ;;
    h) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "unexpected argument: $1" >&2; usage >&2; exit 2; }
case "$server" in
  "" | https://* | http://*) ;;
  *) echo "-s wants a URL, e.g. https://192.168.49.2:8443 (got: $server)" >&2; exit 2 ;;
esac

command -v kubectl >/dev/null || { echo "kubectl is not on PATH" >&2; exit 1; }
if [ -z "$namespace" ]; then
  namespace=$(kubectl config view --minify -o jsonpath='{.contexts[0].context.namespace}')
  namespace=${namespace:-fractal}
fi
cluster=$(kubectl config view --minify -o jsonpath='{.contexts[0].context.cluster}')
if [ -z "$server" ]; then
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
fi
ca_data=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -z "$ca_data" ]; then
  # minikube and kind reference a CA file instead of embedding it.
  ca_file=$(kubectl config view --minify --raw -o jsonpath='{.clusters[0].cluster.certificate-authority}')
  [ -n "$ca_file" ] || { echo "no CA for cluster $cluster in the current context" >&2; exit 1; }
  ca_data=$(base64 < "$ca_file" | tr -d '\n')
fi
token=$(kubectl -n "$namespace" create token "$account" --duration="$duration") || {
  echo "no token for ServiceAccount $account in namespace $namespace (installed? kubectl apply -k deploy/; else pass -n)" >&2
  exit 1
}

# mktemp creates the file 0600 (even where $out exists with wider modes); mv replaces $out whole.
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp" <<YAML
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
mv -f "$tmp" "$out"
echo "wrote $out (server $server, namespace $namespace, token valid for $duration)" >&2
case "$out" in /*) path=$out ;; *) path=$PWD/$out ;; esac
echo "use: KUBECONFIG=$path KUBE_NAMESPACE=$namespace RUNNER=kubernetes python -m scheduler" >&2
