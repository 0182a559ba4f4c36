//! Config-false data added to `get` replies: the tap's module statistics
//! and sockets ([`tap`]), RFC 6022 monitoring ([`monitoring`]) and the RFC
//! 8525 YANG library with the hello's capabilities ([`library`]), the
//! device data ([`device`]), the installed module images ([`images`]).

mod device;
pub(crate) mod entry_xml;
mod images;
mod library;
mod monitoring;
pub(crate) mod tap;

use yang3::data::DataTree;

use crate::agent::Agent;

impl Agent {
    /// Adds every kind of state data to `tree`.
    pub(crate) fn add_state(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        self.add_tap_state(tree)?;
        self.add_monitoring(tree)?;
        self.add_device_state(tree)?;
        self.add_image_state(tree)?;
        self.add_streams(tree)?;
        self.add_yang_library(tree)
    }

    /// Adds the module list's state only (module state, sockets).
    pub(crate) fn add_module_state(
        &self,
        tree: &mut DataTree<'static>,
    ) -> Result<(), yang3::Error> {
        self.add_tap_state(tree)
    }
}
