#!/bin/sh
# Install everything pegpar's tests need on a Debian machine, then run the whole suite.
#
#     sh tests/run-all.sh [pytest arguments]
#
# Installs only what is missing, with apt-get (sudo -n when not root): sshd and ssh (the
# end-to-end tests start real sshd nodes on 127.0.0.2, 127.0.0.3, ...), perl (GNU
# parallel), Python with pip, or with venv where the system Python is externally managed
# (then pegpar goes into ./.venv). Installs pegpar with its test extras and runs pytest.
# Never waits for input: CI has no stdin. The exit status is pytest's; 5 (no tests
# collected) is a failure too. PYTHON=... picks another interpreter.
set -eu

cd "$(dirname "$0")/.."
[ -t 0 ] || exec </dev/null  # a closed stdin would be handed to every child of every test

say() { printf 'run-all: %s\n' "$*" >&2; }

PYTHON=${PYTHON:-python3}
packages=
need() { packages="$packages $1"; }

[ -x /usr/sbin/sshd ] || need openssh-server
{ command -v ssh && command -v ssh-keygen; } >/dev/null 2>&1 || need openssh-client
perl -MFile::Temp -MIPC::Open3 -MGetopt::Long -MPOSIX -MThread::Queue -e 1 2>/dev/null || need perl

# Debian's own python3 refuses `pip install` outside a virtualenv (PEP 668)
externally_managed='import os, sys, sysconfig
sys.exit(sys.prefix != sys.base_prefix
         or not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'
venv=no
if [ -x .venv/bin/python ]; then
    venv=yes
elif ! command -v "$PYTHON" >/dev/null 2>&1; then
    need python3
    need python3-venv
    venv=yes
elif "$PYTHON" -c "$externally_managed"; then
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need python3-venv
    venv=yes
else
    "$PYTHON" -m pip --version >/dev/null 2>&1 || need python3-pip
fi

if [ -n "$packages" ]; then
    if [ "$(id -u)" -eq 0 ]; then
        sudo=
    elif command -v sudo >/dev/null 2>&1; then
        sudo="sudo -n"  # fails instead of asking for a password
    else
        say "need root or sudo to install:$packages"
        exit 1
    fi
    say "installing:$packages"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300 update
    # shellcheck disable=SC2086  # one word per package
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=300 \
        install --no-install-recommends $packages
fi

if [ "$venv" = yes ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    PYTHON=.venv/bin/python
fi

export PIP_NO_INPUT=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
"$PYTHON" -m pip install -q -e '.[test]'

# a missing sshd fails the end-to-end tests here instead of skipping them
export PEGPAR_TEST_REQUIRE_SSHD=1
status=0
"$PYTHON" -m pytest -q "$@" || status=$?
if [ "$status" -eq 5 ]; then
    say "pytest collected no tests: failing"
fi
[ "$status" -eq 0 ] || exit "$status"

# The benchmark's quick pass (bench/run.py --quick) runs inside the suite: tests/test_bench.py.
