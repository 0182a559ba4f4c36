#!/bin/sh
# The dissertation's overhead experiments with the kernel tap, inside the VM
# (tools/experiments/kernel_overhead.py boots it: L45_TESTS=0
# L45_VM_TESTS=kmod/vm/experiments.sh kmod/vm-test.sh, so /init runs this
# file instead of tests.sh, on the benchmark kernel).
#   figure 3.3: dig -f with L45_BENCH_QUERIES names (one batch) to dnsmasq;
#   figure 3.4: busybox wget of an L45_BENCH_BYTES random file from busybox
#               httpd, checked by SHA-256.
# Configurations as in the dissertation: unloaded (no module), tapped (the
# tap with a pass-through module on both ends: a delay-0 rate limit), tagged
# (a 32-byte dns-front-tag on the queries; a 32-byte stream-tag every 1000
# bytes on the HTTP stream), interleaved, the order reversed every other
# round, L45_BENCH_ROUNDS rounds. Everything runs on the VM's loopback.
# Prints "BENCH WORKLOAD CONFIG ROUND s=SECONDS CHECK=N" (guest wall time,
# read with busybox adjtimex: microseconds) and "EXP ..." lines for what
# went wrong.
KT=/bin/l45-ktest
DNS_PORT=5360
HTTP_PORT=8060

# until_true CMD...: polls a condition that has no event, 10 s.
until_true() {
  i=0
  while ! "$@" >/dev/null 2>&1; do
    i=$((i+1)); [ $i -lt 500 ] || { echo "EXP timed out: $*"; return 1; }
    usleep 20000
  done
}
# now_us: the wall clock in microseconds (busybox has no date +%N).
now_us() { adjtimex | awk '/time.tv_sec/ { s = $2 } /time.tv_usec/ { u = $2 } END { printf "%d%06d\n", s, u }'; }
# seconds CMD...: runs CMD (output in /tmp/exp.out), prints its wall time
# in seconds, or "fail".
seconds() {
  t0=$(now_us)
  if "$@" > /tmp/exp.out 2> /tmp/exp.err; then
    t1=$(now_us)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", (b - a) / 1e6 }'
  else
    echo fail; tail -3 /tmp/exp.err | sed 's/^/EXP /' >&2
  fi
}

set_cfg() {
  case $1 in
    unloaded) [ ! -d /sys/module/l45 ] || rmmod l45; return ;;
  esac
  [ -d /sys/module/l45 ] || insmod /l45.ko
  for i in 91 92 93 94 95 96 97 98; do $KT revoke $i 2>/dev/null || true; done
  case $1 in
    tapped)
      $KT reg 91 rate-limit --proto udp --dport $DNS_PORT delay=0
      $KT reg 92 rate-limit --proto udp --sport $DNS_PORT --immediate delay=0
      $KT reg 93 rate-limit --proto tcp --dport $HTTP_PORT delay=0
      $KT reg 94 rate-limit --proto tcp --sport $HTTP_PORT --immediate delay=0 ;;
    tagged)
      $KT reg 95 dns-front-tag --proto udp --dport $DNS_PORT
      $KT reg 96 dns-front-tag --proto udp --sport $DNS_PORT --immediate
      $KT reg 97 stream-tag --proto tcp --dport $HTTP_PORT interval=1000
      $KT reg 98 stream-tag --proto tcp --sport $HTTP_PORT --immediate interval=1000 ;;
  esac
}

queries=${L45_BENCH_QUERIES:-1000}
bytes=${L45_BENCH_BYTES:-16000000}
rounds=${L45_BENCH_ROUNDS:-5}
i=0; : > /tmp/names
while [ $i -lt "$queries" ]; do echo "q$i.example.test A +tries=1 +time=2" >> /tmp/names; i=$((i+1)); done
mkdir -p /tmp/www; head -c "$bytes" /dev/urandom > /tmp/www/blob
want=$(sha256sum /tmp/www/blob | cut -d' ' -f1)

dnsmasq -k --port=$DNS_PORT --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
  --address=/example.test/1.2.3.4 --user=root --cache-size=0 --pid-file=/tmp/dnsmasq.pid --conf-file=/dev/null \
  > /tmp/dnsmasq.log 2>&1 &
httpd -f -p 127.0.0.1:$HTTP_PORT -h /tmp/www > /tmp/httpd.log 2>&1 &
until_true sh -c "dig @127.0.0.1 -p $DNS_PORT example.test +short +tries=1 +time=1 | grep -q 1.2.3.4"
until_true wget -q -O /dev/null http://127.0.0.1:$HTTP_PORT/blob
echo "EXP queries=$queries bytes=$bytes rounds=$rounds"

for rep in $(seq 1 "$rounds"); do
  order="unloaded tapped tagged"
  [ $((rep % 2)) = 0 ] && order="tagged tapped unloaded"
  for cfg in $order; do
    set_cfg $cfg
    # fresh dnsmasq state is not needed: --cache-size=0, every name differs per query
    s=$(seconds dig @127.0.0.1 -p $DNS_PORT -f /tmp/names)
    answered=$(grep -c '^q[0-9]*\.example\.test\..*1\.2\.3\.4' /tmp/exp.out)
    echo "BENCH dig $cfg $rep s=$s answered=$answered"
    rm -f /tmp/got
    s=$(seconds wget -q -O /tmp/got http://127.0.0.1:$HTTP_PORT/blob)
    got=$(sha256sum /tmp/got 2>/dev/null | cut -d' ' -f1)
    echo "BENCH http $cfg $rep s=$s intact=$([ "$got" = "$want" ] && echo 1 || echo 0)"
    # the modules did their work: their counters after the round
    [ $cfg = unloaded ] || for i in 91 92 93 94 95 96 97 98; do
      $KT stats $i 2>/dev/null | sed "s/^/EXP stats $cfg $rep /"
    done
  done
done
set_cfg unloaded
