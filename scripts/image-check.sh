#!/usr/bin/env bash
# Checks the image `make image` built, the way a container runtime would use it: unpacks it
# with umoci into a runtime bundle and runs its entrypoint from the bundle's config, in the
# unpacked root filesystem (chroot) as the image's user. Checks that
# - the root filesystem holds the binary, its libraries, /etc/passwd and /etc/group, nothing
#   else that runs (no shell);
# - the image's user is 65532 and `sextant version` prints the image's version;
# - `sextant serve --config-dir` on the example mesh, copied into the root filesystem, answers
#   /ready with 200 on its admin port, shows the mesh in /debug/registryz and /debug/syncz,
#   and exits 0 on SIGTERM;
# - the init container's image (`sextant-init`) sets up a Pod's capture with its own
#   iptables-restore, nft and ip, in a new network namespace.
# Needs root (umoci unpack, chroot, unshare). Ports are ones the kernel just said were free.
#
#   scripts/image-check.sh IMAGE_DIR   (as `make image` wrote it: IMAGE_DIR/sextant{,-init})
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 IMAGE_DIR" >&2
  exit 2
fi
layout=$1/sextant
root=$(cd "$(dirname "$0")/.." && pwd)
fail() {
  echo "image-check: $*" >&2
  exit 1
}
[ "$(id -u)" = 0 ] || fail "needs root (umoci unpack and chroot)"
[ -f "$layout/index.json" ] || fail "no image at $layout: run make image"

ref=$(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"] | select(contains("/"))' "$layout/index.json")
version=${ref##*:}
work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -KILL "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

umoci unpack --image "$layout:$ref" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
bundle_config=$work/bundle/config.json

# What the runtime would run, and as whom.
uid=$(jq -r '.process.user.uid' "$bundle_config")
gid=$(jq -r '.process.user.gid' "$bundle_config")
mapfile -t entrypoint < <(jq -r '.process.args[]' "$bundle_config")
[ "$uid:$gid" = 65532:65532 ] || fail "the image runs as $uid:$gid, not 65532:65532"
[ "${entrypoint[*]}" = /usr/local/bin/sextant ] || fail "entrypoint is '${entrypoint[*]}'"

# Nothing that runs beyond the binary and the libraries it loads.
unexpected=$(find "$rootfs" -mindepth 1 \( -type f -o -type l \) -printf '%P\n' \
  | { grep -vxE 'usr/local/bin/sextant|etc/(passwd|group)|lib|lib64|usr/lib(64)?/.*\.so(\.[0-9]+)*' || true; })
[ -z "$unexpected" ] || fail "unexpected files in the image: $unexpected"
for shell in bin/sh bin/bash bin/busybox usr/bin/sh; do
  [ ! -e "$rootfs/$shell" ] || fail "the image has $shell"
done
[ "$(stat -c %a "$rootfs/tmp")" = 1777 ] || fail "/tmp is not 1777"

run() {
  chroot --userspec="$uid:$gid" "$rootfs" "${entrypoint[@]}" "$@"
}

printed=$(run version)
[ "$printed" = "sextant $version" ] || fail "'sextant version' printed '$printed', not 'sextant $version'"
echo "image-check: $ref runs as $uid:$gid: $printed"

# Four ports nothing listens on now.
mapfile -t ports < <(python3 - <<'EOF'
import socket
held = []
for _ in range(4):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
    print(s.getsockname()[1])
EOF
)
cp -r "$root/examples" "$rootfs/config"
chmod -R a+rX "$rootfs/config"
# Not through run(): a function in the background is a subshell, and $! must be sextant.
chroot --userspec="$uid:$gid" "$rootfs" "${entrypoint[@]}" serve --config-dir /config --listen-address 127.0.0.1 \
  --xds-port "${ports[0]}" --secure-xds-port "${ports[1]}" \
  --admin-port "${ports[2]}" --webhook-port "${ports[3]}" >"$work/serve.log" 2>&1 &
server=$!
admin=http://127.0.0.1:${ports[2]}
show_log() {
  echo "--- sextant serve's log" >&2
  tail -n 40 "$work/serve.log" >&2
}

ready=
for _ in $(seq 1 120); do
  kill -0 "$server" 2>/dev/null || { show_log; fail "sextant serve exited before it was ready"; }
  if [ "$(curl -s -o /dev/null -w '%{http_code}' "$admin/ready")" = 200 ]; then
    ready=yes
    break
  fi
  sleep 0.5
done
[ -n "$ready" ] || { show_log; fail "/ready never answered 200"; }

running_as=$(awk '/^Uid:/ { print $2 }' "/proc/$server/status")
[ "$running_as" = 65532 ] || fail "sextant serve runs as uid $running_as"

registry=$(curl -sf "$admin/debug/registryz") || { show_log; fail "/debug/registryz failed"; }
grep -q 'reviews' <<<"$registry" || fail "/debug/registryz does not show the example mesh's reviews service"
curl -sf -o /dev/null "$admin/debug/syncz" || { show_log; fail "/debug/syncz failed"; }
echo "image-check: sextant serve in the image is ready on $admin and serves the example mesh"

kill -TERM "$server"
# The chart's grace period is 15 s; the streams here are none, so it should not need it.
for _ in $(seq 1 60); do
  kill -0 "$server" 2>/dev/null || break
  sleep 0.5
done
kill -0 "$server" 2>/dev/null && { show_log; fail "sextant serve still runs 30 s after SIGTERM"; }
status=0
wait "$server" || status=$?
server=
[ "$status" = 0 ] || { show_log; fail "sextant serve exited with $status on SIGTERM"; }
echo "image-check: sextant serve stopped on SIGTERM with status 0"

# The init container's image (`sextant-init`): `sextant iptables`, found on the image's PATH as
# the injected Pod's `command: [sextant]` finds it, sets up capture in a new network namespace
# with each backend, REDIRECT and TPROXY, and the image's own tools show the rules. As root,
# as the injected init container runs.
init_layout=$1/sextant-init
init_ref=$(jq -r '.manifests[].annotations["org.opencontainers.image.ref.name"] | select(contains("/"))' "$init_layout/index.json")
umoci unpack --image "$init_layout:$init_ref" "$work/init" >/dev/null
initfs=$work/init/rootfs
path_env=$(jq -r '.process.env[] | select(startswith("PATH="))' "$work/init/config.json")
[ -n "$path_env" ] || fail "$init_ref sets no PATH"
# A container runtime mounts /dev; chroot does not, and sextant's children read /dev/null.
mkdir -p "$initfs/dev"
mknod -m 666 "$initfs/dev/null" c 1 3
# Runs `sextant iptables ARGS` and then LISTING (a command of the image's tools, split on
# spaces), both in the image and in one new network namespace; prints LISTING's output.
capture() {
  # shellcheck disable=SC2016 # expanded by the inner bash
  unshare --net bash -c '
    env -i "$0" chroot "$1" sextant iptables "${@:3}" >/dev/null || exit 1
    env -i "$0" chroot "$1" $2' "$path_env" "$initfs" "$@"
}
rules=$(capture iptables-save -i '*' -b '*') || fail "sextant iptables (iptables-restore) failed in $init_ref"
grep -q -- '-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006' <<<"$rules" \
  || fail "$init_ref: iptables-save shows no inbound redirect: $rules"
rules=$(capture 'nft list ruleset' --backend nft -i '*' -b '*') || fail "sextant iptables --backend nft failed in $init_ref"
grep -q 'redirect to :15006' <<<"$rules" || fail "$init_ref: nft shows no inbound redirect: $rules"
rules=$(capture 'ip rule' -m TPROXY -i '*' -b '*') || fail "sextant iptables -m TPROXY failed in $init_ref"
grep -q 'fwmark 0x539 lookup 133' <<<"$rules" || fail "$init_ref: ip rule shows no TPROXY rule: $rules"
echo "image-check: $init_ref sets up capture with iptables-restore, nft, and TPROXY's ip rules"
