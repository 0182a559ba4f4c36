//! Rotation (dissertation figure 5.3): replace the customization on every
//! device with a new module on live traffic, each step verified; with an
//! overlap (§5.4) the old module stays below the new one until late
//! traffic in the old format has stopped, or until no socket uses it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use l45_cib::{Action, RequestState};

use super::{Nco, NcoError};
use crate::device_xml;
use crate::netconf::Datastore;

/// How long the old module is kept after the new one is raised above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Revoke it at once (datagrams reordered or delayed past the switch,
    /// in the old format, then find no module that undoes them).
    None,
    /// Keep it until its counters have not moved on any device for this
    /// long: late traffic in the old format is still undone meanwhile.
    Quiet(Duration),
    /// The new module attaches to new sockets only and the old one is
    /// deprecated: live sockets (a long TCP transfer) keep the old one to
    /// their end, and it is revoked once no socket uses it.
    UntilIdle,
}

impl std::str::FromStr for Overlap {
    type Err = String;
    /// `none`, `until-idle`, or a duration such as `2s`, `500ms`, `1m`.
    fn from_str(s: &str) -> Result<Overlap, String> {
        match s {
            "none" | "0" => Ok(Overlap::None),
            "until-idle" => Ok(Overlap::UntilIdle),
            _ => parse_duration(s).map(Overlap::Quiet),
        }
    }
}

/// `500ms`, `2s`, `1.5s`, `3m`, `1h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration (e.g. 500ms, 2s, 1m) or 'until-idle'");
    let (number, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = n * scale;
    if !secs.is_finite() || !(0.0..=7.0 * 86400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Rotate the customization named `from` to a new module on every device:
/// deploy it below the old one (immediate attach, or new sockets only with
/// [`Overlap::UntilIdle`]), raise it on the receivers (the ends that undo
/// the customization) first, then on the senders, keep the old module for
/// the overlap, then revoke it. Each step is verified on the devices
/// before the next starts.
#[derive(Debug, Clone)]
pub struct RotationPlan {
    pub from: String,
    pub to_name: String,
    pub to_kind: String,
    pub to_parameters: Vec<(String, String)>,
    /// A recorded image of `to_kind` (SHA-256) that the new module's deploy
    /// installs first where a device lacks it (`rotate --to-image`).
    pub to_image: Option<String>,
    pub receivers: Vec<String>,
    pub senders: Vec<String>,
    /// Per-step deadline.
    pub step_timeout: Duration,
    pub overlap: Overlap,
    /// Longest the overlap may last; past it the rotation stops with an
    /// error and leaves the old module where it is (below the new one, or
    /// deprecated, so the NCO's service revokes it once idle).
    pub overlap_max: Duration,
}

/// One verified step.
#[derive(Debug, Clone)]
pub struct RotationStep {
    pub name: String,
    pub devices: Vec<String>,
    pub took: Duration,
}

impl Nco {
    async fn drive_step(
        self: &Arc<Self>,
        name: &str,
        ids: Vec<i64>,
        timeout: Duration,
        progress: &mut (impl FnMut(&str, usize, usize) + Send),
    ) -> Result<(), NcoError> {
        let reqs = self
            .drive(&ids, timeout, |done, total| progress(name, done, total))
            .await?;
        let failed: Vec<String> = reqs
            .iter()
            .filter(|r| r.state != RequestState::Confirmed)
            .map(|r| {
                format!(
                    "{} module {}: {}",
                    r.device,
                    r.module_id,
                    r.last_error.clone().unwrap_or_else(|| r.state.to_string())
                )
            })
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(NcoError::Rotation {
                step: name.to_string(),
                message: failed.join("; "),
            })
        }
    }

    /// Reads one module's priority from the device's running configuration.
    async fn device_priority(&self, device: &str, module_id: u32) -> Result<Option<u16>, NcoError> {
        let session = self.session(device).await?;
        let filter = format!(
            "<customizations xmlns=\"{}\"><module><id>{module_id}</id><priority/></module></customizations>",
            device_xml::L45_NS
        );
        let data = session
            .get_config(Datastore::Running, Some(&filter))
            .await
            .map_err(|source| NcoError::Device {
                device: device.to_string(),
                source,
            })?;
        Ok(data
            .split("<priority>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .and_then(|p| p.trim().parse().ok()))
    }

    async fn verify_priorities(
        &self,
        step: &str,
        want: &[(String, u32, u16)],
    ) -> Result<(), NcoError> {
        for (device, id, p) in want {
            let got = self.device_priority(device, *id).await?;
            if got != Some(*p) {
                return Err(NcoError::Rotation {
                    step: step.to_string(),
                    message: format!("{device} module {id} has priority {got:?}, expected {p}"),
                });
            }
        }
        Ok(())
    }

    /// Runs a rotation; `progress(step, done, total)` reports each wave.
    pub async fn rotate(
        self: &Arc<Self>,
        plan: &RotationPlan,
        progress: impl FnMut(&str, usize, usize) + Send,
    ) -> Result<Vec<RotationStep>, NcoError> {
        let started = std::time::Instant::now();
        let result = self.rotate_uncounted(plan, progress).await;
        self.metrics.rotation(result.is_ok(), started.elapsed());
        result
    }

    async fn rotate_uncounted(
        self: &Arc<Self>,
        plan: &RotationPlan,
        mut progress: impl FnMut(&str, usize, usize) + Send,
    ) -> Result<Vec<RotationStep>, NcoError> {
        let mut steps = Vec::new();
        let devices: Vec<String> = plan
            .receivers
            .iter()
            .chain(&plan.senders)
            .cloned()
            .collect();
        if devices.is_empty() {
            return Err(NcoError::Rotation {
                step: "plan".into(),
                message: "no devices given".into(),
            });
        }
        // The old module on every device.
        let mut old = BTreeMap::new();
        for d in &devices {
            let m = self.cib().module_by_name(d, &plan.from)?;
            if m.priority == 0 {
                return Err(NcoError::Rotation {
                    step: "plan".into(),
                    message: format!(
                        "{d}: {} has priority 0; nothing can run before it",
                        plan.from
                    ),
                });
            }
            old.insert(d.clone(), m);
        }
        // 1. Deploy M2 below M1 (higher number), immediate attach.
        let t0 = tokio::time::Instant::now();
        let news: Vec<l45_cib::NewModule> = old
            .iter()
            .map(|(d, m1)| l45_cib::NewModule {
                device: d.clone(),
                name: plan.to_name.clone(),
                kind: plan.to_kind.clone(),
                parameters: plan.to_parameters.clone(),
                priority: m1.priority.saturating_add(10),
                activated: true,
                attach: if plan.overlap == Overlap::UntilIdle {
                    l45_cib::Attach::NewSockets
                } else {
                    l45_cib::Attach::Immediate
                },
                match_rules: m1.match_rules.clone(),
                image: plan.to_image.clone(),
            })
            .collect();
        let built = self.cib().construct_and_deploy(&news, None)?;
        let new_ids: BTreeMap<String, u32> = built
            .iter()
            .map(|(m, _)| (m.device.clone(), m.module_id))
            .collect();
        let step = "deploy new module below the old one";
        self.drive_step(
            step,
            built.iter().map(|(_, r)| r.id).collect(),
            plan.step_timeout,
            &mut progress,
        )
        .await?;
        for d in &devices {
            self.report(d).await?;
        }
        let registered = self.cib().deployments(None)?;
        for (d, id) in &new_ids {
            if !registered
                .iter()
                .any(|x| &x.device == d && x.module_id == *id)
            {
                return Err(NcoError::Rotation {
                    step: step.into(),
                    message: format!("{d} does not report module {id}"),
                });
            }
        }
        steps.push(RotationStep {
            name: step.into(),
            devices: devices.clone(),
            took: t0.elapsed(),
        });
        // 2./3. Raise it above the old one: receivers first, then senders.
        for (step, group) in [
            ("raise on the receivers", &plan.receivers),
            ("raise on the senders", &plan.senders),
        ] {
            if group.is_empty() {
                continue;
            }
            let t0 = tokio::time::Instant::now();
            let mut ids = Vec::new();
            let mut want = Vec::new();
            for d in group {
                let (Some(m1), Some(&id)) = (old.get(d), new_ids.get(d)) else {
                    continue;
                };
                let p = m1.priority - 1;
                ids.push(self.cib().request(d, id, Action::SetPriority(p), None)?.id);
                want.push((d.clone(), id, p));
            }
            self.drive_step(step, ids, plan.step_timeout, &mut progress)
                .await?;
            self.verify_priorities(step, &want).await?;
            steps.push(RotationStep {
                name: step.into(),
                devices: group.clone(),
                took: t0.elapsed(),
            });
        }
        // 4. Keep the old module for the overlap.
        match plan.overlap {
            Overlap::None => {}
            Overlap::Quiet(quiet) => {
                let t0 = tokio::time::Instant::now();
                let step = "keep the old module until its traffic stops";
                self.wait_until_quiet(step, &old, quiet, plan.overlap_max)
                    .await?;
                steps.push(RotationStep {
                    name: step.into(),
                    devices: devices.clone(),
                    took: t0.elapsed(),
                });
            }
            Overlap::UntilIdle => {
                let t0 = tokio::time::Instant::now();
                let step = "deprecate the old module and wait until no socket uses it";
                let mut ids = Vec::new();
                for (d, m1) in &old {
                    ids.push(
                        self.cib()
                            .request(d, m1.module_id, Action::Deprecate, None)?
                            .id,
                    );
                }
                self.drive_step(step, ids, plan.step_timeout, &mut progress)
                    .await?;
                self.wait_until_idle(step, &old, plan.overlap_max).await?;
                steps.push(RotationStep {
                    name: step.into(),
                    devices: devices.clone(),
                    took: t0.elapsed(),
                });
            }
        }
        // 5. Retire the old module everywhere.
        let t0 = tokio::time::Instant::now();
        let step = "revoke the old module";
        let mut ids = Vec::new();
        for (d, m1) in &old {
            // A deprecated module reported idle already has its revoke
            // queued (by the CIB, from the report): carry that one out.
            let open = self
                .cib()
                .requests_of_module(d, m1.module_id)?
                .into_iter()
                .find(|r| r.action == Action::Revoke && r.state.is_open());
            ids.push(match open {
                Some(r) => r.id,
                None => {
                    self.cib()
                        .request(d, m1.module_id, Action::Revoke, None)?
                        .id
                }
            });
        }
        self.drive_step(step, ids, plan.step_timeout, &mut progress)
            .await?;
        for d in &devices {
            self.report(d).await?;
        }
        steps.push(RotationStep {
            name: step.into(),
            devices,
            took: t0.elapsed(),
        });
        Ok(steps)
    }

    /// The old module's traffic (messages and bytes both ways) and socket
    /// count on every device, from fresh reports (`None` for a device that
    /// no longer has it).
    async fn old_counters(
        &self,
        old: &BTreeMap<String, l45_cib::Module>,
    ) -> Result<BTreeMap<String, Option<(u64, u32)>>, NcoError> {
        for d in old.keys() {
            self.report(d).await?;
        }
        let deployments = self.cib().deployments(None)?;
        Ok(old
            .iter()
            .map(|(d, m1)| {
                let found = deployments
                    .iter()
                    .find(|x| &x.device == d && x.module_id == m1.module_id)
                    .map(|x| {
                        (
                            x.messages_sent + x.messages_received + x.bytes_sent + x.bytes_received,
                            x.socket_count,
                        )
                    });
                (d.clone(), found)
            })
            .collect())
    }

    /// Polls the old module's counters until none has moved for `quiet`.
    async fn wait_until_quiet(
        &self,
        step: &str,
        old: &BTreeMap<String, l45_cib::Module>,
        quiet: Duration,
        max: Duration,
    ) -> Result<(), NcoError> {
        let start = tokio::time::Instant::now();
        let poll = (quiet / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut last = self.old_counters(old).await?;
        let mut moved_at = tokio::time::Instant::now();
        loop {
            if moved_at.elapsed() >= quiet {
                return Ok(());
            }
            if start.elapsed() >= max {
                return Err(NcoError::Rotation {
                    step: step.into(),
                    message: format!(
                        "the old module still carried traffic after {max:?}; it stays below the new one"
                    ),
                });
            }
            tokio::time::sleep(poll).await;
            let now = self.old_counters(old).await?;
            if now
                .values()
                .map(|c| c.map(|(t, _)| t))
                .ne(last.values().map(|c| c.map(|(t, _)| t)))
            {
                tracing::debug!(step, "the old module still carries traffic");
                moved_at = tokio::time::Instant::now();
            }
            last = now;
        }
    }

    /// Polls until no socket on any device uses the (deprecated) old module.
    async fn wait_until_idle(
        &self,
        step: &str,
        old: &BTreeMap<String, l45_cib::Module>,
        max: Duration,
    ) -> Result<(), NcoError> {
        let start = tokio::time::Instant::now();
        loop {
            let now = self.old_counters(old).await?;
            let busy: Vec<&str> = now
                .iter()
                .filter(|(_, c)| c.is_some_and(|(_, sockets)| sockets > 0))
                .map(|(d, _)| d.as_str())
                .collect();
            if busy.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= max {
                return Err(NcoError::Rotation {
                    step: step.into(),
                    message: format!(
                        "sockets on {} still use the old module after {max:?}; it stays deprecated \
                         and is revoked once idle",
                        busy.join(", ")
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_forms() {
        assert_eq!("none".parse(), Ok(Overlap::None));
        assert_eq!("until-idle".parse(), Ok(Overlap::UntilIdle));
        assert_eq!("2s".parse(), Ok(Overlap::Quiet(Duration::from_secs(2))));
        assert_eq!(
            "500ms".parse(),
            Ok(Overlap::Quiet(Duration::from_millis(500)))
        );
        assert_eq!(
            "1.5".parse(),
            Ok(Overlap::Quiet(Duration::from_millis(1500)))
        );
        assert_eq!("3m".parse(), Ok(Overlap::Quiet(Duration::from_secs(180))));
        for bad in [
            "", "s", "-1s", "2 weeks", "1e400s", "NaNs", "until", "9999h",
        ] {
            let e = bad.parse::<Overlap>().unwrap_err();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }
}
