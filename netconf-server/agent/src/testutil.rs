//! Shared test helpers: the context, parsed trees, `<config>` elements and
//! a module entry that uses every kind of leaf.

use l45_netconf_proto::message::BASE_NS;
use l45_netconf_proto::xml::Element;
use yang3::context::Context;
use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};

pub const L45: &str = l45_yang::L45_NAMESPACE;

pub const RICH: &str = "<module><id>7</id><name>a &amp; &lt;b&gt; \"c\"</name><kind>l45:stream-tag</kind><priority>100</priority><activated>false</activated><attach>immediate</attach><match><protocol>tcp</protocol><source-address>10.0.0.0/8</source-address><destination-port>53</destination-port><process-name>dig</process-name></match><security><key>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</key></security><parameters><stream-tag><tag>TT</tag><interval>0100</interval></stream-tag></parameters></module>";

pub fn ctx() -> &'static Context {
    l45_yang::context().expect("context")
}

pub fn tree(xml: &str) -> DataTree<'static> {
    let mut t = DataTree::parse_string(
        ctx(),
        xml,
        DataFormat::XML,
        DataParserFlags::STRICT | DataParserFlags::NO_STATE,
        DataValidationFlags::NO_STATE,
    )
    .expect("parse");
    t.validate(DataValidationFlags::NO_STATE).expect("valid");
    t
}

pub fn config(body: &str) -> Element {
    let src = format!(
        "<config xmlns=\"{BASE_NS}\" xmlns:nc=\"{BASE_NS}\"><customizations xmlns=\"{L45}\" xmlns:l45=\"{L45}\">{body}</customizations></config>"
    );
    l45_netconf_proto::xml::parse(src.as_bytes()).expect("xml")
}
