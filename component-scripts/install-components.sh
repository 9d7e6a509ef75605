#!/bin/bash
# install-components.sh [--prefix DIR] [COMPONENT...]: installs the component scripts from this
# directory into DIR/COMPONENT (default DIR /opt/dunebugger; default components core,
# scheduler, remote), in the layout the coordinator expects:
#
#   DIR/COMPONENT/update.sh, rollback.sh, health-check.sh   0755
#   DIR/COMPONENT/common.sh and the library it uses          0644 (compose.sh or service.sh)
#   DIR/COMPONENT/component.conf                              0644, only when not there yet
#
# Each component directory is self-contained: the shared library (lib/*.sh here) is copied
# into it, because the coordinator runs scripts only from inside their component directory.
# The Docker Compose services (remote, scheduler) share one set of scripts: compose-service/
# holds them, and each service's settings as NAME.conf.
# Run as root, the files are owned by root (the coordinator refuses scripts others could
# change); run as another user (tests, staging), they are owned by that user. Re-running
# replaces the scripts and libraries and keeps each component.conf.
#
# Exit codes: 0 installed; 2 bad arguments (unknown component, missing --prefix value).
set -euo pipefail

here=$(dirname -- "$(readlink -f -- "$0")")
prefix=/opt/dunebugger
components=()
while [ "$#" -gt 0 ]; do
    case $1 in
    --prefix)
        [ "$#" -ge 2 ] || { echo "usage: $0 [--prefix DIR] [COMPONENT...]" >&2; exit 2; }
        prefix=$2
        shift 2
        ;;
    -h | --help)
        sed -n '2,18s/^# \{0,1\}//p' "$0"
        exit 0
        ;;
    *)
        components+=("$1")
        shift
        ;;
    esac
done
if [ "${#components[@]}" -eq 0 ]; then
    components=(core scheduler remote)
fi

owner=()
if [ "$(id -u)" -eq 0 ]; then
    owner=(-o root -g root)
fi

for component in "${components[@]}"; do
    # Its scripts and settings: COMPONENT/update.sh ... and COMPONENT/component.conf, or, for
    # the Docker Compose services, which share their scripts, compose-service/update.sh ...
    # and compose-service/COMPONENT.conf.
    src=$here/$component
    settings=$src/component.conf
    if [[ ! -f $src/update.sh && -f $here/compose-service/$component.conf ]]; then
        src=$here/compose-service
        settings=$src/$component.conf
    fi
    if [[ $component == */* || ! -f $src/update.sh || ! -f $settings ]]; then
        echo "$0: no component '$component' in $here" >&2
        exit 2
    fi
    dest=$prefix/$component
    install -d -m 0755 "${owner[@]}" "$dest"
    # The libraries the scripts source: each lib/ file they name (common.sh, and the compose.sh
    # or service.sh they load), as install.sh decides it.
    libs=()
    for lib in "$here"/lib/*.sh; do
        if grep -qsF -- "$(basename -- "$lib")" "$src"/*.sh; then
            libs+=("$(basename -- "$lib")")
        fi
    done
    for lib in "${libs[@]}"; do
        install -m 0644 "${owner[@]}" "$here/lib/$lib" "$dest/$lib"
    done
    for script in update.sh rollback.sh health-check.sh; do
        install -m 0755 "${owner[@]}" "$src/$script" "$dest/$script"
    done
    if [ -e "$dest/component.conf" ]; then
        echo "$dest: scripts and ${libs[*]} installed; kept the existing component.conf"
    else
        install -m 0644 "${owner[@]}" "$settings" "$dest/component.conf"
        echo "$dest: scripts, ${libs[*]} and component.conf installed"
    fi
done
