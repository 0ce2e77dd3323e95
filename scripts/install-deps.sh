#!/usr/bin/env bash
# System packages wirebeat's tests, demo and capture scripts use (Debian).
# Installs only what is missing, so a second run costs nothing.
set -euo pipefail

packages=(
  tshark          # independent dissector the tests compare against
  tcpdump         # records the captures in pcaps/
  iputils-ping    # real ICMP traffic
  iproute2        # network namespaces and veth pairs for the captures
  dnsutils        # dig
  dnsmasq-base    # a real DNS and DHCP server
  isc-dhcp-client # dhclient
  sip-tester      # sipp
  softflowd       # a real NetFlow v5/v9/IPFIX exporter (tests, pcaps/netflow)
  nfdump          # nfcapd + nfdump: the independent NetFlow oracle
  libpcap-dev     # python-libpcap builds against it
  gcc             # compiles the optional C accelerator wirebeat._speedups (beat/_speedups.c)
  maven           # fetches the Elasticsearch server archive from Maven Central
  systemd         # systemd-analyze verifies the units in deploy/systemd
  curl
  openssl         # TLS captures (s_server/s_client) and the certificate oracle in the TLS tests; the secure Elasticsearch node's CA (esnode.py --secure)
  redis-server    # the Redis plug-in example's capture
  redis-tools     # redis-cli
  chromium        # headless browser that opens the HTML report in its tests
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# apt's progress goes to a log, not the screen; on failure its tail is shown.
log="${TMPDIR:-/tmp}/wirebeat-apt.log"
echo "installing Debian packages: ${missing[*]} (log: $log)" >&2
{
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture: the answer does not matter here.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
} > "$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
