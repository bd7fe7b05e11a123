#!/usr/bin/env bash
# Builds Sextant's container images with umoci, without a container daemon and without pulling
# a base image: the one layer of each is made here from what the build produced.
#
#   scripts/image.sh BINARY OUT_DIR [NAME [PROGRAM...]]
#
# The layer holds the binary (/usr/local/bin/sextant), exactly the shared libraries it links
# (from `ldd`: libc, libm, libgcc_s and the loader, at the paths the binary asks for), an
# /etc/passwd and /etc/group naming uid 0 and the non-root user 65532, and an empty /tmp: no
# shell, nothing else. Each PROGRAM (a command on this machine's PATH) is added with the
# libraries it links, and the iptables plugins when it is iptables; NAME is then another
# image's (the init container's: `sextant iptables` runs iptables-restore, nft and ip).
# Writes OUT_DIR/NAME, an OCI layout holding `localhost/NAME:VERSION` and `VERSION` alone
# (VERSION is what `BINARY version` prints; NAME is `sextant` unless given), and
# OUT_DIR/NAME.tar, the same layout as an oci-archive. Every timestamp is SOURCE_DATE_EPOCH
# and every owner root, so the same files give the same image digest.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 BINARY OUT_DIR [NAME [PROGRAM...]]" >&2
  exit 2
fi
bin=$1
out=$2
name=${3:-sextant}
shift $(($# < 3 ? $# : 3))
programs=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
epoch=${SOURCE_DATE_EPOCH:-0}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

for tool in umoci jq readelf ldd; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "$tool is missing (Debian: apt-get install umoci jq binutils libc-bin)" >&2
    exit 1
  }
done

version=$("$bin" version | awk '$1 == "sextant" { print $2 }')
if [ -z "$version" ]; then
  echo "$bin version printed no version" >&2
  exit 1
fi
ref=localhost/$name:$version
revision=$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && [ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]; then
  revision=$revision-dirty
fi
source=$(sed -n 's/^repository = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
rootfs=$stage/rootfs

install -d -m 0755 "$rootfs" "$rootfs/etc" "$rootfs/usr" "$rootfs/usr/local" "$rootfs/usr/local/bin"
install -d -m 1777 "$rootfs/tmp"

# Creates a directory in the root filesystem as this machine has it: a directory that is a
# symbolic link here (Debian's /lib -> usr/lib) is the same link there, and what it points to
# is created, so a path a program has compiled in (iptables' plugin directory under /usr/lib)
# and the path `ldd` names (under /lib) both lead to the file.
declare -A made=()
make_dirs() {
  local path='' part
  [ -z "${made[$1]:-}" ] || return 0
  made[$1]=yes
  for part in ${1//\// }; do
    path=$path/$part
    if [ -L "$path" ]; then
      [ -L "$rootfs$path" ] || ln -s "$(readlink "$path")" "$rootfs$path"
      path=$(readlink -f "$path")
      make_dirs "$path"
    else
      install -d -m 0755 "$rootfs$path"
    fi
  done
}

# Sets `placed` to where PATH's file goes in the root filesystem: under its directory's real
# path, never through a link (an absolute link would lead out of the root filesystem). Not a
# command substitution, so that what make_dirs made is remembered.
declare -A real_dirs=()
place() {
  local dir=${1%/*}
  make_dirs "$dir"
  [ -n "${real_dirs[$dir]:-}" ] || real_dirs[$dir]=$(readlink -f "$dir")
  placed=$rootfs${real_dirs[$dir]}/${1##*/}
}

# Copies an ELF file (a path here) into the root filesystem at DEST (its own path unless
# given), with the loader it names and every library `ldd` resolves for it, each copied (not
# linked) to the path it will be looked for at.
add_elf() {
  local file=$1 dest=${2:-$1} linked interpreter libraries library
  linked=$(ldd "$file")
  if grep -q 'not found' <<<"$linked"; then
    echo "$file links libraries that are not installed:" >&2
    echo "$linked" >&2
    exit 1
  fi
  interpreter=$(readelf -l "$file" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
  libraries=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 }' <<<"$linked")
  place "$dest"
  install -m 0755 "$file" "$placed"
  for library in $interpreter $libraries; do
    place "$library"
    [ -e "$placed" ] || install -m 0755 "$library" "$placed"
  done
}

add_elf "$bin" /usr/local/bin/sextant
for program in "${programs[@]}"; do
  path=$(command -v "$program") || {
    echo "$program is not on the PATH (Debian: iptables, nftables, iproute2)" >&2
    exit 1
  }
  real=$(readlink -f "$path")
  add_elf "$real"
  place "$path"
  if [ ! -e "$placed" ]; then
    # A multi-call binary (xtables-nft-multi) tells what to be from the name it runs as.
    ln -s "$real" "$placed"
  fi
  # iptables loads its matches and targets (owner, REDIRECT, TPROXY, ...) as plugins.
  xtables=$(ldd "$real" | awk '$1 ~ /^libxtables\.so/ { print $3 }')
  if [ -n "$xtables" ] && [ -d "$(dirname "$xtables")/xtables" ]; then
    for plugin in "$(dirname "$xtables")"/xtables/*.so; do
      add_elf "$plugin"
    done
  fi
done

cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
chmod 0644 "$rootfs/etc/passwd" "$rootfs/etc/group"

# A tar that depends only on the files' contents and modes.
reproducible_tar() {
  local dir=$1 archive=$2
  shift 2
  tar -C "$dir" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$archive" "$@"
}
(cd "$rootfs" && find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort) >"$stage/top"
mapfile -t top <"$stage/top"
reproducible_tar "$rootfs" "$stage/layer.tar" "${top[@]}"

# The libraries are this machine's, so the image is for its architecture (OCI's names).
case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) arch=$(uname -m) ;;
esac

layout=$out/$name
rm -rf "$layout" "$out/$name.tar"
mkdir -p "$out"
umoci init --layout "$layout"
umoci new --image "$layout:$ref"
umoci raw add-layer --image "$layout:$ref" \
  --history.created "$created" \
  --history.created_by "scripts/image.sh: sextant $version${programs[*]:+ and ${programs[*]}}, the libraries they link, /etc/passwd, /etc/group, /tmp" \
  "$stage/layer.tar"
umoci config --image "$layout:$ref" --no-history \
  --created "$created" --os linux --architecture "$arch" \
  --config.user 65532:65532 \
  --config.entrypoint /usr/local/bin/sextant \
  --config.env PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.workingdir / \
  --config.exposedports 15010/tcp --config.exposedports 15012/tcp \
  --config.exposedports 15014/tcp --config.exposedports 15017/tcp \
  --config.label "org.opencontainers.image.title=$name" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$revision" \
  --config.label "org.opencontainers.image.source=$source" \
  --config.label "org.opencontainers.image.licenses=Apache-2.0"
umoci gc --layout "$layout"
# The bare version too, so `oci:OUT_DIR/NAME:VERSION` names the same image.
umoci tag --image "$layout:$ref" "$version"

# containerd (`kind load image-archive`, `ctr images import`) names an imported image by this
# annotation; skopeo and podman by `org.opencontainers.image.ref.name`, which umoci wrote.
jq -c --arg ref "$ref" '.manifests |= map(.annotations["io.containerd.image.name"] = $ref)' \
  "$layout/index.json" >"$stage/index.json"
install -m 0644 "$stage/index.json" "$layout/index.json"
find "$layout" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
reproducible_tar "$layout" "$out/$name.tar" oci-layout index.json blobs

manifest=$(jq -r '.manifests[0].digest' "$layout/index.json")
echo "image $ref: manifest $manifest"
echo "  layout  $layout (skopeo: oci:$layout:$version or oci:$layout:$ref)"
echo "  archive $out/$name.tar (skopeo: oci-archive:$out/$name.tar:$ref)"
echo "  layer   $(du -k "$stage/layer.tar" | cut -f1) KiB uncompressed; sextant $(sha256sum "$bin" | cut -d' ' -f1)"
