#!/bin/sh
# tests/ci/debian13.sh: the README's newcomer path on a minimal Debian 13 (trixie), run by .ci/run
# after the host's `make test`. As root:
#   1. a minimal trixie root, `debootstrap --variant=minbase trixie` from this machine's Debian
#      mirror (the first .../debian URI of /etc/apt/sources.list{,.d/*}; PETS_DEBIAN_MIRROR
#      overrides), cached in $PETS_TRIXIE_CACHE/base (default /var/cache/pets-trixie) and remade
#      when missing or older than 30 days; the .deb files apt downloads are kept in
#      $PETS_TRIXIE_CACHE/archives, so a rerun installs every package afresh without downloading;
#   2. a fresh copy of it ($PETS_TRIXIE_CACHE/work) with the checkout's files (tracked and
#      untracked, not the ignored build/ or data/) in /root/pets, and the 3-breed subset
#      ../shared/data/oxford-iiit-pet-3class beside it when the host has one;
#   3. inside, by chroot, with only /proc and /dev mounted in:
#        apt-get update && apt-get install -y make && make test
#      the README's quick start. The exit status is make test's.
# /proc and /dev are unmounted on every exit (trap); a work root is deleted only when nothing is
# mounted under it. The work root stays until the next run, for a look inside or for:
#   tests/ci/debian13.sh [--reuse] ['CMD']   CMD instead of the newcomer path, in /root/pets of a
#        fresh work root, or with --reuse of the last one (packages and build kept), e.g.
#        tests/ci/debian13.sh --reuse 'sh tests/bench-resnet34.sh build --iters 3'
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=${PETS_DEBIAN_SUITE:-trixie} # bookworm: the same check on Debian 12 (with its own cache)
CACHE=${PETS_TRIXIE_CACHE:-/var/cache/pets-$SUITE}
BASE=$CACHE/base
WORK=$CACHE/work
ARCHIVES=$CACHE/archives
REUSE=""
CMD="apt-get update && apt-get install -y make && make test"
if [ "${1:-}" = --reuse ]; then
    REUSE=1
    shift
fi
case $# in
0) ;;
1) CMD=$1 ;;
*) echo "usage: $0 [--reuse] ['COMMAND']" >&2; exit 2 ;;
esac

say() { echo "debian13.sh: $*"; }
fail() { echo "debian13.sh: $*" >&2; exit 1; }
stamp() { date +%s; }

[ "$(id -u)" = 0 ] || fail "needs root (debootstrap, mount and chroot); run it as root"

# ----------------------------------------------------------------------------
# mounts: only while the chroot runs; every exit unmounts them

mounted_under() { # prints the mount points under $1
    awk -v d="$1/" 'index($2, d) == 1 { print $2 }' /proc/mounts
}

unmount_all() {
    for m in "$WORK/proc" "$WORK/dev"; do
        if mounted_under "$WORK" | grep -qx "$m"; then
            umount "$m" 2> /dev/null || umount -l "$m" || echo "debian13.sh: cannot unmount $m" >&2
        fi
    done
}

remove_work() {
    [ -e "$WORK" ] || return 0
    unmount_all
    if [ -n "$(mounted_under "$WORK")" ]; then
        fail "still mounted under $WORK: $(mounted_under "$WORK" | tr '\n' ' '); not deleting it"
    fi
    rm -rf "$WORK"
}

trap unmount_all EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------
# 1. the cached minimal root

mirror() {
    if [ -n "${PETS_DEBIAN_MIRROR:-}" ]; then echo "$PETS_DEBIAN_MIRROR"; return; fi
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
            2> /dev/null |
        grep -v '^[[:space:]]*#' | grep -oE '(https?|file)://[^[:space:]]+/debian/?' | head -n 1)
    echo "${m:-http://deb.debian.org/debian}"
}

if [ -z "$REUSE" ]; then
    t0=$(stamp)
    if [ ! -f "$BASE/.pets-base-ok" ] || [ -n "$(find "$BASE/.pets-base-ok" -mtime +30)" ]; then
        command -v debootstrap > /dev/null || {
            say "installing debootstrap"
            apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
                --no-install-recommends debootstrap
        }
        MIRROR=$(mirror)
        say "debootstrap --variant=minbase $SUITE $BASE from $MIRROR"
        mkdir -p "$CACHE"
        rm -rf "$BASE.tmp" "$BASE"
        debootstrap --variant=minbase "$SUITE" "$BASE.tmp" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1 ||
            { tail -n 20 "$CACHE/debootstrap.log" >&2; fail "debootstrap failed (log: $CACHE/debootstrap.log)"; }
        touch "$BASE.tmp/.pets-base-ok"
        mv "$BASE.tmp" "$BASE"
    fi
    t1=$(stamp)
    say "base root ready in $((t1 - t0)) s"

    # ------------------------------------------------------------------------
    # 2. a fresh work root with the checkout

    remove_work
    cp -a "$BASE" "$WORK"
    mkdir -p "$WORK/root/pets" "$ARCHIVES"
    cp /etc/resolv.conf "$WORK/etc/resolv.conf" 2> /dev/null || true
    printf '#!/bin/sh\nexit 101\n' > "$WORK/usr/sbin/policy-rc.d" # no services started
    chmod 755 "$WORK/usr/sbin/policy-rc.d"
    find "$ARCHIVES" -maxdepth 1 -name '*.deb' -exec ln -f -t "$WORK/var/cache/apt/archives" {} +
    git -C "$SRC" rev-parse --git-dir > /dev/null 2>&1 ||
        fail "$SRC is not a git checkout: cannot tell its files from build outputs"
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard |
        tar --null -T - --ignore-failed-read -cf - 2> /dev/null) | tar -C "$WORK/root/pets" -xf -
    if [ -d "$SRC/../shared/data/oxford-iiit-pet-3class" ]; then
        mkdir -p "$WORK/root/shared/data"
        cp -a "$SRC/../shared/data/oxford-iiit-pet-3class" "$WORK/root/shared/data/"
    fi
    say "work root ready in $(($(stamp) - t1)) s"
else
    [ -d "$WORK/root/pets" ] || fail "no work root at $WORK to reuse: run $0 without --reuse first"
fi

# ----------------------------------------------------------------------------
# 3. the command inside

mount -t proc proc "$WORK/proc"
mount --bind /dev "$WORK/dev"
say "chroot $WORK: $CMD"
t2=$(stamp)
set +e
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
    chroot "$WORK" /bin/sh -c "cd /root/pets && $CMD"
rc=$?
set -e
unmount_all
say "inside: exit status $rc after $(($(stamp) - t2)) s"

if [ -z "$REUSE" ]; then # keep the downloaded packages for the next run (only the current ones)
    rm -rf "$ARCHIVES.new"
    mkdir -p "$ARCHIVES.new"
    find "$WORK/var/cache/apt/archives" -maxdepth 1 -name '*.deb' \
        -exec ln -f -t "$ARCHIVES.new" {} +
    rm -rf "$ARCHIVES"
    mv "$ARCHIVES.new" "$ARCHIVES"
fi
exit $rc
