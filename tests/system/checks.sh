# shellcheck shell=bash
# The checks of the guest scenarios that drive install.sh (install_flow.sh, takeover.sh).
# Sourced after setting SUITE (each line reads "PASS SUITE/name" or "FAIL SUITE/name: why"),
# REPO (where install.sh is) and LOGS (where the output of each install.sh run is kept).
# $failures counts the FAIL lines.

failures=0
pass() { echo "PASS $SUITE/$1"; }
fail() {
    echo "FAIL $SUITE/$1: $2"
    failures=$((failures + 1))
}

# expect NAME CONDITION...: PASS if the command succeeds, else FAIL naming the condition.
expect() {
    local name=$1
    shift
    if "$@" >/dev/null 2>&1; then pass "$name"; else fail "$name" "not true: $*"; fi
}

# installer STEP ARGS...: runs install.sh, keeps its output in $LOGS/STEP.log; sets RC and OUT.
installer() {
    local step=$1
    shift
    RC=0
    bash "$REPO/install.sh" "$@" >"$LOGS/$step.log" 2>&1 || RC=$?
    OUT=$(cat "$LOGS/$step.log")
}

# expect_rc NAME CODE: the last install.sh exited with CODE (else FAIL with its last lines).
expect_rc() {
    if [[ $RC == "$2" ]]; then
        pass "$1"
    else
        fail "$1" "install.sh exited $RC, expected $2; last lines: $(tail -n 12 <<<"$OUT" | tr '\n' ' ')"
    fi
}

# said TEXT: the last install.sh printed TEXT.
said() { grep -qF -- "$1" <<<"$OUT"; }

# wait_for SECONDS COMMAND...: waits until COMMAND succeeds; returns 1 after SECONDS.
wait_for() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS > end)) && return 1
        sleep 0.5
    done
}
