//! The module code (`l45-modules`) applies the YANG defaults itself when a
//! parameter leaf is absent; this keeps the two in step.

use l45_modules::defaults;

fn default_of(leaf_path: &str) -> Option<String> {
    let ctx = l45_yang::context().expect("context");
    let node = ctx
        .find_path(leaf_path)
        .unwrap_or_else(|e| panic!("{leaf_path}: {e}"));
    // yang3 crashes on default_value_canonical() without a default.
    if !node.has_default() {
        return None;
    }
    node.default_value_canonical().map(str::to_string)
}

#[test]
fn yang_defaults_match_the_module_code() {
    let base = "/layer45-customization:customizations/module/parameters";
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).expect("ascii");
    let cases = [
        ("dns-tag/tag", text(defaults::DNS_TAG)),
        (
            "dns-compression/recursion-desired",
            defaults::RECURSION_DESIRED.to_string(),
        ),
        ("stream-tag/interval", defaults::STREAM_INTERVAL.to_string()),
        ("stream-tag/tag", text(defaults::STREAM_TAG)),
        ("rate-limit/delay", defaults::RATE_DELAY_MS.to_string()),
        ("app-id-tag/label", text(defaults::APP_ID_LABEL)),
        (
            "app-id-tag/use-thread-name",
            defaults::USE_THREAD_NAME.to_string(),
        ),
    ];
    for (leaf, expected) in cases {
        let path = format!("{base}/{leaf}");
        assert_eq!(
            default_of(&path).as_deref(),
            Some(expected.as_str()),
            "{path}"
        );
    }
    // The clearance code has no default: the module refuses to run without one.
    assert_eq!(default_of(&format!("{base}/clearance/code")), None);
}
