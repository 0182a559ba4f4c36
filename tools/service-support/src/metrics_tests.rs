use super::*;

use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

fn refused(head: &str) -> Vec<u8> {
    match route(head.as_bytes()) {
        Route::Refuse(r) => r.to_bytes(),
        Route::Metrics => panic!("{head:?} was routed to the metrics page"),
    }
}

#[test]
fn get_metrics_is_the_only_route() {
    assert_eq!(route(b"GET /metrics HTTP/1.1\r\nHost: x"), Route::Metrics);
    assert_eq!(route(b"GET /metrics HTTP/1.0"), Route::Metrics);
    assert_eq!(route(b"GET /metrics?x=1 HTTP/1.1"), Route::Metrics);
    assert_eq!(
        refused("GET / HTTP/1.1\r\nHost: x"),
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\nConnection: close\r\n\r\nNot Found\n"
    );
    assert_eq!(
        refused("POST /metrics HTTP/1.1"),
        b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\nAllow: GET\r\nConnection: close\r\n\r\nMethod Not Allowed\n"
    );
    let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\nConnection: close\r\n\r\nBad Request\n";
    for head in [
        "",
        "garbage",
        "GET /metrics",
        "GET /metrics HTTP/2",
        "GET  /metrics HTTP/1.1",
        "GET metrics HTTP/1.1",
        "get /metrics HTTP/1.1",
        "GET /metrics HTTP/1.1 extra",
    ] {
        assert_eq!(refused(head), bad, "{head:?}");
    }
    assert!(matches!(route(b"GET /\xff HTTP/1.1"), Route::Refuse(r) if r.status == 400));
}

#[test]
fn a_registry_renders_in_the_prometheus_text_format() {
    #[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
    struct Op {
        operation: String,
    }
    let mut registry = Registry::with_prefix("l45_test");
    let rpcs = Family::<Op, Counter>::default();
    let seconds = Histogram::new([0.1, 1.0]);
    registry.register("rpcs", "RPCs handled", rpcs.clone());
    registry.register("rpc_duration_seconds", "RPC time", seconds.clone());
    rpcs.get_or_create(&Op {
        operation: "get-config".into(),
    })
    .inc_by(3);
    seconds.observe(0.5);
    let page = Response::metrics(render(&registry)).to_bytes();
    let body = "# HELP l45_test_rpcs_total RPCs handled.\n\
                # TYPE l45_test_rpcs_total counter\n\
                l45_test_rpcs_total{operation=\"get-config\"} 3\n\
                # HELP l45_test_rpc_duration_seconds RPC time.\n\
                # TYPE l45_test_rpc_duration_seconds histogram\n\
                l45_test_rpc_duration_seconds_bucket{le=\"0.1\"} 0\n\
                l45_test_rpc_duration_seconds_bucket{le=\"1\"} 1\n\
                l45_test_rpc_duration_seconds_bucket{le=\"+Inf\"} 1\n\
                l45_test_rpc_duration_seconds_sum 0.5\n\
                l45_test_rpc_duration_seconds_count 1\n";
    let expected = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(String::from_utf8(page).unwrap(), expected);
}

/// A server on a free port with short deadlines, rendering `body`.
async fn server(limits: Limits) -> SocketAddr {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    spawn(listener, Arc::new(|| "up 1\n".to_string()), limits);
    addr
}

/// Sends `request` and reads the whole response.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out
}

fn status(response: &[u8]) -> String {
    String::from_utf8_lossy(response)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_server_answers_and_refuses_byte_for_byte() {
    let addr = server(Limits::default()).await;
    assert_eq!(
        exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n").await,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 5\r\nConnection: close\r\n\r\nup 1\n"
    );
    assert_eq!(
        status(&exchange(addr, b"DELETE /metrics HTTP/1.1\r\n\r\n").await),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(
        status(
            &exchange(
                addr,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
            )
            .await
        ),
        "HTTP/1.1 400 Bad Request"
    );
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 20_000));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        status(&exchange(addr, &huge).await),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    // Still serving after all that.
    assert_eq!(
        status(&exchange(addr, b"GET /metrics HTTP/1.0\r\n\r\n").await),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn a_silent_client_neither_stalls_others_nor_stays() {
    let limits = Limits {
        read_deadline: Duration::from_secs(2),
        max_connections: 2,
        ..Limits::default()
    };
    let addr = server(limits).await;
    // Sends half a request line and nothing more.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    silent.write_all(b"GET /met").await.unwrap();
    let t = Instant::now();
    assert_eq!(
        status(&exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await),
        "HTTP/1.1 200 OK"
    );
    assert!(
        t.elapsed() < Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let mut out = Vec::new();
    silent.read_to_end(&mut out).await.unwrap();
    assert_eq!(status(&out), "HTTP/1.1 408 Request Timeout");
    assert!(t.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_unanswered() {
    let limits = Limits {
        read_deadline: Duration::from_secs(5),
        max_connections: 1,
        ..Limits::default()
    };
    let addr = server(limits).await;
    let mut holder = TcpStream::connect(addr).await.unwrap();
    holder.write_all(b"GET /").await.unwrap();
    // The holder's connection is accepted before the next one (same
    // listener, in order); poll until the slot is taken.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        if out.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second connection kept being served"
        );
    }
    holder.write_all(b"metrics HTTP/1.1\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    holder.read_to_end(&mut out).await.unwrap();
    assert_eq!(status(&out), "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = bind(addr).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!("metrics endpoint: cannot listen on {addr}: Address already in use (os error 98)")
    );
}
