//! `/l45:device`: the device data (the check-in report the NCO reads
//! first on every session).

use yang3::data::DataTree;

use crate::agent::Agent;
use crate::device_info::DeviceInfo;
use crate::time::rfc3339;

impl Agent {
    /// Sets what the device says about itself; the first call wins (the
    /// data is collected once at start-up).
    pub fn set_device_info(&self, info: DeviceInfo) {
        if self.device_info.set(info).is_err() {
            tracing::debug!("device data already set; kept");
        }
    }

    /// The device data, if set.
    pub fn device_info(&self) -> Option<&DeviceInfo> {
        self.device_info.get()
    }

    pub(super) fn add_device_state(
        &self,
        tree: &mut DataTree<'static>,
    ) -> Result<(), yang3::Error> {
        let Some(d) = self.device_info.get() else {
            return Ok(());
        };
        let base = format!("/{}:device", l45_yang::L45_MODULE);
        let mut leaf = |name: &str, value: &str| -> Result<(), yang3::Error> {
            if !value.is_empty() {
                tree.new_path(&format!("{base}/{name}"), Some(value), false)?;
            }
            Ok(())
        };
        leaf("host-name", &d.host_name)?;
        leaf("machine-id", &d.machine_id)?;
        leaf("architecture", &d.architecture)?;
        leaf("os-name", &d.os_name)?;
        leaf("kernel-release", &d.kernel_release)?;
        leaf("agent-version", &d.agent_version)?;
        leaf("host-key-fingerprint", &d.host_key_fingerprint)?;
        leaf("last-start", &rfc3339(self.started))?;
        leaf("tap/backend", &d.tap.backend)?;
        if let Some(v) = d.tap.userspace_abi_version {
            leaf("tap/userspace-abi-version", &v.to_string())?;
        }
        if let Some(r) = &d.tap.kernel_module_release {
            leaf("tap/kernel-module-release", r)?;
        }
        if let Some(target) = self.tap.image_target() {
            leaf("tap/image-target", &target)?;
        }
        for k in &d.tap.kinds {
            tree.new_path(
                &format!("{base}/tap/kind[.='{}:{k}']", l45_yang::L45_MODULE),
                None,
                false,
            )?;
        }
        for c in &d.call_home {
            // Addresses are host:port, never a quote; skip one that is.
            if c.address.contains('\'') {
                continue;
            }
            let p = format!("{base}/call-home[address='{}']", c.address);
            tree.new_path(
                &format!("{p}/connected"),
                Some(&c.connected().to_string()),
                false,
            )?;
            tree.new_path(
                &format!("{p}/connects"),
                Some(&c.connects().to_string()),
                false,
            )?;
            if let Some(e) = c.last_error() {
                tree.new_path(&format!("{p}/last-error"), Some(&e), false)?;
            }
        }
        if let Some(t) = &d.enrollment_token {
            tree.new_path(&format!("{base}/enrollment-token"), Some(t), false)?;
        }
        Ok(())
    }
}
