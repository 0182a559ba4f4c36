/work/main/modules/examples/udp-xor-mask/target/release/deps/l45_modules-7912c1298a5a4c12.d: /work/main/modules/src/lib.rs /work/main/modules/src/abi.rs /work/main/modules/src/appid.rs /work/main/modules/src/dns.rs /work/main/modules/src/rate.rs /work/main/modules/src/security.rs /work/main/modules/src/stream.rs

/work/main/modules/examples/udp-xor-mask/target/release/deps/libl45_modules-7912c1298a5a4c12.rlib: /work/main/modules/src/lib.rs /work/main/modules/src/abi.rs /work/main/modules/src/appid.rs /work/main/modules/src/dns.rs /work/main/modules/src/rate.rs /work/main/modules/src/security.rs /work/main/modules/src/stream.rs

/work/main/modules/examples/udp-xor-mask/target/release/deps/libl45_modules-7912c1298a5a4c12.rmeta: /work/main/modules/src/lib.rs /work/main/modules/src/abi.rs /work/main/modules/src/appid.rs /work/main/modules/src/dns.rs /work/main/modules/src/rate.rs /work/main/modules/src/security.rs /work/main/modules/src/stream.rs

/work/main/modules/src/lib.rs:
/work/main/modules/src/abi.rs:
/work/main/modules/src/appid.rs:
/work/main/modules/src/dns.rs:
/work/main/modules/src/rate.rs:
/work/main/modules/src/security.rs:
/work/main/modules/src/stream.rs:
