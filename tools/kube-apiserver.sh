#!/usr/bin/env bash
# kube-apiserver and etcd for the Kubernetes tests, built from Go modules (no binary
# downloads) into a cache keyed on the version, so only the first run on a machine pays.
#
#   tools/kube-apiserver.sh build   build unless cached; print the directory of the binaries
#   tools/kube-apiserver.sh path    print that directory if both binaries are there, else exit 1
#
# Environment (all optional):
#   BGSERVE_KUBE_VERSION  k8s.io/kubernetes version (default v1.34.4)
#   BGSERVE_KUBE_CACHE    cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/bgserve)
#   GO                    the go binary (default: go on PATH, else /usr/local/go/bin/go)
#
# Go's own module and build caches (GOMODCACHE, GOCACHE) are used, so a machine that has
# built once rebuilds in seconds. A cold build takes about 7 minutes on 2 cores and up to
# 2 GB of memory (the linker); it prints its duration.
#
# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging modules
# (k8s.io/api, apiserver, client-go, ...) with ./staging paths at v0.0.0. So a scratch
# module requires k8s.io/kubernetes and replaces every staging module it requires with
# the published v0.<minor>.<patch>, and builds kube-apiserver and etcd (the version
# kubernetes pins) from one dependency set.
set -euo pipefail

# shellcheck source=tools/go-build.sh
source "$(dirname "${BASH_SOURCE[0]}")/go-build.sh"
NAME=kube-apiserver.sh

VERSION=${BGSERVE_KUBE_VERSION:-v1.34.4}
ROOT=${BGSERVE_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bgserve}
DIR="$ROOT/kube-$VERSION"
BIN="$DIR/bin"

RESULT="$BIN"
cached() { [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" ]]; }

write_module() {  # write_module KUBERNETES_GO_MOD: the scratch module in the current dir
    local kmod=$1 staging_version="v0.${VERSION#v1.}" goline godebug etcd staging
    goline=$(grep -m1 '^go ' "$kmod")
    godebug=$(grep '^godebug ' "$kmod" || true)
    etcd=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$kmod")
    # Only the staging modules it requires: sample-cli-plugin & co. are just replaced.
    staging=$(awk '$1 ~ /^k8s\.io\// && $2=="v0.0.0" {print $1}' "$kmod" | sort -u)
    [[ -n "$staging" && -n "$etcd" ]] || { say "cannot read $kmod"; exit 1; }
    {
        printf 'module bgservekube\n\n%s\n' "$goline"
        [[ -n "$godebug" ]] && printf '%s\n' "$godebug"
        printf '\nrequire (\n\tk8s.io/kubernetes %s\n\tgo.etcd.io/etcd/server/v3 %s\n)\n' \
            "$VERSION" "$etcd"
        printf '\nreplace (\n'
        for module in $staging; do printf '\t%s => %s %s\n' "$module" "$module" "$staging_version"; done
        printf ')\n'
    } > go.mod
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n)\n' > tools.go
}

build() {
    local go started src out minor flags kmod
    go=$(find_go)
    started=$(date +%s)
    go_build_env
    src="$DIR/src"
    out="$DIR/bin.partial"
    rm -rf "$src" "$out"
    mkdir -p "$src" "$out"
    cd "$src"
    say "building kube-apiserver $VERSION and etcd with $("$go" version) (cold: ~7 min)"
    printf 'module bgservekube\n\ngo 1.22\n' > go.mod
    kmod=$(nice -n 19 "$go" mod download -json "k8s.io/kubernetes@$VERSION" \
        | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
    [[ -f "$kmod" ]] || { say "k8s.io/kubernetes@$VERSION is not on the module proxy"; exit 1; }
    write_module "$kmod"
    nice -n 19 "$go" mod tidy
    minor=$(echo "$VERSION" | cut -d. -f2)
    flags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        flags+=" -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
        flags+=" -X $pkg.gitTreeState=clean"
    done
    nice -n 19 "$go" build -p 2 -trimpath -ldflags "$flags" -o "$out/kube-apiserver" \
        k8s.io/kubernetes/cmd/kube-apiserver
    nice -n 19 "$go" build -p 2 -trimpath -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3
    "$out/kube-apiserver" --version >/dev/null
    "$out/etcd" --version >/dev/null
    rm -rf "$BIN"
    mv "$out" "$BIN"
    say "built kube-apiserver $VERSION and etcd in $(($(date +%s) - started))s into $BIN"
}

main "$@"
