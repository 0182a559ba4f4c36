//! Output: aligned tables for people, JSON with `--json`, and the shapes
//! several commands print (requests). Times are RFC 3339 (`super::time`).

use l45_cib::{Request, Timestamp};

use super::time::rfc3339;
use crate::json::Json;

/// Prints `json` with `--json`, else a table of `headers` and `rows()`.
pub fn emit(
    json: bool,
    value: impl FnOnce() -> Json,
    headers: &[&str],
    rows: impl FnOnce() -> Vec<Vec<String>>,
) {
    if json {
        println!("{}", value());
    } else {
        table(headers, rows());
    }
}

/// A table with upper-case headers, columns padded to their widest cell.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for r in rows {
        line(r);
    }
}

/// A time as a JSON string.
pub fn json_time(t: Timestamp) -> Json {
    Json::Str(rfc3339(t))
}

/// An optional time as a JSON string or `null`.
pub fn json_opt_time(t: Option<Timestamp>) -> Json {
    t.map(json_time).unwrap_or(Json::Null)
}

/// An optional string as JSON or `null`.
pub fn json_opt_str(s: Option<&str>) -> Json {
    s.map(Json::str).unwrap_or(Json::Null)
}

/// A table cell for an optional value: the value, or `-`.
pub fn cell<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// A table cell for an optional time: RFC 3339, or `-`.
pub fn time_cell(t: Option<Timestamp>) -> String {
    cell(t.map(rfc3339))
}

/// Requests (queued or carried out) as a table or JSON.
pub fn print_requests(json: bool, rs: &[Request]) {
    emit(
        json,
        || {
            Json::arr(rs.iter().map(|r| {
                Json::obj([
                    ("request", Json::num(r.id)),
                    ("device", Json::str(&r.device)),
                    ("module", Json::num(r.module_id)),
                    ("action", Json::str(&r.action.to_string())),
                    ("state", Json::str(r.state.as_str())),
                    ("attempts", Json::num(r.attempts)),
                    ("not_before", json_time(r.not_before)),
                    ("created_at", json_time(r.created_at)),
                    ("finished_at", json_opt_time(r.finished_at)),
                    ("error", json_opt_str(r.last_error.as_deref())),
                ])
            }))
        },
        &[
            "request",
            "device",
            "module",
            "action",
            "state",
            "attempts",
            "not before",
            "error",
        ],
        || {
            rs.iter()
                .map(|r| {
                    vec![
                        r.id.to_string(),
                        r.device.clone(),
                        r.module_id.to_string(),
                        r.action.to_string(),
                        r.state.to_string(),
                        r.attempts.to_string(),
                        rfc3339(r.not_before),
                        r.last_error.clone().unwrap_or_default(),
                    ]
                })
                .collect()
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_and_json_times() {
        assert_eq!(cell(None::<u32>), "-");
        assert_eq!(cell(Some(7)), "7");
        assert_eq!(time_cell(None), "-");
        assert_eq!(time_cell(Some(Timestamp(0))), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            json_opt_time(Some(Timestamp(1_796_495_400_250))).to_string(),
            "\"2026-12-05T18:30:00.250Z\""
        );
        assert_eq!(json_opt_time(None).to_string(), "null");
    }
}
