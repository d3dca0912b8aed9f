#!/usr/bin/env bash
# Build LLM Engine's images with podman (no Docker daemon, no registry needed): `make images` runs this.
#
#   images/build.sh build      install podman if missing, make sure the base image exists, build both images
#   images/build.sh archives   also write them as OCI archives (for `kind load image-archive` or `skopeo copy`)
#
# Settings come from the environment (the Makefile passes them): CONTROL_PLANE_IMAGE, ENGINE_IMAGE, VERSION,
# PYTHON_IMAGE, IMAGE_SOURCE, TORCH_INDEX_URL (the Dockerfile's default is the CPU wheels; a CUDA index makes the GPU
# variant) and OUT (where containers.conf, pip.conf and the archives are written).
#
# On a machine without a registry the Dockerfile's `FROM python:3.11-slim` is served by a local stand-in: Debian
# bookworm (minbase) with its python3.11, imported and tagged under the same name, so the Dockerfile stays the one a
# user builds against the real base. pip inside the build sees the machine's pip configuration (CA bundle, local
# wheel directories and indexes) through read-only mounts; the Dockerfile does not know about them.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${CONTROL_PLANE_IMAGE:?}" "${ENGINE_IMAGE:?}" "${VERSION:?}"
PYTHON_IMAGE=${PYTHON_IMAGE:-docker.io/library/python:3.11-slim}
IMAGE_SOURCE=${IMAGE_SOURCE:-https://github.com/llm-engine/llm-engine}
OUT=${OUT:-build/images}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

install_tools() {
  local missing=()
  for tool in podman buildah runc debootstrap; do command -v "$tool" > /dev/null || missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get > /dev/null; then
    echo "missing: ${missing[*]} — install podman, buildah, runc and debootstrap with your package manager" >&2
    exit 1
  fi
  log "Installing ${missing[*]} (Debian packages)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman buildah runc debootstrap > /dev/null
}

# crun (podman's default) fails on hosts with hybrid cgroups and low rlimits; runc with cgroupfs works everywhere.
# Containers get the host's hard limits: podman's defaults may exceed them, and then nothing starts. The process limit
# is also capped at the 32768 podman gives conmon, the containers' parent.
write_containers_conf() {
  local nofile nproc
  nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
  [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
  mkdir -p "$OUT"
  cat > "$OUT/containers.conf" << EOF
# Written by images/build.sh; used through CONTAINERS_CONF by \`make images\` and the container tests.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
  export CONTAINERS_CONF="$PWD/$OUT/containers.conf"
}

# The base image: already present, pulled, or (no registry reachable) the Debian stand-in.
ensure_base_image() {
  podman image exists "$PYTHON_IMAGE" && return
  log "Pulling $PYTHON_IMAGE"
  timeout 300 podman pull -q "$PYTHON_IMAGE" > /dev/null 2>&1 && return
  log "No registry reachable: building a stand-in for $PYTHON_IMAGE from Debian bookworm (a few minutes, once)"
  local root
  root=$(mktemp -d /var/tmp/llm-engine-base.XXXXXX)
  debootstrap --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" > "$OUT/debootstrap.log" 2>&1 \
    || { tail -n 20 "$OUT/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
  chroot "$root" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      python3.11 python3.11-venv python-is-python3 ca-certificates' >> "$OUT/debootstrap.log" 2>&1 \
    || { tail -n 20 "$OUT/debootstrap.log" >&2; rm -rf "$root"; exit 1; }
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/{doc,man,info,locale}/* \
    "$root"/var/log/* "$root"/debootstrap
  tar -C "$root" -c . | podman import -q \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'LABEL org.opencontainers.image.description="Stand-in for python:3.11-slim: Debian bookworm python3.11"' \
    --change 'CMD ["python3"]' - "$PYTHON_IMAGE" > /dev/null
  rm -rf "$root"
}

# Mirror the machine's pip configuration into the build: a pip.conf with its index, wheel-directory, constraint and
# CA settings, and read-only mounts of every local path they name (a file:// index is mounted from its parent, where
# its ../files live). Environment settings win over config files, as in pip.
pip_mounts() {
  declare -A seen=()
  local conf="$OUT/pip.conf" line key value item path
  printf '[global]\n' > "$conf"
  MOUNTS=(--volume "$PWD/$conf:/etc/pip.conf:ro")
  while IFS= read -r line; do
    key=${line%%=*} value=${line#*=}
    key=${key#*.} value=${value#\'} value=${value%\'}
    case $key in cert | index-url | extra-index-url | find-links | constraint) ;; *) continue ;; esac
    [ -n "${seen[$key]:-}" ] && continue
    seen[$key]=1
    printf '%s = %s\n' "$key" "$value" >> "$conf"
    for item in $value; do
      path=${item#file://}
      [ "${path:0:1}" = / ] || continue
      [ "$path" != "$item" ] && path=$(dirname "$path")
      [ -e "$path" ] && MOUNTS+=(--volume "$path:$path:ro")
    done
  done < <(python3 -m pip config list 2> /dev/null || true)
  if [ -z "${seen[cert]:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    printf 'cert = /etc/ssl/certs/ca-certificates.crt\n' >> "$conf"
    MOUNTS+=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  fi
}

build_target() {
  local target=$1 image=$2 started=$SECONDS revision
  revision=$(git rev-parse HEAD 2> /dev/null || echo unknown)
  log "Building $image (target $target; full log in $OUT/build-$target.log)"
  # Progress: each Dockerfile step as it starts (a cold build spends minutes in the pip steps), cut to one line.
  podman build --pull=never --network=host --layers --target "$target" \
    --build-arg "PYTHON_IMAGE=$PYTHON_IMAGE" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$revision" \
    --build-arg "SOURCE=$IMAGE_SOURCE" \
    ${TORCH_INDEX_URL:+--build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL"} \
    "${MOUNTS[@]}" --tag "$image" . 2>&1 | tee "$OUT/build-$target.log" \
    | sed -un '/STEP [0-9]*\/[0-9]*:/{s/^\(.\{112\}\).*/\1 …/;s/^/    /;p}' >&2 \
    || { tail -n 40 "$OUT/build-$target.log" >&2; exit 1; }
  stamp_revision "$image" "$revision"
  log "$image: $(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=si)B in $((SECONDS - started)) s"
}

# buildah's layer cache reuses a LABEL layer built with another REVISION build argument (when nothing before it
# changed), so the final image may claim an older commit: set the label again, in a config-only commit.
stamp_revision() {
  local image=$1 revision=$2 key=org.opencontainers.image.revision container
  [ "$(podman image inspect --format "{{index .Config.Labels \"$key\"}}" "$image")" = "$revision" ] && return
  container=$(buildah from --pull-never "$image")
  buildah config --label "$key=$revision" "$container"
  buildah commit --quiet "$container" "$image" > /dev/null
  buildah rm "$container" > /dev/null
}

save_archive() {
  local image=$1 file
  file="$OUT/$(basename "${image%%:*}")-${image##*:}.oci.tar"
  log "Saving $image to $file"
  rm -f "$file"
  podman save --format oci-archive --output "$file" "$image"
}

main() {
  local command=${1:-build}
  install_tools
  write_containers_conf
  ensure_base_image
  pip_mounts
  build_target control-plane "$CONTROL_PLANE_IMAGE"
  build_target engine "$ENGINE_IMAGE"
  if [ "$command" = archives ]; then
    save_archive "$CONTROL_PLANE_IMAGE"
    save_archive "$ENGINE_IMAGE"
  fi
}

main "$@"
