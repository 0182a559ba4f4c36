#!/bin/sh
# The dissertation's lifecycle and security experiments with the kernel
# tap, inside the VM (tools/experiments/kernel_lifecycle.py boots it:
# L45_TESTS=0 L45_VM_TESTS=kmod/vm/experiments-lifecycle.sh
# kmod/vm-test.sh, so /init runs this file instead of tests.sh, on the
# benchmark kernel under qemu -icount). One boot, in this order:
#   figure 3.5: L45_LIFE_CHALLENGES challenge-response rounds through the
#               agent (kernel backend): l45-ktest netconf-challenge, each a
#               whole NETCONF session over ssh; then one under a wrong key;
#   figure 5.5: a dns-timeline flow (one query every L45_LIFE_INTERVAL_MS)
#               to dnsmasq; a dns-front-tag module attached immediately to
#               dnsmasq's socket, later revoked;
#   figure 5.6: a TCP download with a 100 ms-per-send rate limit on the
#               server, deactivated, then activated;
#   figure 5.7: a live TCP flow (H1) when the modules are deprecated, and
#               a new flow (H2) after: H1 stays customized, H2 does not;
#   figures 4.5/4.6: HTTPS (openssl s_server -WWW / s_client) of a
#               L45_LIFE_TLS_BYTES file, unloaded, tapped and stream-tagged
#               (every 1000 bytes, the client's tap buffering what it
#               receives until a tag is whole), L45_LIFE_TLS_ROUNDS rounds.
# Sizes: the L45_LIFE_* variables below (kernel_lifecycle.py sets them in
# the first lines of the copy it boots: vm-test.sh puts only its own
# variables on the kernel command line); defaults are its --quick sizes.
# Output lines: "LIFE <part> ..." (parsed by kernel_lifecycle.py), "EXP
# ..." for what went wrong. Times are guest wall time in microseconds
# (busybox adjtimex).
KT=/bin/l45-ktest
NS=urn:layer45:params:xml:ns:yang:layer45-customization
KEY=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
KEYB64=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=   # the same key in base64 (YANG binary)
AGENT_PORT=8840
DNS_PORT=5370
TCP_PORT=7030
TLS_PORT=7040
DEP_PORT=7031

# until_true CMD...: polls a condition that has no event, 20 s.
until_true() {
  i=0
  while ! "$@" >/dev/null 2>&1; do
    i=$((i+1)); [ $i -lt 1000 ] || { echo "EXP timed out: $*"; return 1; }
    usleep 20000
  done
}
now_us() { adjtimex | awk '/time.tv_sec/ { s = $2 } /time.tv_usec/ { u = $2 } END { printf "%d%06d\n", s, u }'; }
# mark TEXT: an event on the experiment's timeline
mark() { echo "LIFE event t_us=$(now_us) $*"; }
field() { $KT stats "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
# chains: the sockets' module chains (l45-ktest sockets), one LIFE line each
chains() { $KT sockets | sed "s/^/LIFE sockets $1 /"; }
# sleep_ms N: guest time passes (under -icount with sleep=off an idle guest
# does not hold the host up)
sleep_ms() { usleep $(($1 * 1000)); }

challenges=${L45_LIFE_CHALLENGES:-20}
interval=${L45_LIFE_INTERVAL_MS:-500}
phase=${L45_LIFE_PHASE_MS:-8000}
act_bytes=${L45_LIFE_ACT_BYTES:-1000000}
tcp_bytes=${L45_LIFE_TCP_BYTES:-20000000}
tls_bytes=${L45_LIFE_TLS_BYTES:-4000000}
tls_rounds=${L45_LIFE_TLS_ROUNDS:-3}
echo "LIFE sizes challenges=$challenges interval_ms=$interval phase_ms=$phase act_bytes=$act_bytes tcp_bytes=$tcp_bytes tls_bytes=$tls_bytes tls_rounds=$tls_rounds"
insmod /l45.ko || echo "EXP insmod failed"

# ---- figure 3.5: challenge-response through the agent
mkfifo /tmp/agent.out
l45-agent --listen 127.0.0.1:$AGENT_PORT --state-dir /tmp/agent --authorized-keys admin:/root/key.pub \
  --tap kernel < /dev/null > /tmp/agent.out 2>/tmp/agent.log &
ap=$!
exec 4</tmp/agent.out; read -r l <&4
$KT netconf $AGENT_PORT /root/key \
  "<edit-config><target><running/></target><config><customizations xmlns=\"$NS\" xmlns:l45=\"$NS\"><module><id>141</id><name>m141</name><kind>l45:rate-limit</kind><match><protocol>udp</protocol><destination-port>5371</destination-port></match><security><key>$KEYB64</key></security><parameters><rate-limit><delay>0</delay></rate-limit></parameters></module></customizations></config></edit-config>" \
  > /tmp/edit.out 2>&1 || { echo "EXP the module for the challenge was not configured:"; sed 's/^/EXP /' /tmp/edit.out; }
r=0
while [ $r -lt "$challenges" ]; do
  r=$((r+1))
  t0=$(now_us)
  if $KT netconf-challenge $AGENT_PORT /root/key 141 $KEY > /tmp/ch.out 2>&1; then ok=1; else ok=0; fi
  t1=$(now_us)
  grep -q 'challenge through the agent ok' /tmp/ch.out || ok=0
  echo "LIFE challenge $r us=$((t1 - t0)) passed=$ok"
  [ $ok = 1 ] || sed 's/^/EXP challenge: /' /tmp/ch.out | tail -3
done
# the device does not hold the key the NCO uses: the check must fail
t0=$(now_us)
if $KT netconf-challenge $AGENT_PORT /root/key 141 ff$(echo $KEY | cut -c3-) > /tmp/ch.out 2>&1; then ok=1; else ok=0; fi
t1=$(now_us)
echo "LIFE wrongkey us=$((t1 - t0)) passed=$ok error=$(grep -c '<rpc-error' /tmp/ch.out)"
kill $ap; wait $ap 2>/dev/null; exec 4<&-
$KT revoke 141 2>/dev/null

# ---- figure 5.5: immediate attach
dnsmasq -k --port=$DNS_PORT --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --address=/example.test/1.2.3.4 --user=root --cache-size=0 --pid-file=/tmp/dnsmasq.pid --conf-file=/dev/null \
  > /tmp/dnsmasq.log 2>&1 &
dp=$!
until_true sh -c "dig @127.0.0.1 -p $DNS_PORT example.test +short +tries=1 +time=1 | grep -q 1.2.3.4"
rm -f /tmp/stop.tl
$KT dns-timeline $DNS_PORT "$interval" "$interval" --until /tmp/stop.tl > /tmp/tl.out 2> /tmp/tl.err &
tp=$!
until_true grep -q first /tmp/tl.out
mark "dig flow started, no module"
sleep_ms "$phase"
# dnsmasq's socket is live: attach=immediate puts the module on it at its
# next call; the client has no module, so its untagged queries are dropped
$KT reg 151 dns-front-tag --proto udp --sport $DNS_PORT --immediate
mark "front-tag module registered on the server side, attach immediate"
sleep_ms "$phase"
chains attached
echo "LIFE stats attach $($KT stats 151)"
$KT revoke 151
mark "module revoked"
sleep_ms "$phase"
touch /tmp/stop.tl; wait $tp || echo "EXP dns-timeline: $(tail -2 /tmp/tl.err)"
grep '^query' /tmp/tl.out | sed 's/^/LIFE attach /'
kill $dp; wait $dp 2>/dev/null

# transfer NAME BYTES: a tcp-get of BYTES from the server on TCP_PORT (in
# the background; its output in /tmp/get.NAME)
transfer() {
  rm -f /tmp/get.$1 /tmp/get.$1.rc
  ( $KT tcp-get $TCP_PORT "$2" > /tmp/get.$1 2>&1; echo $? > /tmp/get.$1.rc ) &
  getp=$!
}
# finished NAME: waits for transfer NAME (the last one started); one LIFE line with its result
finished() {
  wait $getp
  us=$(sed -n 's/.*us=\([0-9]*\).*/\1/p' /tmp/get.$1)
  echo "LIFE flow $1 rc=$(cat /tmp/get.$1.rc) us=${us:-0} ended_us=$(now_us)"
  [ "$(cat /tmp/get.$1.rc)" = 0 ] || sed 's/^/EXP /' /tmp/get.$1 | tail -2
}
serve() { # serve N: the server for N connections of act_bytes (pattern data, checked by tcp-get)
  rm -f /tmp/serve.out; $KT tcp-serve $TCP_PORT "$act_bytes" "$1" > /tmp/serve.out 2>&1 &
  spid=$!
  until_true grep -q listening /tmp/serve.out
}

# ---- figure 5.6: activation. As in the dissertation, a rate limit of
# 100 ms per send on the server's end, registered deactivated: the first
# download (act_bytes, tcp-serve writes 16 KiB per send) is not delayed;
# after ACTIVATE the same download is, one send per 100 ms.
$KT reg 161 rate-limit --proto tcp --sport $TCP_PORT --inactive delay=100
serve 2
mark "rate-limit module registered, deactivated"
transfer inactive "$act_bytes"; finished inactive
echo "LIFE stats deactivated 161 $($KT stats 161)"
$KT activate 161 1
mark "module activated"
transfer active "$act_bytes"; finished active
echo "LIFE stats activated 161 $($KT stats 161)"
$KT revoke 161
wait $spid || echo "EXP tcp-serve: $(tail -2 /tmp/serve.out)"

# ---- figure 5.7: deprecation. H1 is a connection made while the
# modules are current (the tap matches a TCP socket's chain at
# connect/accept), idle until both flows go; the modules are deprecated;
# H2 is a connection made after. Both then carry tcp_bytes at once. Each
# end's chain is its own: if H1 lost a module or H2 got one on one end
# only, the tags would corrupt the transfer (both are checked).
# hold_flow NAME FD: the connection (l45-ktest hold-stream; its listener
# closed at once, so the next flow can listen on the same port), idle until
# go_flow NAME FD.
hold_flow() {
  rm -f /tmp/hs.$1.in /tmp/hs.$1.out /tmp/hs.$1.rc; mkfifo /tmp/hs.$1.in
  ( $KT hold-stream $DEP_PORT "$tcp_bytes" --close-listener < /tmp/hs.$1.in > /tmp/hs.$1.out 2>&1
    echo $? > /tmp/hs.$1.rc ) &
  eval "exec $2>/tmp/hs.$1.in"
  until_true grep -q holding /tmp/hs.$1.out
}
go_flow() { eval "echo go >&$2; exec $2>&-"; }
flow_done() {
  until_true test -s /tmp/hs.$1.rc
  us=$(sed -n 's/.*us=\([0-9]*\).*/\1/p' /tmp/hs.$1.out)
  echo "LIFE flow $1 rc=$(cat /tmp/hs.$1.rc) us=${us:-0} ended_us=$(now_us)"
  [ "$(cat /tmp/hs.$1.rc)" = 0 ] || sed 's/^/EXP /' /tmp/hs.$1.out | tail -2
}
$KT reg 163 stream-tag --proto tcp --sport $DEP_PORT interval=1000
$KT reg 164 stream-tag --proto tcp --dport $DEP_PORT interval=1000
mark "modules registered"
hold_flow h1 5
mark "H1 connected"
$KT deprecate 163 1; $KT deprecate 164 1
mark "modules deprecated"
hold_flow h2 6
mark "H2 connected"
chains deprecated
go_flow h1 5; go_flow h2 6
flow_done h1
flow_done h2
echo "LIFE stats deprecated 163 $($KT stats 163)"
echo "LIFE stats deprecated 164 $($KT stats 164)"
$KT revoke 163; $KT revoke 164

# ---- figures 4.5/4.6 in reduced size: HTTPS through the stream tag
export OPENSSL_CONF=/dev/null
mkdir -p /tmp/www; head -c "$tls_bytes" /dev/urandom > /tmp/www/blob
want=$(sha256sum /tmp/www/blob | cut -d' ' -f1)
tls_cfg() {
  case $1 in
    unloaded) [ ! -d /sys/module/l45 ] || rmmod l45; return ;;
  esac
  [ -d /sys/module/l45 ] || insmod /l45.ko
  for i in 171 172 173 174; do $KT revoke $i 2>/dev/null; done
  case $1 in
    tapped)
      $KT reg 171 rate-limit --proto tcp --sport $TLS_PORT delay=0
      $KT reg 172 rate-limit --proto tcp --dport $TLS_PORT delay=0 ;;
    tagged)
      $KT reg 173 stream-tag --proto tcp --sport $TLS_PORT interval=1000
      $KT reg 174 stream-tag --proto tcp --dport $TLS_PORT interval=1000 ;;
  esac
}
tls_get() {
  ( cd /tmp/www && exec openssl s_server -accept $TLS_PORT -cert /root/tls.crt -key /root/tls.key \
      -WWW -naccept 1 -quiet > /tmp/tls.srv 2>&1 ) &
  srv=$!
  until_true sh -c "netstat -ltn | grep -q ':$TLS_PORT '"
  t0=$(now_us)
  printf 'GET /blob HTTP/1.0\r\n\r\n' | openssl s_client -connect 127.0.0.1:$TLS_PORT -quiet \
    > /tmp/tls.out 2> /tmp/tls.err
  t1=$(now_us)
  wait $srv
  got=$(tail -c "$tls_bytes" /tmp/tls.out | sha256sum | cut -d' ' -f1)
  echo "LIFE https $1 $2 us=$((t1 - t0)) intact=$([ "$got" = "$want" ] && echo 1 || echo 0)"
  [ "$got" = "$want" ] || sed 's/^/EXP tls: /' /tmp/tls.err | tail -3
}
rep=0
while [ $rep -lt "$tls_rounds" ]; do
  rep=$((rep+1))
  order="unloaded tapped tagged"
  [ $((rep % 2)) = 0 ] && order="tagged tapped unloaded"
  for cfg in $order; do
    tls_cfg $cfg; tls_get $cfg $rep
    # the tags were on the wire: the modules' counters after the run
    [ $cfg != tagged ] || for i in 173 174; do echo "LIFE stats https $i $($KT stats $i)"; done
  done
done
tls_cfg unloaded
echo "LIFE done"
