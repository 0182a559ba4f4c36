#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine that
# has the Rust toolchain, gcc, Python and git. Idempotent; quiet when all is
# there already.
set -euo pipefail
cd "$(dirname "$0")/.."

# install_missing WHAT PACKAGE...: apt-installs the packages not there yet.
install_missing() {
  local what=$1 missing=() p
  shift
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if ((${#missing[@]})); then
    echo "== installing Debian packages$what: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Tap tests: real DNS, HTTP(S) and capture tools.
DEBS=(cmake libpcre2-dev libyang2-tools netconfd yangcli openssh-client
      dnsmasq-base bind9-dnsutils curl openssl tcpdump tshark
      # real servers under the tap (tests/tap: nginx, soak), each run on a free port
      nginx nodejs
      # benchmark only (tools/bench_agent.py): sshd in front of netconfd
      openssh-server
      # service tests (tests/service): systemd-analyze verify/security and
      # systemd-sysusers (no running systemd needed), man -l for the pages
      systemd man-db
      # metrics tests (tests/service/test_metrics.py): a real Prometheus
      # scrapes the agent's and the NCO's --metrics endpoints
      prometheus
      # call-home tests (tests/callhome): a device in a network namespace
      # whose firewall lets only its own outbound connections through
      iproute2 nftables)
install_missing "" "${DEBS[@]}"

VENV=${L45_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating Python venv $VENV"
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check -r tools/requirements.txt

# Debian packages: dpkg-dev for cargo-deb (dpkg-shlibdeps) and
# packaging/build-debs.sh (dpkg-parsechangelog), which installs cargo-deb
# into ~/.cargo/bin itself; their tests (tests/packages): debootstrap for a
# throwaway root, lintian's report.
PACKAGING_DEBS=(dpkg-dev debootstrap lintian)
install_missing "" "${PACKAGING_DEBS[@]}"

# Experiments (tools/experiments, docs/experiments.md): real middleboxes, each
# run by the scripts in its own network namespace (matplotlib comes with
# tools/requirements.txt). Debian 12 has suricata only in bookworm-backports.
EXP_DEBS=(unbound bind9 squid haproxy ethtool)
install_missing " for the experiments" "${EXP_DEBS[@]}"
if ! dpkg -s suricata >/dev/null 2>&1; then
  echo "== installing suricata for the experiments"
  export DEBIAN_FRONTEND=noninteractive
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  apt-get install -y -qq suricata >/dev/null 2>&1 ||
    apt-get install -y -qq -t "$codename-backports" suricata >/dev/null 2>&1 ||
    echo "   suricata not installable here (no $codename-backports source?): the IDS rows of the experiments are skipped"
fi
