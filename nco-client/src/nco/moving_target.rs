//! Moving-target rotation (dissertation §6.2.7): `serve` rotates a named
//! customization on a schedule, each time to a new module of the same kind
//! with fresh parameters (a new random tag or code), every step verified as
//! in [`Nco::rotate`]. Generations are named `NAME`, `NAME-r2`, `NAME-r3`…

use std::sync::Arc;
use std::time::Duration;

use l45_cib::ModuleStatus;

use super::{Nco, NcoError, Overlap, RotationPlan, RotationStep};

/// What `serve --rotate NAME --every D` rotates.
#[derive(Debug, Clone)]
pub struct MovingTarget {
    /// The customization's first name (generation 1).
    pub name: String,
    pub every: Duration,
    pub overlap: Overlap,
    pub overlap_max: Duration,
    pub step_timeout: Duration,
}

/// The parameter of `kind` whose value both ends share (a tag or a code)
/// and its length when the module leaves it at its default. A moving
/// target needs one: it is what each rotation changes.
fn fresh_parameter(kind: &str) -> Option<(&'static str, usize)> {
    use l45_modules::{defaults, Kind};
    match Kind::from_name(kind.trim_start_matches("l45:"))? {
        Kind::DnsFrontTag | Kind::DnsMiddleTag | Kind::DnsEndTag => {
            Some(("tag", defaults::DNS_TAG.len()))
        }
        Kind::StreamTag => Some(("tag", defaults::STREAM_TAG.len())),
        Kind::DnsClearanceFilter => Some(("code", 32)),
        Kind::DnsCompression | Kind::RateLimit | Kind::AppIdTag | Kind::External(_) => None,
    }
}

/// The generation number in a module name of the customization `base`.
fn generation(base: &str, name: &str) -> Option<u32> {
    if name == base {
        return Some(1);
    }
    name.strip_prefix(base)?
        .strip_prefix("-r")?
        .parse()
        .ok()
        .filter(|&g| g >= 2)
}

/// Random printable ASCII without space (every kind's tag and code accept
/// it: printable bytes, `[!-~]`).
fn fresh_value(len: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; len];
    super::random(&mut bytes)?;
    Ok(bytes.iter().map(|b| char::from(b'!' + b % 94)).collect())
}

impl Nco {
    /// Rotates the current generation of `mt` to the next one; returns the
    /// new module name and the verified steps.
    pub async fn rotate_moving_target(
        self: &Arc<Self>,
        mt: &MovingTarget,
    ) -> Result<(String, Vec<RotationStep>), NcoError> {
        let plan_error = |message: String| NcoError::Rotation {
            step: "plan".into(),
            message,
        };
        // The newest live generation and the devices that carry it.
        let mut current: Option<(u32, l45_cib::Module)> = None;
        let mut receivers = Vec::new();
        let mut senders = Vec::new();
        let devices = self.cib().devices()?;
        for d in &devices {
            let live = self
                .cib()
                .modules_of_device(&d.name)?
                .into_iter()
                .filter(|m| m.status != ModuleStatus::Revoked)
                .filter_map(|m| generation(&mt.name, &m.name).map(|g| (g, m)))
                .max_by_key(|(g, _)| *g);
            let Some((g, m)) = live else { continue };
            match d.role.as_deref() {
                Some("server") => receivers.push(d.name.clone()),
                Some("client") => senders.push(d.name.clone()),
                _ => {
                    return Err(plan_error(format!(
                        "{} carries {} but has no role (client or server)",
                        d.name, m.name
                    )))
                }
            }
            if current.as_ref().is_none_or(|(cg, _)| g > *cg) {
                current = Some((g, m));
            }
        }
        let Some((g, template)) = current else {
            return Err(plan_error(format!(
                "no device carries the customization {}",
                mt.name
            )));
        };
        let from = template.name.clone();
        let to_name = format!("{}-r{}", mt.name, g + 1);
        let Some((fresh, default_len)) = fresh_parameter(&template.kind) else {
            return Err(plan_error(format!(
                "{} is a {}, which has no tag or code a rotation could change",
                template.name, template.kind
            )));
        };
        let len = template
            .parameters
            .iter()
            .find(|(k, _)| k == fresh)
            .map_or(default_len, |(_, v)| v.len());
        let mut to_parameters: Vec<(String, String)> = template
            .parameters
            .iter()
            .filter(|(k, _)| k != fresh)
            .cloned()
            .collect();
        let value = fresh_value(len).map_err(|e| plan_error(format!("no randomness: {e}")))?;
        to_parameters.push((fresh.to_string(), value));
        let plan = RotationPlan {
            from,
            to_name: to_name.clone(),
            to_kind: template.kind.clone(),
            to_parameters,
            to_image: None,
            receivers,
            senders,
            step_timeout: mt.step_timeout,
            overlap: mt.overlap,
            overlap_max: mt.overlap_max,
        };
        let steps = self.rotate(&plan, |_, _, _| {}).await?;
        Ok((to_name, steps))
    }
}

impl Nco {
    /// Rotates every target on its schedule until `stop` turns true; a
    /// target's next rotation starts `every` after its previous one ended,
    /// so rotations of one customization never overlap each other. A failed
    /// rotation is logged and retried at the next period (each step is
    /// verified, so a failure leaves both modules in a consistent order).
    /// `stop` only prevents new rotations: one in progress runs to its end
    /// (its overlap included), so a stopped service never leaves two
    /// generations of a customization behind. Returns when every target's
    /// task has ended.
    pub async fn run_moving_targets(
        self: Arc<Self>,
        targets: Vec<MovingTarget>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tasks = tokio::task::JoinSet::new();
        for mt in targets {
            let nco = self.clone();
            let mut stop = stop.clone();
            tasks.spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(mt.every) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                    if *stop.borrow() {
                        break;
                    }
                    let t0 = tokio::time::Instant::now();
                    match nco.rotate_moving_target(&mt).await {
                        Ok((to, steps)) => tracing::info!(
                            customization = %mt.name,
                            to = %to,
                            steps = steps.len(),
                            ms = t0.elapsed().as_millis() as u64,
                            "moving-target rotation"
                        ),
                        Err(e) => tracing::error!(
                            customization = %mt.name,
                            error = %e,
                            "moving-target rotation failed"
                        ),
                    }
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations() {
        assert_eq!(generation("dns", "dns"), Some(1));
        assert_eq!(generation("dns", "dns-r2"), Some(2));
        assert_eq!(generation("dns", "dns-r17"), Some(17));
        for other in [
            "dns-r1", "dns-r0", "dns-rx", "dnsx", "dn", "dns-r", "other-r2",
        ] {
            assert_eq!(generation("dns", other), None, "{other}");
        }
    }

    #[test]
    fn kinds_with_a_shared_value() {
        assert_eq!(fresh_parameter("dns-front-tag"), Some(("tag", 8)));
        assert_eq!(fresh_parameter("l45:stream-tag"), Some(("tag", 32)));
        assert_eq!(fresh_parameter("dns-clearance-filter"), Some(("code", 32)));
        assert_eq!(fresh_parameter("dns-compression"), None);
        assert_eq!(fresh_parameter("no-such-kind"), None);
    }

    #[test]
    fn fresh_values_are_printable_and_differ() {
        let a = fresh_value(32).expect("random");
        let b = fresh_value(32).expect("random");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| (b'!'..=b'~').contains(&c)), "{a}");
        assert_ne!(a, b);
    }
}
