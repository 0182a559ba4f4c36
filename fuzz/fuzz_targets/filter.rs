//! `<filter>` of get/get-config: subtree filters turned into XPath, XPath
//! filters' prefixes rewritten (`parse_filter`, `translate_xpath`), then
//! libyang selects with the result on a small datastore (`select`).
#![no_main]

use l45_agent::filter;
use l45_netconf_proto::message::{parse_rpc, Incoming, BASE_NS};
use yang3::data::{DataFormat, DataParserFlags, DataTree, DataValidationFlags};

const DATA: &str = concat!(
    r#"<customizations xmlns="urn:layer45:params:xml:ns:yang:layer45-customization" xmlns:l45="urn:layer45:params:xml:ns:yang:layer45-customization">"#,
    "<module><id>1</id><name>dns</name><kind>l45:dns-front-tag</kind><priority>10</priority>",
    "<match><protocol>udp</protocol><destination-port>53</destination-port></match>",
    "<security><key>AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=</key></security></module>",
    "<module><id>2</id><name>web</name><kind>l45:stream-tag</kind><activated>false</activated>",
    "<parameters><stream-tag><tag>TT</tag></stream-tag></parameters></module>",
    "</customizations>",
    r#"<nacm xmlns="urn:ietf:params:xml:ns:yang:ietf-netconf-acm"><enable-nacm>true</enable-nacm>"#,
    "<groups><group><name>admin</name><user-name>admin</user-name></group></groups></nacm>",
);

thread_local! {
    static TREE: Option<DataTree<'static>> = DataTree::parse_string(
        l45_fuzz::ctx(),
        DATA,
        DataFormat::XML,
        DataParserFlags::STRICT | DataParserFlags::NO_STATE,
        DataValidationFlags::NO_STATE,
    )
    .ok();
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let ctx = l45_fuzz::ctx();
    let Incoming::Rpc(rpc) = parse_rpc(data.to_vec()) else {
        return;
    };
    let scope = rpc.op_child_scope();
    let Ok(f) = filter::parse_filter(ctx, rpc.operation.child(BASE_NS, "filter"), &scope) else {
        return;
    };
    TREE.with(|tree| {
        let tree = tree.as_ref().expect("the fixed datastore parses");
        let _ = filter::select(ctx, tree, &f);
    });
});
