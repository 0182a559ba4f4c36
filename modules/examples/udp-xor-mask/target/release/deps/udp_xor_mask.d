/work/main/modules/examples/udp-xor-mask/target/release/deps/udp_xor_mask.d: src/lib.rs

/work/main/modules/examples/udp-xor-mask/target/release/deps/libudp_xor_mask.so: src/lib.rs

/work/main/modules/examples/udp-xor-mask/target/release/deps/libudp_xor_mask.rlib: src/lib.rs

src/lib.rs:
