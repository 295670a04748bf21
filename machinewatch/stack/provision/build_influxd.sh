#!/usr/bin/env bash
# Builds InfluxDB 2.x OSS (influxd) from its Go module, with libflux compiled by cargo
# through influxdata's pkg-config wrapper. Only the Go module proxy and crates.io are used.
# Usage: build_influxd.sh VERSION DEST_DIR   (DEST_DIR/influxd is the result)
set -euo pipefail
version="${1:?influxdb version, e.g. 2.9.1}"
dest="${2:?destination directory}"
pkgconfig_version="${MW_PKGCONFIG_VERSION:-v0.2.7}"

for tool in go cargo pkg-config cc; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "build_influxd: '$tool' is missing. Install it first (go: https via the Go toolchain package," \
         "cargo: rustup, pkg-config/cc: 'apt-get install -y pkg-config build-essential')." >&2
    exit 3
  fi
done

mkdir -p "$dest"
work="$dest/.build"
mkdir -p "$work/bin"
export GOBIN="$work/bin"
# An older local Go fetches the toolchain influxdb's go.mod asks for from the module proxy.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"

echo "[influxd] step 1/3: pkg-config wrapper ${pkgconfig_version} (builds libflux on demand)"
go install "github.com/influxdata/pkg-config@${pkgconfig_version}"
export PKG_CONFIG="$GOBIN/pkg-config"

# libflux pins an old Rust toolchain in rust-toolchain.toml that rustup cannot download here:
# use the installed stable one, and cap lints so newer compiler warnings are not errors.
export RUSTUP_TOOLCHAIN="${MW_RUSTUP_TOOLCHAIN:-stable}"
export RUSTFLAGS="${RUSTFLAGS:-} --cap-lints warn"
export CARGO_TERM_PROGRESS_WHEN=never

echo "[influxd] step 2/3: build influxd v${version} from its module (libflux via cargo: 10-30 min on 2 cores)"
# 'go install pkg@version' refuses modules with replace directives, so build the downloaded
# module source as the main module instead.
moddir=$(go mod download -json "github.com/influxdata/influxdb/v2@v${version}" | \
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
test -n "$moddir" || { echo "build_influxd: module download failed" >&2; exit 4; }
src="$work/src"
rm -rf "$src"; cp -r "$moddir" "$src"; chmod -R u+w "$src"
(cd "$src" && go build -v -ldflags "-X main.version=v${version} -X main.commit=module-v${version}" \
  -o "$GOBIN/influxd" ./cmd/influxd) 2>&1 | \
  while IFS= read -r line; do printf '[influxd] %s\n' "$line"; done

echo "[influxd] step 3/3: install into $dest"
install -m 0755 "$GOBIN/influxd" "$dest/influxd.tmp"
mv -f "$dest/influxd.tmp" "$dest/influxd"
"$dest/influxd" version
# libflux stays in Go's build cache; the copied source and the second binary are not needed.
rm -rf "$work"
