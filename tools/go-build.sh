# Shared by tools/kube-apiserver.sh and tools/envoy-gateway.sh (sourced, not run): the Go
# toolchain, its environment, and the `build`/`path` commands over a cache directory.
# The sourcing script sets NAME (for messages), DIR (the cache entry, also the lock's
# home) and RESULT (what `path` and `build` print), and defines `cached` and `build`.

say() { echo "[$NAME $(date +%T)] $*" >&2; }

find_go() {
    if [[ -n "${GO:-}" ]]; then echo "$GO"; return; fi
    if command -v go >/dev/null 2>&1; then command -v go; return; fi
    if [[ -x /usr/local/go/bin/go ]]; then echo /usr/local/go/bin/go; return; fi
    say "no Go toolchain (go on PATH, /usr/local/go/bin/go or GO=...): install Go >= 1.24"
    exit 3
}

go_build_env() {  # static binaries from the module proxy, with the local toolchain only
    export GOTOOLCHAIN=local CGO_ENABLED=0 GO111MODULE=on GOWORK=off
    export GOFLAGS="${GOFLAGS:+$GOFLAGS }-modcacherw -buildvcs=false"
}

main() {  # main build|path
    case "${1:-}" in
        path)
            cached || { say "not built yet: run tools/$NAME build"; exit 1; }
            echo "$RESULT"
            ;;
        build)
            mkdir -p "$DIR"
            # One build per version at a time: CI's background build and a test run may race.
            exec 9>"$DIR/.lock"
            flock 9
            if cached; then
                say "cached: $RESULT"
            else
                (build)
            fi
            echo "$RESULT"
            ;;
        *)
            echo "usage: tools/$NAME build|path" >&2
            exit 2
            ;;
    esac
}
