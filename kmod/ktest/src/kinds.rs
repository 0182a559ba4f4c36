//! Kind modules (module kinds that are not built in) from the VM test:
//! loading and unloading through the agent's kernel backend
//! (`KernelTap::load_kind`/`unload_kind`: finit_module and delete_module),
//! and the registry's refusals over netlink.

use anyhow::{anyhow, bail, Result};
use l45_tap_control::{KindImage, TapControl};
use l45_tap_kernel::nl::{attr, cmd, Attrs, NlError};
use l45_tap_kernel::{images, Client, KernelTap};

/// load-kind PATH KIND: loads the kind module at PATH as the agent does.
pub fn load(args: &[String]) -> Result<()> {
    let path = args.get(1).ok_or_else(|| anyhow!("missing path"))?;
    let kind = args.get(2).ok_or_else(|| anyhow!("missing kind"))?;
    let image = KindImage {
        kind: kind.clone(),
        target: images::image_target()?,
        sha256_hex: String::new(),
        path: path.into(),
    };
    KernelTap::new()?.load_kind(&image)?;
    println!("loaded {kind}");
    Ok(())
}

/// unload-kind KIND: unloads the kind's module as the agent does.
pub fn unload(args: &[String]) -> Result<()> {
    let kind = args.get(1).ok_or_else(|| anyhow!("missing kind"))?;
    KernelTap::new()?.unload_kind(kind)?;
    println!("unloaded {kind}");
    Ok(())
}

/// kind-refusals KIND: REGISTER requests naming kinds the registry refuses
/// each get EINVAL with a message that says why; KIND must be loaded and
/// take a `key` of 1..=255 (udp-xor-test). A CHECK request answers as a
/// register would and registers nothing.
pub fn refusals(args: &[String]) -> Result<()> {
    let kind = args.get(1).ok_or_else(|| anyhow!("missing kind"))?;
    let c = Client::open()?;
    let base = || Attrs::new().u32(attr::ID, 149).u16(attr::KIND, 0);
    let key = |value: &str| {
        Attrs::new().nested(
            1,
            Attrs::new()
                .string(l45_tap_kernel::nl::param::NAME, "key")
                .string(l45_tap_kernel::nl::param::VALUE, value),
        )
    };
    let check = |mut a: Attrs| {
        a.put(attr::CHECK, &[]);
        a
    };
    // A check of good parameters is accepted and leaves no module 149.
    let good = check(
        base()
            .string(attr::KIND_NAME, kind)
            .nested(attr::PARAMS, key("90")),
    );
    c.genl()
        .request(cmd::REGISTER, 0, good.as_bytes())
        .map_err(|e| anyhow!("a check of good parameters was refused: {e}"))?;
    if c.report()?.iter().any(|s| s.id == 149) {
        bail!("a check registered module 149");
    }
    println!("a check of good parameters: accepted, nothing registered");
    let cases = [
        (
            "a check of parameters the kind's parser refuses",
            check(
                base()
                    .string(attr::KIND_NAME, kind)
                    .nested(attr::PARAMS, key("300")),
            ),
            "key must be a number from 1 to 255",
        ),
        ("kind 0 without a name", base(), "KIND_NAME"),
        (
            "a kind that is not loaded",
            base().string(attr::KIND_NAME, "not-loaded"),
            "kind not loaded",
        ),
        (
            "parameters the kind's parser refuses",
            base().string(attr::KIND_NAME, kind).nested(
                attr::PARAMS,
                Attrs::new().nested(
                    1,
                    Attrs::new()
                        .string(l45_tap_kernel::nl::param::NAME, "key")
                        .string(l45_tap_kernel::nl::param::VALUE, "300"),
                ),
            ),
            "key must be a number from 1 to 255",
        ),
    ];
    for (what, attrs, expected) in cases {
        match c.genl().request(cmd::REGISTER, 0, attrs.as_bytes()) {
            Err(NlError::Kernel { errno, message })
                if errno == libc::EINVAL
                    && (message.contains(expected) || expected == "KIND_NAME") =>
            {
                println!("{what}: refused ({message})");
            }
            other => bail!("{what}: expected EINVAL mentioning {expected:?}, got {other:?}"),
        }
    }
    Ok(())
}
