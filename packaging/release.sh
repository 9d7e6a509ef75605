#!/usr/bin/env bash
# packaging/release.sh: the release packages, in one command, on a bare Debian 12 machine.
#
#   packaging/release.sh [--arch amd64,arm64,armhf] [--binary ARCH=FILE]... [--no-setup]
#                        [--compress xz|gzip|none]
#
# Writes to $CARGO_TARGET_DIR/dist (default target/dist), for each architecture:
#   update-coordinator_VERSION_ARCH.deb          amd64, arm64 (64-bit Pi OS), armhf (ARMv7:
#                                                Pi 2/3/4/5 on 32-bit Pi OS)
#   update-coordinator-VERSION-ARCH.tar.gz       the binary with install.sh and what it installs
# and SHA256SUMS over all of them.
#
# Installs what it needs (as root, when missing): Debian's cross compilers and C libraries
# (gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, libc6-dev-*-cross) and the Rust targets
# (rustup target add); --no-setup skips that. The builds are packaged stripped. --binary
# ARCH=FILE packages an existing build as it is, instead of building (the tests use it). Every file goes where packaging/files says: the .deb's
# tree is laid out by install.sh itself (DESTDIR, --for-package), and the .deb's postinst runs
# the packaged install.sh. --compress: the .deb's (default xz; the tests use none). glibc builds (not static musl): see README.md, "Packages".
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# install.sh's functions (elf_arch reads a binary's ELF header and ARM attributes; manifest
# reads packaging/files), defined first so that this script's own helpers below win.
# shellcheck source=install.sh
source "$repo/install.sh"
target_dir=${CARGO_TARGET_DIR:-$repo/target}
out=$target_dir/dist
NAME=update-coordinator
arches=(amd64 arm64 armhf)
setup=1
compress=xz
declare -A given=()

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; }
die() {
    printf 'release.sh: %s\n' "$*" >&2
    exit 1
}

while (($#)); do
    case $1 in
    --arch) (($# >= 2)) || die "--arch needs a list"; IFS=, read -r -a arches <<<"$2"; shift ;;
    --binary)
        [[ $# -ge 2 && $2 == *=* ]] || die "--binary takes ARCH=FILE"
        given[${2%%=*}]=$(realpath -- "${2#*=}")
        shift
        ;;
    --no-setup) setup=0 ;;
    --compress) (($# >= 2)) || die "--compress needs xz, gzip or none"; compress=$2; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
    esac
    shift
done

# triple ARCH, gnu_prefix ARCH (the cross toolchain's prefix), elf ARCH (what install.sh's
# elf_arch must read from the binary).
triple() {
    case $1 in
    amd64) echo x86_64-unknown-linux-gnu ;;
    arm64) echo aarch64-unknown-linux-gnu ;;
    armhf) echo armv7-unknown-linux-gnueabihf ;;
    *) die "unknown architecture $1 (amd64, arm64, armhf)" ;;
    esac
}
gnu_prefix() {
    case $1 in
    arm64) echo aarch64-linux-gnu ;;
    armhf) echo arm-linux-gnueabihf ;;
    esac
}
elf() {
    case $1 in
    amd64) echo x86_64 ;;
    arm64) echo aarch64 ;;
    armhf) echo armv7 ;;
    esac
}
for arch in "${arches[@]}"; do triple "$arch" >/dev/null; done

# check_arch ARCH FILE: FILE is an executable built for ARCH (else no package is made).
check_arch() {
    local found
    [[ -x $2 ]] || die "$1: no build at $2"
    found=$(elf_arch "$2") || die "$1: $2 is not an ELF executable"
    [[ $found == "$(elf "$1")" ]] || die "$1: $2 is built for $found, not $(elf "$1")"
}
for arch in "${!given[@]}"; do check_arch "$arch" "${given[$arch]}"; done

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/Cargo.toml" | head -n 1)
[[ -n $version ]] || die "no version in Cargo.toml"
# Reproducible timestamps: the last commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)}
host_arch=$(dpkg --print-architecture)
[[ $host_arch == amd64 ]] || die "builds on an amd64 Debian machine (this one is $host_arch)"

step() { printf '\n=== %s\n' "$*"; }

if ((setup)); then
    step "build tools"
    pkgs=()
    for arch in "${arches[@]}"; do
        [[ -n ${given[$arch]:-} || $arch == amd64 ]] && continue
        prefix=$(gnu_prefix "$arch")
        command -v "$prefix-gcc" >/dev/null || pkgs+=("gcc-$prefix")
        [[ -e /usr/$prefix/lib/crt1.o ]] || pkgs+=("libc6-dev-$arch-cross")
    done
    command -v readelf >/dev/null || pkgs+=(binutils)
    if ((${#pkgs[@]})); then
        echo "installing ${pkgs[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    fi
    for arch in "${arches[@]}"; do
        [[ -n ${given[$arch]:-} ]] && continue
        rustup target list --installed | grep -qx "$(triple "$arch")" || rustup target add "$(triple "$arch")"
    done
fi

declare -A binary=()
step "release builds"
for arch in "${arches[@]}"; do
    if [[ -n ${given[$arch]:-} ]]; then
        binary[$arch]=${given[$arch]}
        echo "$arch: given $arch=${binary[$arch]}"
        continue
    fi
    t=$(triple "$arch")
    start=$SECONDS
    if [[ $arch != amd64 ]]; then
        linker_var=CARGO_TARGET_$(tr 'a-z-' 'A-Z_' <<<"$t")_LINKER
        export "$linker_var=$(gnu_prefix "$arch")-gcc"
    fi
    (cd "$repo" && cargo build --release --locked --quiet --target "$t")
    # Packaged stripped (as Debian does): 0.6 MB less on the board; panics still name the
    # message and the location, only backtraces lose their symbol names.
    mkdir -p "$target_dir/$t/dist-stripped"
    binary[$arch]=$target_dir/$t/dist-stripped/$NAME
    strip_tool="strip"
    [[ $arch == amd64 ]] || strip_tool=$(gnu_prefix "$arch")-strip
    "$strip_tool" -o "${binary[$arch]}" "$target_dir/$t/release/$NAME"
    echo "$arch: $t in $((SECONDS - start)) s"
done

# A build that runs here generates completions and man page for the cross builds.
doc_binary=${binary[amd64]:-}
if [[ -z $doc_binary ]]; then
    (cd "$repo" && cargo build --release --locked --quiet)
    doc_binary=$target_dir/release/$NAME
fi

# glibc_needed FILE: the newest GLIBC_x.y symbol version FILE needs.
glibc_needed() {
    readelf -W -V "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -u -V | tail -n 1
}

# The .deb's control file: what dpkg-deb needs, and Depends from what the binary needs.
control() {
    local arch=$1 glibc=$2 size=$3
    cat <<EOF
Package: $NAME
Version: $version
Architecture: $arch
Maintainer: DuneBugger maintainers <dunebugger@example.invalid>
Installed-Size: $size
Depends: libc6 (>= $glibc), systemd (>= 252), bash
Section: admin
Priority: optional
Homepage: https://github.com/marco-svitol/dunebugger
Description: runs allow-listed update scripts for unprivileged Docker containers
 A root systemd service for Raspberry Pi and Debian hosts: containers drop JSON requests
 into /var/dunebugger/updates/requests/, and the coordinator runs the allow-listed update,
 rollback and health-check scripts of /opt/dunebugger/<component>/ for them, with timeouts
 and cgroup limits, and answers in status/. Takes over from the upstream DuneBugger
 coordinator (/opt/dunebugger/update-coordinator/) when it finds it.
EOF
}

rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The package's layout, for install.sh's manifest().
# shellcheck disable=SC2034
PREFIX=/usr UNITDIR=/usr/lib/systemd/system LIBDIR=/usr/lib

for arch in "${arches[@]}"; do
    bin=${binary[$arch]}
    step "$arch: checks, .deb, .tar.gz"
    check_arch "$arch" "$bin"
    found=$(elf_arch "$bin")
    glibc=$(glibc_needed "$bin")
    [[ -n $glibc ]] || die "$arch: $bin needs no GLIBC symbol version: not a glibc build?"
    echo "$arch: $found, $(stat -c %s "$bin") bytes, needs glibc >= $glibc"

    # The .deb: install.sh lays the tree out, exactly as packaging/files says.
    stage=$work/deb-$arch
    DESTDIR=$stage PREFIX=/usr bash "$repo/install.sh" --for-package --binary "$bin" --doc-binary "$doc_binary" >"$work/layout-$arch.log" 2>&1 ||
        { cat "$work/layout-$arch.log" >&2; die "$arch: install.sh could not lay out the package"; }
    while read -r _ _ dest; do
        [[ -e $stage$dest ]] || die "$arch: the package lacks $dest (packaging/files)"
    done < <(manifest binary; manifest unit; manifest sysusers; manifest tmpfiles; manifest config;
        manifest completion-bash; manifest completion-zsh; manifest completion-fish; manifest man; manifest kit; manifest doc)
    mkdir -p "$stage/DEBIAN"
    control "$arch" "$glibc" "$(du -sk --apparent-size "$stage" | cut -f1)" >"$stage/DEBIAN/control"
    manifest config | while read -r _ _ dest; do echo "$dest"; done >"$stage/DEBIAN/conffiles"
    purge=$(manifest purge | while read -r _ _ dest; do printf '%s ' "$dest"; done)
    install -m 0755 "$repo/packaging/debian/postinst" "$repo/packaging/debian/prerm" "$stage/DEBIAN/"
    sed "s|@PURGE_PATHS@|${purge% }|" "$repo/packaging/debian/postrm" >"$stage/DEBIAN/postrm"
    chmod 0755 "$stage/DEBIAN/postrm"
    (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum >DEBIAN/md5sums)
    find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    deb=$out/${NAME}_${version}_$arch.deb
    dpkg-deb --root-owner-group "-Z$compress" --build "$stage" "$deb" >/dev/null
    [[ $(dpkg-deb -f "$deb" Architecture) == "$arch" ]] || die "$arch: the .deb says another architecture"
    echo "$(basename "$deb"): $(stat -c %s "$deb") bytes"

    # The tarball: the binary next to install.sh and the files it installs, for hosts without
    # dpkg (install.sh uses the binary next to it) and for `install.sh --package FILE.tar.gz`.
    dir=$NAME-$version-$arch
    tree=$work/tar-$arch/$dir
    mkdir -p "$tree"
    install -m 0755 "$bin" "$tree/$NAME"
    install -m 0755 "$repo/install.sh" "$tree/install.sh"
    install -D -m 0644 "$repo/packaging/files" "$tree/packaging/files"
    install -m 0644 "$repo/README.md" "$repo/packaging/copyright" "$tree/"
    while read -r _ src _; do
        if [[ -d $repo/$src ]]; then
            mkdir -p "$tree/$src"
            cp -a "$repo/$src/." "$tree/$src/"
        else
            install -D -m 0644 "$repo/$src" "$tree/$src"
        fi
    done < <(manifest unit; manifest sysusers; manifest tmpfiles; manifest config; manifest scripts)
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
        -C "$work/tar-$arch" -czf "$out/$dir.tar.gz" "$dir"
    echo "$dir.tar.gz: $(stat -c %s "$out/$dir.tar.gz") bytes"
done

(cd "$out" && sha256sum -- *.deb *.tar.gz >SHA256SUMS)
step "done: $out"
cat "$out/SHA256SUMS"
