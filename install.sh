#!/usr/bin/env bash
# install.sh: installs, upgrades or removes update-coordinator on a Debian 12 or Raspberry Pi OS
# Bookworm host running systemd. Safe to re-run: see `./install.sh --help`.
#
# Every check is a function that takes what it looks at as arguments (check_root UID,
# check_systemd DIR, check_os OS_RELEASE_FILE, check_binary_arch FILE MACHINE USERLAND), and
# `source install.sh` only defines them, so tests call the very code a real install runs.
set -euo pipefail

NAME=update-coordinator
UNIT=dunebugger-update-coordinator.service
GROUP=dunebugger-updates
CONFIG=/etc/dunebugger/update-coordinator.toml
SPOOL=/var/dunebugger/updates
STATE=/var/lib/update-coordinator
SCRIPTS=/opt/dunebugger
# The binary the shipped unit's ExecStart names; another PREFIX rewrites it in the installed copy.
UNIT_EXEC=/usr/local/bin/update-coordinator
# Next to each component's scripts: their checksums as install.sh last installed them, so a
# re-run can tell its own (safe to update) files from an operator's changes (kept).
MANIFEST=.install.sha256
SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# What goes where: the one list install.sh, packaging/release.sh and the .deb follow.
FILES=$SRC_DIR/packaging/files
# The upstream coordinator (dunebugger-install): a bash or Python script here, run by a unit of
# the same name as ours in /etc/systemd/system. install.sh and the .deb take over from it.
UPSTREAM_DIR=/opt/dunebugger/update-coordinator

DRY_RUN=0
FORCE=0
UNINSTALL=0
PURGE=0
OVERWRITE_SCRIPTS=0
READY_TIMEOUT=60
BINARY=""
BINARY_RUNS=0
BINARY_VERSION=""
BLOCKERS=()
declare -A DRY_RUN_DIRS=()
BIN_CHANGED=0
UNIT_CHANGED=0
CHECK_FAILED=0
KEPT_CUSTOM=()
PUT_STATE=""
PACKAGE=""
PASS_ARGS=()
FOR_PACKAGE=0
CONFIGURE_PACKAGE=0
PREVIOUS_VERSION=""
DOC_BINARY=""
GEN_BINARY=""

usage() {
    cat <<EOF
Usage: sudo ./install.sh [--binary FILE | --package FILE.deb | --package FILE.tar.gz] [options]
       sudo ./install.sh --uninstall [--purge]
       DESTDIR=/tmp/pkg [PREFIX=/usr] ./install.sh --binary FILE      (packagers)

Installs update-coordinator and its systemd unit, creates the group $GROUP and the
spool, installs a commented default config (only if there is none) and the component scripts
(only where absent), enables and starts the service, waits until it is ready, runs
\`update-coordinator check\` and prints what to add to docker-compose.yml.

Re-running it is safe, and is how to upgrade: the config and customized scripts are kept, the
binary and the unit are replaced, and the service restarts only if one of them changed
(a restart never interrupts a running update).

A host that runs the upstream coordinator (dunebugger-install: $UPSTREAM_DIR/
update-coordinator.sh or .py under the unit $UNIT) is taken over: the old
service is stopped with everything it started, its unit moved aside, requests waiting in the
spool are answered by the new service, and each old component script is compared with the
new one that replaces it.

Options:
  --binary FILE        install this build; default: the binary next to install.sh (an
                       unpacked release tarball), else \`cargo build --release\` here if cargo
                       is on PATH (under sudo it usually is not: build first, then pass it)
  --package FILE       install a release package: a .deb (installed with apt-get; its postinst
                       runs this same installer) or a .tar.gz (unpacked; its own install.sh
                       installs its binary). packaging/release.sh builds both
  --dry-run            print every action and change nothing; exits 1 if the real run
                       would stop at a check (root, systemd, OS, binary)
  --force              install on an unsupported OS or with a binary whose architecture
                       cannot be confirmed; also purge while scripts still run
  --overwrite-scripts  replace component scripts that were changed locally (each old
                       version is kept as FILE.bak-DATE); by default they are kept
  --timeout SECONDS    how long to wait for the service to report ready (default 60)
  --uninstall          stop and disable the service; remove the binary, the unit, the
                       sysusers/tmpfiles rules, completions and man page. Keeps the config,
                       the spool and the run records
  --purge              --uninstall, and also remove the config (and signing key), the spool
                       and the run records
  -h, --help           this text

Packagers (packaging/release.sh uses these):
  --for-package        with DESTDIR: lay out a package's tree: the component scripts and this
                       installer go to PREFIX/share/update-coordinator/ (the postinst installs
                       the scripts into /opt/dunebugger/), not to /opt/dunebugger/
  --doc-binary FILE    with DESTDIR: a build that runs here (same version), to generate the
                       completions and the man page when --binary is a cross build
  --configure-package  what the .deb's postinst runs (as root, from the package's copy of
                       install.sh): the steps of a host install that are not copying files
  --previous-version V with --configure-package: the version being upgraded from (dpkg's \$2)

Environment:
  PREFIX   where the binary, completions and man page go (default /usr/local): PREFIX/bin,
           PREFIX/share/... The installed unit's ExecStart is pointed at PREFIX/bin.
  DESTDIR  lay the files out under this directory for a package or an image, as any user:
           no systemctl, no group or spool creation, nothing outside DESTDIR. The unit and
           the sysusers/tmpfiles rules then go to DESTDIR/usr/lib/{systemd/system,sysusers.d,
           tmpfiles.d}; the package must run systemd-sysusers, systemd-tmpfiles --create and
           enable the unit (the .deb's postinst does: install.sh --configure-package).

Where things go on the host (the list: $FILES):
  PREFIX/bin/update-coordinator              the binary (the one it replaced: .previous)
  PREFIX/share/{bash-completion,zsh,fish}/   shell completions; PREFIX/share/man/man1/ the man page
  /etc/systemd/system/dunebugger-update-coordinator.service
                                             the unit (for your changes: systemctl edit)
  /usr/local/lib/sysusers.d/update-coordinator.conf
                                             the group dunebugger-updates
  /usr/local/lib/tmpfiles.d/update-coordinator.conf
                                             the spool /var/dunebugger/updates (requests/ 1730,
                                             status/ 1730), re-asserted at every boot; to
                                             change it, copy it to /etc/tmpfiles.d/ and edit
  /etc/dunebugger/update-coordinator.toml    the config: created only if absent
  /opt/dunebugger/NAME/                      component scripts (from component-scripts/NAME/,
                                             or compose-service/ with NAME.conf, and the lib/
                                             files they use): created if absent,
                                             updated if unchanged since install.sh wrote them,
                                             kept if changed locally (see --overwrite-scripts)
  /var/lib/update-coordinator                run records (the unit's StateDirectory=, 0700)

Exit status: 0 done; 1 stopped by a check (before any change) or by a failure (the message
says what to do; re-running is safe); 2 bad usage; 3 installed and running, but
\`update-coordinator check\` reports problems.
EOF
}

say() { printf '%s\n' "$*"; }
step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
# problem LINE...: an error message, one line per argument.
problem() {
    printf 'ERROR: %s\n' "$1" >&2
    shift
    if (($#)); then printf '       %s\n' "$@" >&2; fi
}
die() {
    problem "$@"
    exit 1
}

quote_cmd() {
    local out="" arg
    for arg in "$@"; do
        out+="${out:+ }$(printf '%q' "$arg")"
    done
    printf '%s' "$out"
}

# run COMMAND [ARG...]: shows the command, then runs it (not in a dry run).
run() {
    printf '    $ %s\n' "$(quote_cmd "$@")"
    ((DRY_RUN)) || "$@"
}

sha256() {
    local sum
    sum=$(sha256sum <"$1")
    printf '%s' "${sum%% *}"
}

# gate CHECK [ARG...]: runs a check; a failed one stops the install, or in a dry run is
# remembered so the remaining actions can still be shown.
gate() {
    if "$@"; then
        return 0
    fi
    if ((DRY_RUN)); then
        BLOCKERS+=("$(blocker_name "$1")")
        note "(dry run: the real run would stop here; going on to show the remaining actions)"
        return 0
    fi
    exit 1
}

blocker_name() {
    case $1 in
    check_root) printf 'not root' ;;
    check_systemd) printf 'no systemd' ;;
    check_os) printf 'unsupported OS' ;;
    check_no_deb) printf 'the .deb is installed' ;;
    check_binary_arch) printf 'binary for another architecture' ;;
    check_binary_runs) printf 'binary does not run' ;;
    check_package) printf 'package for another machine' ;;
    check_config) printf 'config rejected' ;;
    no_build) printf 'no build' ;;
    *) printf '%s' "$1" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Checks. Each prints what is wrong and how to fix it, and returns 1.

# check_root UID
check_root() {
    [[ $1 == 0 ]] && return 0
    problem "install.sh must run as root: it creates the group $GROUP, the spool and a systemd unit." \
        "Run: sudo $0 ${ORIG_ARGS:-}" \
        "To preview without root: $0 --dry-run. To lay the files out for a package as any user: DESTDIR=/tmp/pkg $0 --binary FILE."
    return 1
}

# check_systemd DIR: systemd is PID 1 when DIR (/run/systemd/system) exists.
check_systemd() {
    local dir=$1 pid1
    [[ -d $dir ]] && return 0
    pid1=$(cat /proc/1/comm 2>/dev/null || echo unknown)
    problem "systemd is not running as PID 1 here ($dir does not exist; PID 1 is '$pid1')." \
        "install.sh creates the group and the spool with systemd-sysusers and systemd-tmpfiles and runs the service under systemd," \
        "so it needs a host booted with systemd (Raspberry Pi OS or Debian 12 itself), not a container, chroot or WSL without it." \
        "To only lay the files out (a package, an image build): DESTDIR=/path $0 --binary FILE."
    return 1
}

# os_field FILE KEY: the value of KEY in an os-release file, without quotes.
os_field() {
    local line value
    while IFS= read -r line || [[ -n $line ]]; do
        if [[ $line == "$2="* ]]; then
            value=${line#"$2="}
            value=${value#[\"\']}
            value=${value%[\"\']}
            printf '%s' "$value"
            return 0
        fi
    done <"$1"
}

# check_os OS_RELEASE_FILE: Debian 12, Raspberry Pi OS Bookworm (raspbian 12), or a Debian
# derivative (ID_LIKE=debian) of release 12.
check_os() {
    local file=$1 id version like pretty
    if [[ ! -r $file ]]; then
        os_refused "cannot tell which OS this is: $file does not exist."
        return
    fi
    id=$(os_field "$file" ID)
    version=$(os_field "$file" VERSION_ID)
    like=$(os_field "$file" ID_LIKE)
    pretty=$(os_field "$file" PRETTY_NAME)
    if [[ $version == 12 ]] && [[ $id == debian || $id == raspbian || " $like " == *" debian "* ]]; then
        return 0
    fi
    os_refused "unsupported OS: ${pretty:-unknown} (ID=${id:-?}, ID_LIKE=${like:--}, VERSION_ID=${version:-?})." \
        "Supported: Debian 12 (bookworm) and Raspberry Pi OS Bookworm (ID debian or raspbian, or ID_LIKE debian, with VERSION_ID 12)."
}

os_refused() {
    if ((FORCE)); then
        warn "$* --force: going on anyway."
        return 0
    fi
    problem "$@" "--force installs anyway (the unit needs systemd >= 252, systemd-sysusers and systemd-tmpfiles)."
    return 1
}

# ---------------------------------------------------------------------------------------------
# The binary's architecture, read from its ELF header with od: a bare Raspberry Pi OS has
# coreutils, but not necessarily readelf (binutils) or file.

# od_le FILE OFFSET COUNT TYPE: COUNT bytes of FILE from OFFSET as little-endian unsigned
# numbers of od's TYPE (u1 bytes, u4 32-bit words), on one line.
od_le() {
    od -An -v --endian=little -t "$4" -j "$2" -N "$3" -- "$1" 2>/dev/null | tr -s ' \n' '  '
}

# elf_arch FILE: what FILE is built for: x86_64, aarch64, i386, armv6 (runs on a Pi Zero/1),
# armv6t2, armv7, armv8-32, arm (32-bit ARM of unknown level), or machine-N. Fails when FILE
# is not a little-endian ELF file.
elf_arch() {
    local file=$1 machine
    local -a h
    [[ -f $file && -r $file ]] || return 1
    # The header (52 bytes in a 32-bit file, the first 52 of 64 in a 64-bit one): "\x7fELF",
    # EI_CLASS (1 = 32-bit), EI_DATA (1 = little-endian), ..., e_machine at 18, e_shoff (where
    # the section headers are) at 32, e_shentsize at 46 and e_shnum at 48.
    read -r -a h <<<"$(od_le "$file" 0 52 u1)"
    [[ ${#h[@]} == 52 && ${h[*]:0:4} == "127 69 76 70" && ${h[5]} == 1 ]] || return 1
    machine=$((h[18] | h[19] << 8))
    case $machine in
    62) printf 'x86_64' ;;
    183) printf 'aarch64' ;;
    3) printf 'i386' ;;
    40)
        [[ ${h[4]} == 1 ]] || return 1
        case $(arm_cpu_arch "$file" $((h[32] | h[33] << 8 | h[34] << 16 | h[35] << 24)) \
            $((h[46] | h[47] << 8)) $((h[48] | h[49] << 8))) in
        [0-7] | 9) printf 'armv6' ;;
        8) printf 'armv6t2' ;;
        10) printf 'armv7' ;;
        1[4-9] | 2[0-9]) printf 'armv8-32' ;;
        *) printf 'arm' ;;
        esac
        ;;
    *) printf 'machine-%s' "$machine" ;;
    esac
}

# arm_cpu_arch FILE SHOFF SHENTSIZE SHNUM: Tag_CPU_arch (6 = v6, 7 = v6KZ as on a Pi Zero,
# 8 = v6T2, 9 = v6K, 10 = v7, 14 = v8) from the .ARM.attributes section of a 32-bit ARM ELF
# file, or nothing.
arm_cpu_arch() {
    local file=$1 shoff=$2 entsize=$3 count=$4 i attrs
    local -a words
    # The section's contents: "A", a 4-byte length, then the subsection of vendor "aeabi" with
    # the file's attributes (tag 1, a 4-byte length), which GCC and LLVM write in tag order:
    # Tag_CPU_raw_name (4) and Tag_CPU_name (5), NUL-terminated strings, when present, then
    # Tag_CPU_arch (6) and its value (one byte: every value defined is below 128).
    local aeabi='^ *65( [0-9]+){4} 97 101 97 98 105 0 1( [0-9]+){4}( 4( [1-9][0-9]*)* 0)?( 5( [1-9][0-9]*)* 0)? 6 ([0-9]+)'
    ((entsize >= 40 && entsize % 4 == 0 && count > 0 && count < 65536)) || return 0
    # The section headers as 32-bit words: sh_type is the 2nd of each, sh_offset the 5th,
    # sh_size the 6th.
    read -r -a words <<<"$(od_le "$file" "$shoff" $((entsize * count)) u4)"
    ((${#words[@]} == entsize * count / 4)) || return 0
    for ((i = 0; i < ${#words[@]}; i += entsize / 4)); do
        if ((words[i + 1] == 0x70000003)); then # SHT_ARM_ATTRIBUTES
            attrs=$(od_le "$file" "${words[i + 4]}" "${words[i + 5]}" u1)
            [[ $attrs =~ $aeabi ]] && printf '%s' "${BASH_REMATCH[7]}"
            return 0
        fi
    done
}

# rust_target MACHINE USERLAND: the Rust target that builds for this machine.
rust_target() {
    case $1 in
    x86_64 | amd64) printf 'x86_64-unknown-linux-gnu' ;;
    aarch64 | arm64)
        if [[ ${2:-} == armhf ]]; then
            printf 'armv7-unknown-linux-gnueabihf'
        else
            printf 'aarch64-unknown-linux-gnu'
        fi
        ;;
    armv7l | armv8l) printf 'armv7-unknown-linux-gnueabihf' ;;
    armv6l) printf 'arm-unknown-linux-gnueabihf' ;;
    *) printf 'a Linux target for %s' "$1" ;;
    esac
}

# check_binary_arch FILE MACHINE USERLAND: FILE can run on this machine (MACHINE from uname -m,
# USERLAND from dpkg --print-architecture: a 64-bit kernel may run a 32-bit armhf system).
check_binary_arch() {
    local file=$1 machine=$2 userland=${3:-} arch target
    if ! arch=$(elf_arch "$file"); then
        problem "$file is not a Linux executable (no little-endian ELF header): pass the update-coordinator binary itself with --binary."
        return 1
    fi
    target=$(rust_target "$machine" "$userland")
    # What runs here: a 64-bit ARM kernel may run a 32-bit (armhf) system, and a 32-bit ARM
    # CPU runs code for its own level and older ones.
    local fits arm32="armv6 armv6t2 armv7 armv8-32 arm"
    case $machine/$userland in
    x86_64/* | amd64/*) fits=x86_64 ;;
    aarch64/armhf | arm64/armhf | armv8l/*) fits=$arm32 ;;
    aarch64/* | arm64/*) fits=aarch64 ;;
    armv7l/*) fits=${arm32/ armv8-32/} ;;
    armv6l/*) fits=armv6 ;;
    *)
        arch_refused "this machine ($machine) is not supported: update-coordinator is built for x86_64, aarch64, armv7 and armv6 (Raspberry Pi)."
        return
        ;;
    esac
    if [[ " $fits " == *" $arch "* ]]; then
        return 0
    fi
    if [[ $machine == armv6l && $arch == arm ]]; then
        arch_refused "$file is a 32-bit ARM binary whose ARM architecture level cannot be read (no .ARM.attributes), and this is an ARMv6 machine (Raspberry Pi Zero, Zero W or 1): a build for ARMv7 dies here with 'Illegal instruction'." \
            "Use a build for $target, or --force if you know this one is."
    elif [[ $machine == armv6l ]]; then
        arch_refused "$file is built for $arch, but this is an ARMv6 machine (uname -m: armv6l; Raspberry Pi Zero, Zero W or 1): it would die with 'Illegal instruction'." \
            "Build for $target instead (for example on a PC: cross build --release --target $target) and pass target/$target/release/$NAME with --binary."
    elif [[ $machine == aarch64 && $userland == armhf ]]; then
        arch_refused "$file is built for $arch, but this is a 32-bit (armhf) Raspberry Pi OS on a 64-bit kernel: it cannot run here." \
            "Use a build for $target."
    else
        arch_refused "$file is built for $arch, but this machine is $machine${userland:+ ($userland)}: it cannot run here." \
            "Use a build for $target (cargo build --release on such a machine, or cross build --release --target $target on another)."
    fi
}

arch_refused() {
    if ((FORCE)); then
        warn "$* --force: going on anyway."
        return 0
    fi
    problem "$@"
    return 1
}

# check_binary_runs FILE: FILE runs here and is update-coordinator; sets BINARY_VERSION.
check_binary_runs() {
    local out rc=0
    out=$("$1" --version 2>&1) || rc=$?
    if ((rc == 0)) && [[ $out == "$NAME "* ]]; then
        BINARY_VERSION=${out#"$NAME "}
        return 0
    fi
    case $rc in
    0) problem "$1 is not update-coordinator: --version printed '$out'." ;;
    132) problem "$1 died with 'Illegal instruction': it is built for a newer CPU than this one." \
        "On a Raspberry Pi Zero or 1 (armv6l) use a build for arm-unknown-linux-gnueabihf." ;;
    126 | 127) problem "$1 cannot be executed here: $out" \
        "It is probably built for another architecture or C library: use a build for $(rust_target "$(uname -m)" "$(userland_arch)")." ;;
    *) problem "$1 --version failed (exit $rc): $out" ;;
    esac
    return 1
}

# check_config BINARY CONFIG: the build about to be installed accepts the config in effect.
check_config() {
    local out
    out=$("$1" check --config "$2" 2>&1) || true
    if grep -qE 'invalid config file|cannot read config file' <<<"$out"; then
        problem "the build being installed rejects the config $2 (nothing has been changed):" \
            "$(grep -E 'invalid config file|cannot read config file' <<<"$out" | head -n 5 | sed 's/^ *//')" \
            "Fix the file (every setting and its default: $SRC_DIR/packaging/update-coordinator.toml) and re-run."
        return 1
    fi
}

userland_arch() {
    dpkg --print-architecture 2>/dev/null || true
}

deb_installed() {
    command -v dpkg-query >/dev/null 2>&1 || return 1
    # shellcheck disable=SC2016  # a dpkg-query format, not a shell expansion
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$NAME" 2>/dev/null) == installed ]]
}

check_no_deb() {
    deb_installed || return 0
    if ((FORCE)); then
        warn "the $NAME .deb is installed; --force: going on, but this copy and the package's will shadow each other."
        return 0
    fi
    problem "the $NAME Debian package is installed: upgrade it with apt or dpkg instead," \
        "or remove it first (sudo apt remove $NAME) to switch to install.sh."
    return 1
}

# ---------------------------------------------------------------------------------------------
# Laying out files.

# manifest ROLE: the lines of ROLE in packaging/files as "MODE SOURCE DESTINATION", with
# {bindir}, {datadir}, {unitdir} and {libdir} filled in for this layout (set_layout).
manifest() {
    local role mode src dest
    while read -r role mode src dest; do
        [[ $role == "$1" ]] || continue
        dest=${dest//\{bindir\}/$PREFIX/bin}
        dest=${dest//\{datadir\}/$PREFIX/share}
        dest=${dest//\{unitdir\}/$UNITDIR}
        dest=${dest//\{libdir\}/$LIBDIR}
        printf '%s %s %s\n' "$mode" "$src" "$dest"
    done <"$FILES"
}

# manifest_dest ROLE, manifest_src ROLE: of the one line of ROLE (fails if there is none).
manifest_dest() {
    local line
    line=$(manifest "$1" | head -n 1)
    [[ -n $line ]] || { problem "$FILES has no '$1' line"; return 1; }
    printf '%s' "${line##* }"
}
manifest_src() {
    local line
    line=$(manifest "$1" | head -n 1)
    [[ -n $line ]] || { problem "$FILES has no '$1' line"; return 1; }
    line=${line#* }
    printf '%s' "${line%% *}"
}

set_layout() {
    local root=${DESTDIR%/}
    # Without the list, preflight says so (after the root check, which comes before anything).
    [[ -r $FILES ]] || return 0
    # A package's unit and rules go where the distribution's do; a host install's where the
    # administrator's do (so they win over a package's, and uninstall finds them).
    if [[ -n $DESTDIR ]] || ((CONFIGURE_PACKAGE)); then
        UNITDIR=/usr/lib/systemd/system LIBDIR=/usr/lib
    else
        UNITDIR=/etc/systemd/system LIBDIR=/usr/local/lib
    fi
    BIN_DEST=$root$(manifest_dest binary)
    UNIT_DEST=$root$(manifest_dest unit)
    SYSUSERS_DEST=$root$(manifest_dest sysusers)
    TMPFILES_DEST=$root$(manifest_dest tmpfiles)
    CONFIG=$(manifest_dest config)
    CONFIG_DEST=$root$CONFIG
    SCRIPTS=$(manifest_dest scripts)
    SCRIPTS_DEST=$root$SCRIPTS
    COMPLETION_DESTS=(
        "bash:$root$(manifest_dest completion-bash)"
        "zsh:$root$(manifest_dest completion-zsh)"
        "fish:$root$(manifest_dest completion-fish)"
    )
    MAN_DEST=$root$(manifest_dest man)
    local line
    PURGE_PATHS=()
    while read -r line; do
        [[ -n $line ]] && PURGE_PATHS+=("$root${line##* }")
    done < <(manifest purge)
}

# ensure_dir DIR MODE: creates DIR (and its parents) if missing; never changes an existing one.
ensure_dir() {
    [[ -d $1 || -n ${DRY_RUN_DIRS[$1]:-} ]] && return 0
    run install -d -m "$2" "$1"
    ((DRY_RUN)) && DRY_RUN_DIRS[$1]=1
    return 0
}

# put_file SRC DEST MODE: installs SRC as DEST with MODE, atomically (a temp file renamed over
# DEST), unless DEST already has that content and mode. Sets PUT_STATE: new, updated, mode or
# unchanged.
put_file() {
    local src=$1 dest=$2 mode=$3 old="" new="" detail=""
    new=$(sha256 "$src")
    if [[ -e $dest || -L $dest ]]; then
        old=$(sha256 "$dest" 2>/dev/null || echo unreadable)
    fi
    if [[ -z $old ]]; then
        PUT_STATE=new
    elif [[ $old != "$new" ]]; then
        PUT_STATE=updated
        detail=", sha256 ${old:0:12} -> ${new:0:12}"
    elif [[ $(stat -c %a "$dest") != "${mode#0}" ]]; then
        PUT_STATE=mode
        detail=", was $(stat -c %04a "$dest")"
    else
        PUT_STATE=unchanged
        note "= $dest (unchanged)"
        return 0
    fi
    note "+ $dest ($PUT_STATE, mode $mode$detail)"
    ((DRY_RUN)) && return 0
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" -T "$src" "$dest.install-$$"
    mv -f -T "$dest.install-$$" "$dest"
}

# remove_path PATH...: removes files (or, for directories, whole trees) that exist.
remove_path() {
    local path
    for path in "$@"; do
        if [[ -d $path && ! -L $path ]]; then
            run rm -rf --one-file-system -- "$path"
        elif [[ -e $path || -L $path ]]; then
            run rm -f -- "$path"
        fi
    done
}

# remove_empty_dir DIR...: removes directories that are empty.
remove_empty_dir() {
    local dir
    for dir in "$@"; do
        if [[ -d $dir ]] && [[ -z $(ls -A "$dir") ]]; then
            run rmdir -- "$dir"
        fi
    done
}

no_build() {
    local target
    if [[ $(uname -m) == armv6l ]]; then
        armv6_help
        return 1
    fi
    target=$(rust_target "$(uname -m)" "$(userland_arch)")
    problem "nothing to install: no --binary given, and cargo is not on PATH (sudo resets PATH, so your user's cargo is not found)." \
        "Build as your user, then install that build:" \
        "    cargo build --release && sudo $0 --binary target/release/$NAME" \
        "On a Pi without a Rust toolchain, build on a PC for $target" \
        "    (cross build --release --target $target), copy target/$target/release/$NAME over, and pass it with --binary."
    return 1
}

obtain_binary() {
    step "The build to install"
    if [[ -n $BINARY ]]; then
        [[ -f $BINARY ]] || die "--binary $BINARY: no such file."
        [[ -x $BINARY ]] || die "--binary $BINARY: not executable (chmod 755 it)."
        BINARY=$(realpath -- "$BINARY")
    elif [[ -f $SRC_DIR/$NAME && -x $SRC_DIR/$NAME ]]; then
        # An unpacked release tarball: the build is next to install.sh.
        BINARY=$SRC_DIR/$NAME
        note "the build next to install.sh (a release tarball)"
    elif command -v cargo >/dev/null 2>&1; then
        note "no --binary given and cargo is here: building"
        run cargo build --release --locked --manifest-path "$SRC_DIR/Cargo.toml"
        BINARY=${CARGO_TARGET_DIR:-$SRC_DIR/target}/release/$NAME
    else
        gate no_build
        return 0
    fi
    if [[ ! -e $BINARY ]]; then
        note "$BINARY (after the build)"
        return 0
    fi
    note "$BINARY: $(elf_arch "$BINARY" || echo 'not an ELF file'), sha256 $(sha256 "$BINARY" | cut -c1-12)"
    if [[ -z $DESTDIR ]]; then
        gate check_binary_arch "$BINARY" "$(uname -m)" "$(userland_arch)"
        gate check_binary_runs "$BINARY" && [[ -n $BINARY_VERSION ]] && BINARY_RUNS=1
    elif check_binary_runs "$BINARY" 2>/dev/null; then
        # A packager's build may be for another machine: it is only run (for the config check,
        # completions and man page) when it can run here.
        BINARY_RUNS=1
    elif [[ -n $DOC_BINARY ]]; then
        check_binary_runs "$DOC_BINARY" || die "--doc-binary $DOC_BINARY must be a build of update-coordinator that runs here."
        note "it does not run on this machine (a cross build): completions and man page come from --doc-binary $DOC_BINARY ($BINARY_VERSION)"
        GEN_BINARY=$DOC_BINARY
    else
        note "it does not run on this machine (a cross build?): completions, man page and the config check are skipped"
    fi
    if ((BINARY_RUNS)); then
        GEN_BINARY=$BINARY
        note "version $BINARY_VERSION"
        local config=$CONFIG_DEST
        [[ -e $config ]] || config=$SRC_DIR/$(manifest_src config)
        gate check_config "$BINARY" "$config"
    fi
}

install_group_and_spool() {
    step "Group $GROUP (sysusers.d) and spool $SPOOL (tmpfiles.d)"
    if ((CONFIGURE_PACKAGE)); then
        # By name: a file of the same name in /etc/sysusers.d or /etc/tmpfiles.d wins.
        note "the rules are the package's: $SYSUSERS_DEST, $TMPFILES_DEST"
        run systemd-sysusers "$NAME.conf"
        run systemd-tmpfiles --create "$NAME.conf"
        return 0
    fi
    put_file "$SRC_DIR/$(manifest_src sysusers)" "$SYSUSERS_DEST" 0644
    put_file "$SRC_DIR/$(manifest_src tmpfiles)" "$TMPFILES_DEST" 0644
    if [[ -n $DESTDIR ]]; then
        note "DESTDIR: the group and the spool are created on the target by systemd-sysusers and systemd-tmpfiles"
        return 0
    fi
    run systemd-sysusers "$SYSUSERS_DEST"
    run systemd-tmpfiles --create "$TMPFILES_DEST"
    local gid
    gid=$(getent group "$GROUP" | cut -d: -f3 || true)
    note "group $GROUP: gid ${gid:-(created by the real run)}"
}

install_config() {
    step "Configuration $CONFIG"
    if [[ -e $CONFIG_DEST || -L $CONFIG_DEST ]]; then
        note "= $CONFIG_DEST exists: kept as it is"
        note "  (every setting and its default: $SRC_DIR/$(manifest_src config))"
        return 0
    fi
    ensure_dir "$(dirname "$CONFIG_DEST")" 0755
    put_file "$SRC_DIR/$(manifest_src config)" "$CONFIG_DEST" 0644
}

install_component_scripts() {
    step "Component scripts ($SCRIPTS/NAME/: a file is created if absent, never replaced once changed locally)"
    local root name dir conf
    root=$SRC_DIR/$(manifest_src scripts)
    if [[ ! -d $root ]]; then
        note "no $root: nothing to install"
        return 0
    fi
    while IFS=$'\t' read -r name dir conf; do
        if [[ $name == coordinator ]] && ((CONFIGURE_PACKAGE)); then
            note "coordinator (self-update by copying a binary): not installed from a package; the package manager owns $BIN_DEST: upgrade the package instead"
            continue
        fi
        if [[ ! $name =~ ^[a-z0-9_-]{1,64}$ ]]; then
            warn "component-scripts/$name: not a component name (a-z, 0-9, _ and -): skipped"
            continue
        fi
        install_component "$name" "$dir" "$conf"
    done < <(component_sources "$root")
}

# component_sources ROOT: the components ROOT (component-scripts/) holds, sorted, one line each:
# NAME, its directory and its settings file, separated by tabs. A directory is one component,
# all its files installed as they are (settings "-"); a directory of scripts that several
# components share, such as compose-service/ (the Docker Compose services), is one component
# per NAME.conf in it, each with the directory's scripts and NAME.conf as its component.conf.
# lib/ is the code the scripts share (see install_component), not a component.
component_sources() {
    local dir conf shared
    for dir in "$1"/*/; do
        dir=${dir%/}
        [[ -d $dir && $(basename "$dir") != lib ]] || continue
        shared=0
        for conf in "$dir"/*.conf; do
            [[ -f $conf && $(basename "$conf") != component.conf ]] || continue
            printf '%s\t%s\t%s\n' "$(basename "$conf" .conf)" "$dir" "$conf"
            shared=1
        done
        ((shared)) || printf '%s\t%s\t-\n' "$(basename "$dir")" "$dir"
    done | sort
}

# install_component NAME SRC_DIR SETTINGS: installs SRC_DIR's files (and SETTINGS, unless "-",
# as component.conf) into SCRIPTS_DEST/NAME, with each lib/ file they mention.
install_component() {
    local name=$1 src=$2 settings=$3 dest=$SCRIPTS_DEST/$1 file base mode i
    # What goes in: files[i] is installed as names[i].
    local -a files=() names=()
    for file in "$src"/*; do
        [[ -f $file ]] || continue
        [[ $settings != - && $file == *.conf ]] && continue
        files+=("$file")
        names+=("$(basename "$file")")
    done
    if [[ $settings != - ]]; then
        files+=("$settings")
        names+=(component.conf)
    fi
    if ((${#files[@]} == 0)); then
        note "component-scripts/$name is empty: skipped"
        return 0
    fi
    # Each shared file of lib/ goes next to the scripts of every component that mentions it.
    local own=${#files[@]}
    for file in "$SRC_DIR/$(manifest_src scripts)"/lib/*; do
        [[ -f $file ]] || continue
        base=$(basename "$file")
        [[ " ${names[*]} " == *" $base "* ]] && continue
        if grep -qsF -- "$base" "${files[@]:0:own}"; then
            files+=("$file")
            names+=("$base")
        fi
    done
    ensure_dir "$SCRIPTS_DEST" 0755
    ensure_dir "$dest" 0755
    declare -A recorded=()
    local sum entry
    if [[ -f $dest/$MANIFEST ]]; then
        while read -r sum entry; do
            [[ $sum == \#* || -z $entry ]] || recorded[$entry]=$sum
        done <"$dest/$MANIFEST"
    fi
    for i in "${!files[@]}"; do
        file=${files[i]} base=${names[i]}
        case $base in
        update.sh | rollback.sh | health-check.sh) mode=0755 ;;
        *) if [[ -x $file ]]; then mode=0755; else mode=0644; fi ;;
        esac
        place_script "$file" "$dest/$base" "$mode" "${recorded[$base]:-}" && recorded[$base]=$(sha256 "$file")
    done
    if [[ $name == coordinator && $PREFIX/bin/$NAME != "$UNIT_EXEC" && ! -e $dest/coordinator.conf ]]; then
        # The self-update scripts replace the binary at INSTALL_PATH (default /usr/local/bin).
        note "+ $dest/coordinator.conf (new: INSTALL_PATH=$PREFIX/bin/$NAME for the self-update scripts)"
        ((DRY_RUN)) || printf '# Written by install.sh (PREFIX=%s).\nINSTALL_PATH=%s\n' "$PREFIX" "$PREFIX/bin/$NAME" >"$dest/coordinator.conf"
    fi
    ((DRY_RUN)) && return 0
    {
        printf '# %s: sha256 of the files as install.sh last installed them (do not edit).\n' "$MANIFEST"
        for entry in "${!recorded[@]}"; do
            printf '%s %s\n' "${recorded[$entry]}" "$entry"
        done | sort -k2
    } >"$dest/$MANIFEST.new"
    chmod 0644 "$dest/$MANIFEST.new"
    mv -f -T "$dest/$MANIFEST.new" "$dest/$MANIFEST"
}

# place_script SRC DEST MODE RECORDED_SHA256: returns 0 when DEST now is SRC (or will be, in a
# dry run), 1 when a locally changed DEST was kept.
place_script() {
    local src=$1 dest=$2 mode=$3 shipped_sum=$4 current backup
    if [[ ! -e $dest && ! -L $dest ]]; then
        put_file "$src" "$dest" "$mode"
        return 0
    fi
    if [[ -L $dest || ! -f $dest ]]; then
        warn "$dest is not a regular file: kept as it is"
        KEPT_CUSTOM+=("$dest")
        return 1
    fi
    current=$(sha256 "$dest")
    if [[ $current == "$(sha256 "$src")" ]]; then
        note "= $dest (unchanged)"
        return 0
    fi
    if [[ $current == "$shipped_sum" ]]; then
        note "  $dest: as install.sh left it, so it is updated to the new version"
        put_file "$src" "$dest" "$mode"
        return 0
    fi
    if ((OVERWRITE_SCRIPTS)); then
        backup=$dest.bak-$(date +%Y%m%d%H%M%S)
        note "  $dest was changed locally; --overwrite-scripts: replacing it, the old one kept as $backup"
        run cp -p -- "$dest" "$backup"
        put_file "$src" "$dest" "$mode"
        return 0
    fi
    note "! $dest: changed locally, kept (differs from ${src#"$SRC_DIR"/})"
    note "    compare: diff -u $dest $src    replace: --overwrite-scripts"
    KEPT_CUSTOM+=("$dest")
    return 1
}

install_binary() {
    step "Binary $BIN_DEST"
    if [[ -z $BINARY || ! -e $BINARY ]]; then
        note "+ $BIN_DEST (the build)"
        BIN_CHANGED=1
        return 0
    fi
    if [[ -z $DESTDIR && -f $BIN_DEST ]] && ! cmp -s "$BINARY" "$BIN_DEST"; then
        note "was: $("$BIN_DEST" --version 2>/dev/null || echo 'unknown version'); the old binary is kept as $BIN_DEST.previous (what rollback restores)"
        run cp -p -- "$BIN_DEST" "$BIN_DEST.previous"
    fi
    put_file "$BINARY" "$BIN_DEST" 0755
    [[ $PUT_STATE == unchanged ]] || BIN_CHANGED=1
}

install_completions_and_man() {
    step "Shell completions and man page"
    if [[ -z $GEN_BINARY ]]; then
        note "skipped: the binary does not run here"
        return 0
    fi
    local entry shell dest
    for entry in "${COMPLETION_DESTS[@]}"; do
        shell=${entry%%:*}
        dest=${entry#*:}
        if "$GEN_BINARY" completions "$shell" >"$TMP/completion.$shell" 2>/dev/null; then
            put_file "$TMP/completion.$shell" "$dest" 0644
        else
            note "$shell completions: this build cannot generate them: skipped"
        fi
    done
    # One page per subcommand (update-coordinator-submit(1), ...) beside the main page.
    local page
    if "$GEN_BINARY" man --dir "$TMP/man1" >/dev/null 2>&1; then
        for page in "$TMP"/man1/*.1; do
            put_file "$page" "${MAN_DEST%/*}/${page##*/}" 0644
        done
    elif "$GEN_BINARY" man >"$TMP/man" 2>/dev/null; then # an older binary: the main page only
        put_file "$TMP/man" "$MAN_DEST" 0644
    else
        note "man page: this build cannot generate it: skipped"
    fi
}

install_unit() {
    step "Unit $UNIT"
    local exe rendered=$TMP/$UNIT unit
    exe=$(manifest_dest binary)
    unit=$SRC_DIR/$(manifest_src unit)
    if [[ $exe == "$UNIT_EXEC" ]]; then
        cp -- "$unit" "$rendered"
    else
        sed "s|^ExecStart=$UNIT_EXEC |ExecStart=$exe |" "$unit" >"$rendered"
        grep -q "^ExecStart=$exe " "$rendered" ||
            die "cannot point the unit at $exe: systemd/$UNIT has no 'ExecStart=$UNIT_EXEC ...' line to rewrite."
        note "ExecStart rewritten to $exe (PREFIX=$PREFIX)"
    fi
    put_file "$rendered" "$UNIT_DEST" 0644
    [[ $PUT_STATE == unchanged ]] || UNIT_CHANGED=1
}

systemd_here() {
    [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1
}

start_service() {
    step "Service"
    # A package's files were put in place by dpkg: systemd must read the unit again.
    if ((UNIT_CHANGED || CONFIGURE_PACKAGE)); then
        run systemctl daemon-reload
    fi
    run systemctl enable "$UNIT"
    local active=0
    if systemd_here && systemctl is-active --quiet "$UNIT" 2>/dev/null; then
        active=1
    fi
    if ((active)); then
        if ((BIN_CHANGED || UNIT_CHANGED)); then
            note "the binary or the unit changed: restarting (running scripts carry on: KillMode=process)"
            run timeout "$READY_TIMEOUT" systemctl restart "$UNIT" || service_failed "systemctl restart failed"
        else
            note "binary and unit unchanged: the running service is not restarted"
        fi
    else
        ((DRY_RUN)) || systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
        run timeout "$READY_TIMEOUT" systemctl start "$UNIT" || service_failed "systemctl start failed"
    fi
    ((DRY_RUN)) && return 0
    wait_ready
    if [[ $(stat -c '%a %U' "$STATE" 2>/dev/null) != "700 root" ]]; then
        warn "the state directory $STATE should exist, mode 0700, owned by root (the unit's StateDirectory=): $(stat -c '%04a %U' "$STATE" 2>&1)"
    else
        note "state directory $STATE: 0700 root"
    fi
}

wait_ready() {
    local deadline=$((SECONDS + READY_TIMEOUT)) state
    while :; do
        state=$(systemctl is-active "$UNIT" 2>/dev/null || true)
        [[ $state == active ]] && break
        if [[ $state == failed ]] || ((SECONDS >= deadline)); then
            service_failed "not ready after ${READY_TIMEOUT}s (state: $state)"
        fi
        sleep 1
    done
    # Ready once; still up a moment later (not restarting in a loop)?
    sleep 2
    state=$(systemctl is-active "$UNIT" 2>/dev/null || true)
    [[ $state == active ]] || service_failed "reported ready, then went $state"
    note "$UNIT is active: $(systemctl show -p StatusText --value "$UNIT" 2>/dev/null || true)"
}

service_failed() {
    printf '\nERROR: %s did not become ready: %s. Its status and last 50 log lines:\n\n' "$UNIT" "$1" >&2
    systemctl status --no-pager --full "$UNIT" >&2 || true
    printf '\n' >&2
    journalctl -u "$UNIT" -n 50 --no-pager >&2 || true
    die "the service is not running. Fix the problem above, then re-run install.sh (safe to re-run)."
}

run_check() {
    step "update-coordinator check"
    if ((DRY_RUN)); then
        note "\$ $BIN_DEST check"
        return 0
    fi
    local out rc=0
    out=$("$BIN_DEST" check 2>&1) || rc=$?
    printf '%s\n' "$out" | sed 's/^/    /'
    if ((rc != 0)); then
        CHECK_FAILED=1
        warn "update-coordinator check reports problems (above): the service runs, but requests that need them fail until they are fixed. Then: sudo $(command_name) check"
    fi
}

command_name() {
    if [[ $PREFIX == /usr/local || $PREFIX == /usr ]]; then
        printf '%s' "$NAME"
    else
        printf '%s' "$PREFIX/bin/$NAME"
    fi
}

print_next_steps() {
    local gid cmd
    gid=$(getent group "$GROUP" 2>/dev/null | cut -d: -f3 || true)
    cmd=$(command_name)
    step "Next: let the client containers submit requests (docker-compose.yml)"
    local group_add
    group_add=$(printf '%-30s' "group_add: [\"${gid:-GID}\"]")
    cat <<EOF

    services:
      remote:                         # each container that submits requests
        user: "1000:1000"             # not root (docs/security.md); the same uid on every run
        $group_add# the gid of $GROUP on this host
        volumes:
          - $SPOOL:$SPOOL

    The gid is this host's (getent group $GROUP); images do not know the group's name.
    After editing: docker compose up -d

==> Try one request

    sudo $cmd submit --component remote --action health --wait
    journalctl -u ${UNIT%.service} -f          # the service's log
EOF
}

# ---------------------------------------------------------------------------------------------

preflight() {
    step "Checks"
    if [[ -n $DESTDIR ]]; then
        note "DESTDIR=$DESTDIR: laying files out only (no systemctl, no group or spool creation)"
    else
        gate check_root "$(id -u)"
        gate check_systemd /run/systemd/system
        if ((!UNINSTALL)); then
            gate check_os /etc/os-release
        fi
        gate check_no_deb
    fi
    [[ -r $FILES ]] || die "$FILES is missing: run install.sh from a complete checkout, release tarball or package."
    if ((!UNINSTALL)); then
        local file
        for file in "$(manifest_src unit)" "$(manifest_src sysusers)" "$(manifest_src tmpfiles)" "$(manifest_src config)"; do
            [[ -f $SRC_DIR/$file ]] || die "$SRC_DIR/$file is missing: run install.sh from a complete checkout of the repository."
        done
    fi
    if ((${#BLOCKERS[@]} == 0)); then
        note "ok"
    fi
}

do_install() {
    preflight
    obtain_binary
    [[ -n $DESTDIR ]] || takeover_upstream
    install_group_and_spool
    install_config
    if ((FOR_PACKAGE)); then
        install_kit
    else
        install_component_scripts
    fi
    install_binary
    install_completions_and_man
    install_unit
    if [[ -n $DESTDIR ]]; then
        step "Laid out under $DESTDIR"
        if ((FOR_PACKAGE)); then
            note "On the target, the package's postinst must run (packaging/debian/postinst does):"
            note "  bash $(manifest_dest kit) --configure-package --previous-version \"\$2\""
        else
            note "On the target, the package's postinst must run:"
            note "  systemd-sysusers $NAME.conf && systemd-tmpfiles --create $NAME.conf"
            note "  systemctl daemon-reload && systemctl enable --now $UNIT"
        fi
        return 0
    fi
    start_service
    run_check
    report_upstream_scripts
    print_next_steps
}

# What the .deb's postinst runs (`configure`), from the package's copy of install.sh: dpkg has
# put every file of packaging/files in place; the rest is what a host install does.
do_configure_package() {
    step "Checks"
    gate check_root "$(id -u)"
    BINARY=$BIN_DEST
    check_binary_runs "$BINARY" || die "the packaged $BIN_DEST does not run here: a package for another architecture?"
    BINARY_RUNS=1
    note "$NAME $BINARY_VERSION (package files in place: $BIN_DEST, $UNIT_DEST)"
    takeover_upstream
    retire_host_install
    install_group_and_spool
    install_component_scripts
    # A new version (or a first install) restarts a running service; a re-configure of the same
    # version does not. A restart never interrupts a running update (KillMode=process).
    [[ $PREVIOUS_VERSION == "$BINARY_VERSION" ]] || BIN_CHANGED=1
    if ! systemd_here; then
        step "Service"
        run systemctl enable "$UNIT"
        note "systemd is not running here (an image build or a chroot): the service starts at the next boot"
        return 0
    fi
    start_service
    run_check
    report_upstream_scripts
    print_next_steps
}

# install_kit: a package's copy of what its postinst needs to finish the install (the kit lines
# of packaging/files: install.sh, the list itself, the component scripts), and its docs.
install_kit() {
    step "Installer kit and docs (the package's postinst installs the component scripts from here)"
    local mode src dest file rel root=${DESTDIR%/}
    while read -r mode src dest; do
        if [[ -d $SRC_DIR/$src ]]; then
            # A tree: each file keeps whether it is executable.
            while IFS= read -r -d '' file; do
                rel=${file#"$SRC_DIR/$src"/}
                if [[ -x $file ]]; then mode=0755; else mode=0644; fi
                put_file "$file" "$root$dest/$rel" "$mode"
            done < <(find "$SRC_DIR/$src" -type f -print0 | sort -z)
        elif [[ -f $SRC_DIR/$src ]]; then
            put_file "$SRC_DIR/$src" "$root$dest" "$mode"
        else
            die "$SRC_DIR/$src is missing (packaging/files names it): run install.sh from a complete checkout."
        fi
    done < <(manifest kit; manifest doc)
}

# ---------------------------------------------------------------------------------------------
# Taking over from the upstream coordinator.

# is_upstream_unit FILE: FILE is a unit that runs the upstream coordinator's script.
is_upstream_unit() {
    [[ -f $1 ]] && grep -qE "^ExecStart=.*$UPSTREAM_DIR/update-coordinator\.(sh|py)" "$1"
}

# upstream_pids: the processes running the upstream coordinator's script.
upstream_pids() {
    local dir cmdline
    local -a pids=()
    for dir in /proc/[0-9]*; do
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline") || continue
        [[ $cmdline == *"$UPSTREAM_DIR/update-coordinator."[sp][hy]* ]] && pids+=("${dir#/proc/}")
    done
    printf '%s' "${pids[*]}"
}

# takeover_upstream: stops the upstream coordinator (its unit with everything it started, and
# any copy of its script running outside the unit) and moves its unit file aside, so that ours
# (the same name) is the one systemd runs. Requests waiting in the spool stay there: the new
# service answers them at its start-up scan.
takeover_upstream() {
    local old_unit=/etc/systemd/system/$UNIT pids waiting aside
    pids=$(upstream_pids)
    if ! is_upstream_unit "$old_unit" && [[ -z $pids ]]; then
        return 0
    fi
    step "Taking over from the upstream coordinator ($UPSTREAM_DIR)"
    if is_upstream_unit "$old_unit"; then
        note "its unit: $old_unit ($(grep -m1 '^ExecStart=' "$old_unit"))"
        # Stopped while systemd still has the old definition (KillMode=control-group): the
        # script goes together with its inotifywait and anything else it started.
        run systemctl disable --now "$UNIT"
        aside=$UPSTREAM_DIR/$UNIT.replaced
        ensure_dir "$UPSTREAM_DIR" 0755
        note "the old unit is kept, unused, as $aside"
        run mv -f -- "$old_unit" "$aside"
        if [[ -d $old_unit.d ]]; then
            warn "$old_unit.d/ holds drop-ins for the old unit; they apply to the new one too: check them (systemctl cat $UNIT)."
        fi
        run systemctl daemon-reload
    fi
    # (In a dry run the unit was not stopped: its processes are not stragglers.)
    pids=""
    if ((!DRY_RUN)) || ! is_upstream_unit "$old_unit"; then
        pids=$(upstream_pids)
    fi
    if [[ -n $pids ]]; then
        note "still running outside the unit: pids $pids"
        # shellcheck disable=SC2086  # a list of pids
        run kill -TERM $pids || true
        local deadline=$((SECONDS + 10))
        while ((!DRY_RUN)) && [[ -n $(upstream_pids) ]] && ((SECONDS < deadline)); do
            sleep 0.5
        done
        pids=$(upstream_pids)
        # shellcheck disable=SC2086
        [[ -z $pids ]] || ((DRY_RUN)) || run kill -KILL $pids || true
    fi
    if ((!DRY_RUN)); then
        sleep 0.5
        pids=$(upstream_pids)
        [[ -z $pids ]] || die "the upstream coordinator still runs (pids $pids) after SIGKILL: stop it, then re-run."
        note "nothing of the upstream coordinator runs any more"
    fi
    waiting=$(find "$SPOOL/requests" -maxdepth 1 -name '*.json' -type f 2>/dev/null | wc -l)
    note "requests waiting in $SPOOL/requests: $waiting (the new service answers them when it starts)"
    if [[ -d /var/log/dunebugger ]]; then
        note "/var/log/dunebugger is kept (the old coordinator's log); the new service logs to the journal: journalctl -u ${UNIT%.service}"
    fi
}

# report_upstream_scripts: the upstream coordinator ran
# $UPSTREAM_DIR/component-scripts/COMPONENT/ACTION.sh; the new service runs the scripts in
# $SCRIPTS/COMPONENT/. Says, file by file, what replaces each old script.
report_upstream_scripts() {
    local dir=$UPSTREAM_DIR/component-scripts sub name file base new
    [[ -d $dir ]] || return 0
    step "The upstream coordinator's component scripts ($dir/): kept, no longer run"
    note "The new service runs $SCRIPTS/COMPONENT/{update,rollback,health-check}.sh:"
    for sub in "$dir"/*/; do
        [[ -d $sub ]] || continue
        name=$(basename "$sub")
        for file in "$sub"*; do
            [[ -f $file ]] || continue
            base=$(basename "$file")
            # The old coordinator ran ACTION.sh, so its health action ran health.sh.
            [[ $base == health.sh ]] && base=health-check.sh
            new=$SCRIPTS_DEST/$name/$base
            if [[ ! -e $new ]]; then
                note "! $file: nothing replaces it ($new does not exist)"
            elif cmp -s -- "$file" "$new"; then
                note "= $file: the same as $new"
            else
                note "~ $file: replaced by $new (different; compare: diff -u $file $new)"
            fi
        done
    done
    note "Local changes in the old scripts are not carried over: settings belong in $SCRIPTS/COMPONENT/component.conf."
}

# retire_host_install: the .deb replaces an install made by install.sh: that install's unit in
# /etc/systemd/system would shadow the package's, and its binary would still run. Removes what
# install.sh installed there (the binary, the unit, the rules, completions, man page).
retire_host_install() {
    local unit=/etc/systemd/system/$UNIT exec prefix line
    [[ -f $unit ]] || return 0
    exec=$(sed -n 's/^ExecStart=\([^ ]*\) run$/\1/p' "$unit" | head -n 1)
    [[ $exec == */bin/$NAME && $exec != "$BIN_DEST" ]] || return 0
    prefix=${exec%/bin/"$NAME"}
    step "Replacing the install made by install.sh (PREFIX=$prefix) with the package"
    local -a paths=()
    while read -r line; do
        paths+=("${line##* }")
    done < <(PREFIX=$prefix UNITDIR=/etc/systemd/system LIBDIR=/usr/local/lib; for role in binary unit sysusers tmpfiles completion-bash completion-zsh completion-fish man; do manifest "$role"; done)
    remove_path "${paths[@]}" "$exec.previous"
    run systemctl daemon-reload
    BIN_CHANGED=1
}

# ---------------------------------------------------------------------------------------------
# Installing a release package (packaging/release.sh).

install_package() {
    [[ -f $PACKAGE ]] || die "--package $PACKAGE: no such file."
    case $PACKAGE in
    *.deb) install_deb ;;
    *.tar.gz | *.tgz) install_tarball ;;
    *) die "--package $PACKAGE: neither a .deb nor a .tar.gz (packaging/release.sh builds both)." ;;
    esac
}

# check_package ARCH USERLAND MACHINE: a .deb built for ARCH installs on this system (dpkg
# architecture USERLAND, uname -m MACHINE).
check_package() {
    if [[ $3 == armv6l ]]; then
        armv6_help
        return 1
    fi
    [[ $1 == "$2" || $1 == all ]] && return 0
    problem "$PACKAGE is built for $1, but this system is ${2:-not Debian} (uname -m: $3)." \
        "Take the package for ${2:-this system}: update-coordinator_VERSION_${2:-ARCH}.deb (packaging/release.sh builds amd64, arm64 and armhf)."
    return 1
}

install_deb() {
    step "Checks"
    gate check_root "$(id -u)"
    gate check_systemd /run/systemd/system
    gate check_os /etc/os-release
    command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is missing: a .deb installs only on Debian and its derivatives (use the .tar.gz elsewhere)."
    local name arch version
    name=$(dpkg-deb -f "$PACKAGE" Package 2>/dev/null) || die "$PACKAGE is not a Debian package."
    [[ $name == "$NAME" ]] || die "$PACKAGE is the package '$name', not $NAME."
    arch=$(dpkg-deb -f "$PACKAGE" Architecture)
    version=$(dpkg-deb -f "$PACKAGE" Version)
    note "$PACKAGE: $NAME $version for $arch"
    gate check_package "$arch" "$(userland_arch)" "$(uname -m)"
    step "Installing the package with apt-get (its postinst runs the package's install.sh --configure-package)"
    # The config is a conffile: one that exists (changed locally, or from install.sh) is kept,
    # without dpkg's interactive question.
    run apt-get install -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$(realpath -- "$PACKAGE")" ||
        die "apt-get could not install $PACKAGE (its output is above); re-running is safe."
}

install_tarball() {
    local dir
    step "Unpacking $PACKAGE"
    tar -xzf "$PACKAGE" -C "$TMP" || die "$PACKAGE: not a readable .tar.gz."
    dir=$(find "$TMP" -mindepth 2 -maxdepth 2 -name install.sh -printf '%h\n' | head -n 1)
    if [[ -z $dir || ! -x $dir/$NAME ]]; then
        die "$PACKAGE is not an update-coordinator release tarball (no DIR/install.sh and DIR/$NAME in it)."
    fi
    note "running its own install.sh with its build: the files and the binary are of one version"
    local rc=0
    bash "$dir/install.sh" --binary "$dir/$NAME" "${PASS_ARGS[@]}" || rc=$?
    exit "$rc"
}

# armv6_help: how to get a binary for a Raspberry Pi Zero or 1.
armv6_help() {
    problem "this is an ARMv6 board (uname -m: armv6l: Raspberry Pi Zero, Zero W or 1). No release package runs here:" \
        "the armhf packages are built for ARMv7 (Pi 2 and later; Debian's armhf) and die here with 'Illegal instruction'," \
        "and packaging/release.sh cannot build for ARMv6: Debian's cross C library is ARMv7 code (README.md, 'Raspberry Pi Zero and 1')." \
        "Get a build for arm-unknown-linux-gnueabihf (ARMv6 + VFP), then install it with: sudo $0 --binary FILE" \
        "  on the Pi itself: install Rust with rustup (on armv6l it picks arm-unknown-linux-gnueabihf), then cargo build --release" \
        "    in the source tree (slow, and it needs swap); the build is target/release/$NAME;" \
        "  or on a PC with Docker: cargo install cross && cross build --release --target arm-unknown-linux-gnueabihf" \
        "    (its image brings an ARMv6 toolchain), and copy target/arm-unknown-linux-gnueabihf/release/$NAME to the Pi." \
        "install.sh reads the binary's ARM architecture level and refuses one that is not ARMv6."
}

# monitor_pids: the per-run monitors (and so running scripts) still alive.
monitor_pids() {
    local dir cmdline
    local -a pids=()
    for dir in /proc/[0-9]*; do
        cmdline=$(tr '\0' ' ' 2>/dev/null <"$dir/cmdline") || continue
        [[ $cmdline == *"$NAME __monitor "* ]] && pids+=("${dir#/proc/}")
    done
    printf '%s' "${pids[*]}"
}

do_uninstall() {
    preflight
    if [[ -z $DESTDIR ]]; then
        step "Stopping and disabling $UNIT"
        if systemd_here && systemctl cat "$UNIT" >/dev/null 2>&1; then
            run systemctl disable --now "$UNIT"
        else
            note "not installed as a unit"
        fi
        local pids
        pids=$(monitor_pids)
        if [[ -n $pids ]]; then
            warn "update scripts are still running under their monitors (pids $pids); they finish on their own."
            if ((PURGE && !FORCE && !DRY_RUN)); then
                die "not purging the spool and run records while scripts still run: wait for them (ps -p ${pids// /,}), or use --force."
            fi
        fi
    fi
    step "Removing the program"
    local entry
    remove_path "$UNIT_DEST" "$BIN_DEST" "$BIN_DEST.previous" "$SYSUSERS_DEST" "$TMPFILES_DEST" "$MAN_DEST" "${MAN_DEST%.1}"-*.1
    for entry in "${COMPLETION_DESTS[@]}"; do
        remove_path "${entry#*:}"
    done
    if [[ -z $DESTDIR ]] && systemd_here; then
        run systemctl daemon-reload
        ((DRY_RUN)) || systemctl reset-failed "$UNIT" >/dev/null 2>&1 || true
    fi
    local root=${DESTDIR%/}
    if ((PURGE)); then
        step "Purging the config, the spool and the run records"
        # The config, and the purge lines of packaging/files (the .deb's postrm purges the
        # same list): the signing key, `systemctl edit` overrides, the spool, the run records.
        remove_path "$CONFIG_DEST" "${PURGE_PATHS[@]}"
        remove_empty_dir "$root${CONFIG%/*}" "$root${SPOOL%/*}"
    else
        step "Kept"
        note "$CONFIG_DEST (config), $SPOOL (spool), $STATE (run records): --purge removes them"
    fi
    note "Kept: the group $GROUP (its gid may still be named in docker-compose.yml files; groupdel $GROUP removes it)"
    note "Kept: the component scripts in $root$SCRIPTS"
}

main() {
    ORIG_ARGS=$(quote_cmd "$@")
    while (($#)); do
        case $1 in
        --binary) (($# >= 2)) || { usage >&2; exit 2; }; BINARY=$2; shift ;;
        --binary=*) BINARY=${1#--binary=} ;;
        --package) (($# >= 2)) || { usage >&2; exit 2; }; PACKAGE=$2; shift ;;
        --package=*) PACKAGE=${1#--package=} ;;
        --for-package) FOR_PACKAGE=1 ;;
        --configure-package) CONFIGURE_PACKAGE=1 ;;
        --previous-version) (($# >= 2)) || { usage >&2; exit 2; }; PREVIOUS_VERSION=$2; shift ;;
        --doc-binary) (($# >= 2)) || { usage >&2; exit 2; }; DOC_BINARY=$2; shift ;;
        --dry-run) DRY_RUN=1 PASS_ARGS+=("$1") ;;
        --force) FORCE=1 PASS_ARGS+=("$1") ;;
        --overwrite-scripts) OVERWRITE_SCRIPTS=1 PASS_ARGS+=("$1") ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) UNINSTALL=1 PURGE=1 ;;
        --timeout) (($# >= 2)) || { usage >&2; exit 2; }; READY_TIMEOUT=$2 PASS_ARGS+=("$1" "$2"); shift ;;
        --timeout=*) READY_TIMEOUT=${1#--timeout=} PASS_ARGS+=("$1") ;;
        -h | --help) usage; exit 0 ;;
        *) printf 'install.sh: unknown argument %s (see --help)\n' "$1" >&2; exit 2 ;;
        esac
        shift
    done
    [[ $READY_TIMEOUT =~ ^[1-9][0-9]*$ ]] || { printf 'install.sh: --timeout takes a number of seconds\n' >&2; exit 2; }
    if [[ -n $PACKAGE ]] && [[ -n $BINARY || $UNINSTALL == 1 || $FOR_PACKAGE == 1 || $CONFIGURE_PACKAGE == 1 ]]; then
        printf 'install.sh: --package installs a package; it goes with none of --binary, --uninstall, --purge, --for-package, --configure-package\n' >&2
        exit 2
    fi
    if ((FOR_PACKAGE)) && [[ -z ${DESTDIR:-} ]]; then
        printf 'install.sh: --for-package lays out a package tree: set DESTDIR\n' >&2
        exit 2
    fi
    if ((CONFIGURE_PACKAGE)); then
        # The .deb's layout, whatever the environment says.
        [[ -z ${DESTDIR:-} ]] || { printf 'install.sh: --configure-package runs on the host: unset DESTDIR\n' >&2; exit 2; }
        PREFIX=/usr
    fi
    PREFIX=${PREFIX:-/usr/local}
    PREFIX=${PREFIX%/}
    [[ $PREFIX =~ ^/[A-Za-z0-9._/+-]*$ ]] || die "PREFIX must be an absolute path of letters, digits and ._/+- (got '$PREFIX')."
    DESTDIR=${DESTDIR:-}
    if [[ -n $DESTDIR ]]; then
        DESTDIR=$(realpath -m -- "$DESTDIR")
    fi
    set_layout
    umask 022
    TMP=$(mktemp -d)
    trap 'rm -rf "$TMP"' EXIT
    if ((DRY_RUN)); then
        say "DRY RUN: nothing is changed. Each action is listed: \$ a command, + a file written, = one left as it is."
    fi
    if [[ -n $PACKAGE ]]; then
        install_package
    elif ((UNINSTALL)); then
        do_uninstall
    elif ((CONFIGURE_PACKAGE)); then
        do_configure_package
    else
        do_install
    fi
    if ((DRY_RUN)); then
        if ((${#BLOCKERS[@]})); then
            printf '\nDRY RUN: the real run would stop at: %s (see the ERROR lines above).\n' "${BLOCKERS[*]}"
            exit 1
        fi
        printf '\nDRY RUN: done; nothing was changed.\n'
        exit 0
    fi
    if ((${#KEPT_CUSTOM[@]})); then
        printf '\nNote: %d locally changed component file(s) kept (see "!" above).\n' "${#KEPT_CUSTOM[@]}"
    fi
    if ((UNINSTALL)); then
        printf '\nDone: update-coordinator is uninstalled.\n'
    elif [[ -n $DESTDIR ]]; then
        printf '\nDone: files laid out under %s.\n' "$DESTDIR"
    elif ((CHECK_FAILED)); then
        printf '\nInstalled and running, but "update-coordinator check" reports problems (exit 3).\n'
        exit 3
    else
        printf '\nDone: update-coordinator %s is installed and running.\n' "$BINARY_VERSION"
    fi
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    main "$@"
fi
