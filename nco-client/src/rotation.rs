//! The rotation of dissertation figure 5.3 across any number of devices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use l45_cib::{Action, RequestState};

use crate::device_xml;
use crate::nco::{Nco, NcoError};
use crate::netconf::Datastore;

/// Rotate the customization named `from` to a new module on every device:
/// deploy it below the old one with immediate attach everywhere, raise it
/// on the receivers (the ends that undo the customization) first, then on
/// the senders, then revoke the old module. Each step is verified on the
/// devices before the next starts.
#[derive(Debug, Clone)]
pub struct RotationPlan {
    pub from: String,
    pub to_name: String,
    pub to_kind: String,
    pub to_parameters: Vec<(String, String)>,
    pub receivers: Vec<String>,
    pub senders: Vec<String>,
    /// Per-step deadline.
    pub step_timeout: Duration,
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
                attach: l45_cib::Attach::Immediate,
                match_rules: m1.match_rules.clone(),
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
        // 4. Retire the old module everywhere.
        let t0 = tokio::time::Instant::now();
        let step = "revoke the old module";
        let mut ids = Vec::new();
        for (d, m1) in &old {
            ids.push(
                self.cib()
                    .request(d, m1.module_id, Action::Revoke, None)?
                    .id,
            );
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
}
