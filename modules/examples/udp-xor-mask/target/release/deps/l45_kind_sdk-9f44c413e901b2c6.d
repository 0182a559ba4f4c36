/work/main/modules/examples/udp-xor-mask/target/release/deps/l45_kind_sdk-9f44c413e901b2c6.d: /work/main/modules/sdk/src/lib.rs

/work/main/modules/examples/udp-xor-mask/target/release/deps/libl45_kind_sdk-9f44c413e901b2c6.rlib: /work/main/modules/sdk/src/lib.rs

/work/main/modules/examples/udp-xor-mask/target/release/deps/libl45_kind_sdk-9f44c413e901b2c6.rmeta: /work/main/modules/sdk/src/lib.rs

/work/main/modules/sdk/src/lib.rs:
