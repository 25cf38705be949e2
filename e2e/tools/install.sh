#!/usr/bin/env bash
# Installs everything Ferrotel's tests and demo need, idempotently.
#
#   e2e/tools/install.sh            # Debian packages + Go tools
#   e2e/tools/install.sh --print-bin  # print the tool directory and exit
#
# Only package registries are used: Debian (bookworm + bookworm-backports),
# the Go module proxy, crates.io and PyPI. Go tools are built at pinned versions
# into $FERROTEL_CACHE (default ~/.cache/ferrotel); each build is keyed by a
# stamp that hashes its inputs, so a warm run rebuilds nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${FERROTEL_CACHE:-$HOME/.cache/ferrotel}
bin=$cache/bin
stamps=$cache/stamps

if [[ ${1:-} == --print-bin ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin" "$stamps"
export PATH=$bin:/usr/local/go/bin:$PATH
export GOFLAGS=${GOFLAGS:--trimpath}

log() { printf '\033[1m[install]\033[0m %s\n' "$*" >&2; }

# One installer at a time per cache: `make demo` and `make test` (or two
# checkouts) started together would otherwise race for dpkg's lock and build
# the same Go tools into the same directory.
exec 9>"$cache/.install.lock"
if ! flock -n 9; then
  log "another install into $cache is running; waiting for it"
  flock 9
fi

# ---------------------------------------------------------------- Debian
debian_packages=(
  clang-19 llvm-19 libbpf-dev bpftool linux-libc-dev
  iproute2 wrk hyperfine procps psmisc util-linux
  python3-venv jq curl ca-certificates pkg-config
  # The test bed's real node (e2e/src/node.rs): container runtime, CNI
  # plugins (bridge, host-local, loopback in /usr/lib/cni), and iptables for
  # kube-proxy's rules inside the node's network namespace.
  containerd runc containernetworking-plugins iptables
  # The TLS tests link a client with OpenSSL's static libraries, and use
  # curl on GnuTLS for TLS without OpenSSL.
  gcc libssl-dev libcurl3-gnutls
  # bench/uprobe-floor: perf probe / perf stat on a counting uprobe.
  linux-perf
)
# Packages taken from bookworm-backports: libbpf 1.1 lacks helpers our CO-RE
# programs use; 1.4 is in backports.
backports_packages=(libbpf-dev golang-1.23-go)

install_debian() {
  local missing=()
  for p in "${debian_packages[@]}" "${backports_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  local libbpf_version
  libbpf_version=$(dpkg-query -W -f='${Version}' libbpf-dev 2>/dev/null || true)
  if [[ ${#missing[@]} -eq 0 && $libbpf_version == 1:1.4* ]]; then
    return
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "install.sh: Debian packages missing (${missing[*]:-libbpf-dev>=1.4}); run as root or install them: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "Adding bookworm-backports to apt sources"
    cat > /etc/apt/sources.list.d/ferrotel-backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  log "Installing Debian packages: ${missing[*]:-} (libbpf-dev from backports)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${debian_packages[@]}" >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -t bookworm-backports "${backports_packages[@]}" >/dev/null
}

# ---------------------------------------------------------------- Go tools
# A stamp names the inputs of a build; if it matches and the outputs exist,
# the build is skipped.
stamp_ok() { # name key outputs...
  local name=$1 key=$2; shift 2
  [[ -f $stamps/$name && $(cat "$stamps/$name") == "$key" ]] || return 1
  for o in "$@"; do [[ -x $bin/$o ]] || return 1; done
}
stamp_write() { echo "$2" > "$stamps/$1"; }
hash_files() { cat "$@" | sha256sum | cut -c1-16; }

# Builds the `tool` directives of a module under e2e/tools/<dir>.
build_tool_module() { # dir output=package...
  local dir=$1; shift
  local key outputs=() inputs=("$here/$dir/go.mod")
  # go.sum and the module's own sources (a module that only names `tool`s
  # has none), so that editing a program here rebuilds it.
  [[ -f $here/$dir/go.sum ]] && inputs+=("$here/$dir/go.sum")
  while IFS= read -r f; do inputs+=("$f"); done < <(find "$here/$dir" -maxdepth 1 -name '*.go' | sort)
  key="$(go env GOVERSION)-$(hash_files "${inputs[@]}")${GO_LDFLAGS:+-$(sha256sum <<<"$GO_LDFLAGS" | cut -c1-8)}"
  for spec in "$@"; do outputs+=("${spec%%=*}"); done
  if stamp_ok "$dir" "$key" "${outputs[@]}"; then return; fi
  for spec in "$@"; do
    log "Building ${spec%%=*} (${spec#*=}) from Go modules"
    (cd "$here/$dir" && go build ${GO_LDFLAGS:+-ldflags="$GO_LDFLAGS"} -o "$bin/${spec%%=*}" "${spec#*=}")
  done
  stamp_write "$dir" "$key"
}

go_install() { # output module/path@version
  local out=$1 pkg=$2
  local key="$(go env GOVERSION)-$pkg"
  if stamp_ok "$out" "$key" "$out"; then return; fi
  log "Installing $pkg"
  local gobin
  gobin=$(mktemp -d)
  GOBIN=$gobin go install "$pkg"
  mv "$gobin"/* "$bin/$out"
  rmdir "$gobin"
  stamp_write "$out" "$key"
}

build_collector() {
  local manifest=$repo/operator/api/distribution/manifest.yaml
  local key="$(go env GOVERSION)-$(hash_files "$manifest")"
  if stamp_ok otelcol "$key" otelcol; then return; fi
  local version
  version=$(awk '/^  version:/ {print $2; exit}' "$manifest")
  go_install ocb "go.opentelemetry.io/collector/cmd/builder@v$version"
  log "Building the OpenTelemetry Collector (ferrotel-otelcol) with ocb"
  local work=$cache/build/otelcol
  rm -rf "$work" && mkdir -p "$work"
  sed "s#output_path: .*#output_path: $work#" "$manifest" > "$work/manifest.yaml"
  # ocb's own `go mod tidy` also fetches the test-only modules of every
  # dependency's tests, some of which the module proxy here does not serve
  # (403), although nothing the collector is built from needs them. So:
  # generate (go.mod included; ocb's tidy may fail, the files are written
  # before it runs), tidy tolerating the missing test modules, compile.
  ocb --config "$work/manifest.yaml" --skip-compilation >"$work/ocb.log" 2>&1 || true
  [[ -f $work/go.mod && -f $work/components.go ]] || { tail -40 "$work/ocb.log" >&2; exit 1; }
  (cd "$work" && go mod tidy -e) >>"$work/ocb.log" 2>&1 || { tail -40 "$work/ocb.log" >&2; exit 1; }
  ocb --config "$work/manifest.yaml" --skip-generate --skip-get-modules >>"$work/ocb.log" 2>&1 \
    || { tail -40 "$work/ocb.log" >&2; exit 1; }
  cp "$work/ferrotel-otelcol" "$bin/otelcol"
  stamp_write otelcol "$key"
}

install_go_tools() {
  build_tool_module kube \
    kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver \
    kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager \
    kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler \
    kubectl=k8s.io/kubernetes/cmd/kubectl
  build_tool_module etcd etcd=go.etcd.io/etcd/server/v3
  # The real node: kubelet and kube-proxy from the same Kubernetes release
  # (their own module, so the control plane's stamp is untouched); CoreDNS
  # and the pod sandbox program go into images, so they are static.
  # The version the kubelet reports (`kubectl get nodes`): a module build
  # has no git metadata, so stamp the release it was built from.
  local k8s
  k8s=$(awk '$1 == "k8s.io/kubernetes" {print $2; exit}' "$here/node/go.mod")
  GO_LDFLAGS="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$k8s")" \
  build_tool_module node \
    kubelet=k8s.io/kubernetes/cmd/kubelet \
    kube-proxy=k8s.io/kubernetes/cmd/kube-proxy
  CGO_ENABLED=0 build_tool_module coredns coredns=github.com/coredns/coredns
  CGO_ENABLED=0 build_tool_module pause pause=.
  go_install kwok sigs.k8s.io/kwok/cmd/kwok@v0.7.0
  go_install helm helm.sh/helm/v3/cmd/helm@v3.19.0
  go_install telemetrygen github.com/open-telemetry/opentelemetry-collector-contrib/cmd/telemetrygen@v0.161.0
  # terraform fmt for the Terraform example (docs/gitops/terraform); 1.5.7 is
  # the last MPL-licensed release and formats like every 1.x.
  go_install terraform github.com/hashicorp/terraform@v1.5.7
  build_collector
}

# ---------------------------------------------------------------- Python
# The Python test and benchmark apps (Flask, gunicorn, FastAPI, uvicorn,
# requests, the OpenTelemetry SDK) in one venv, keyed by the requirements.
install_python() {
  local req=$repo/e2e/apps/python/requirements.txt venv=$cache/venv
  [[ -f $req ]] || return 0
  local key
  key="$(python3 --version 2>&1)-$(hash_files "$req")"
  if [[ -f $stamps/python-venv && $(cat "$stamps/python-venv") == "$key" && -x $venv/bin/python ]]; then return; fi
  log "Creating the Python venv $venv from $req"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
  stamp_write python-venv "$key"
}

# ---------------------------------------------------------------- Rust
# cargo-fuzz for `make fuzz` (the probe's fuzz targets run on the nightly
# toolchain, which rustup provides; libFuzzer is built by the libfuzzer-sys
# crate). Pinned, built from crates.io into $bin.
cargo_fuzz_version=0.13.2
install_cargo_fuzz() {
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    log "Installing the nightly Rust toolchain (cargo fuzz needs its sanitizer flags)"
    rustup toolchain install nightly --profile minimal
  fi
  local key="cargo-fuzz-$cargo_fuzz_version"
  if stamp_ok cargo-fuzz "$key" cargo-fuzz; then return; fi
  log "Building cargo-fuzz $cargo_fuzz_version"
  cargo install --quiet --locked --root "$cache" --version "$cargo_fuzz_version" cargo-fuzz
  stamp_write cargo-fuzz "$key"
}

start=$SECONDS
install_debian
install_go_tools
install_python
install_cargo_fuzz
log "Tools ready in $bin ($((SECONDS - start)) s)"
