//! The subscription RPCs: RFC 5277 `create-subscription`, RFC 8639
//! `establish-subscription`, `modify-subscription`, `delete-subscription`,
//! `kill-subscription` (with RFC 8641's datastore parameters), and the
//! streams' state data (`/netconf/streams`, `/sn:streams`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use l45_netconf_proto::message::{Rpc, NOTIFICATION_NS};
use l45_netconf_proto::xml::{Element, NsDecl};
use l45_netconf_proto::{ErrorTag, ErrorType, RpcError};
use yang3::data::DataTree;

use super::push::{on_change_selection, PushSub, Spec, Trigger};
use super::stream::StreamSub;
use super::{notification_message, Kind, Refusal, NETCONF_STREAM, SN_MODULE, SN_NS, YP_NS};
use crate::agent::Agent;
use crate::error::OpError;
use crate::filter::{self, Filter};
use crate::ops::{After, Reply};
use crate::sessions::SessionInfo;
use crate::time::{parse_date_and_time, rfc3339};

const DATASTORES_NS: &str = "urn:ietf:params:xml:ns:yang:ietf-datastores";

/// An RFC 8639 error: `tag` with the identity as error-app-tag (RFC 8640
/// section 5).
fn sn_error(tag: ErrorTag, identity: &str, message: impl Into<String>) -> OpError {
    OpError::Wire(vec![RpcError::new(ErrorType::Application, tag)
        .app_tag(identity)
        .message(message)])
}

fn bad_element(element: &str, message: impl Into<String>) -> OpError {
    OpError::Wire(vec![RpcError::new(
        ErrorType::Protocol,
        ErrorTag::BadElement,
    )
    .message(message)
    .info("bad-element", element)])
}

fn time_param(op: &Element, ns: &str, name: &'static str) -> Result<Option<SystemTime>, OpError> {
    op.child(ns, name)
        .map(|el| {
            parse_date_and_time(el.trimmed_text()).ok_or_else(|| OpError::InvalidValue {
                message: format!("{name} is not a date-and-time: {}", el.trimmed_text()),
                element: Some(name),
                path: None,
            })
        })
        .transpose()
}

fn refusal(r: Refusal) -> OpError {
    match r {
        Refusal::AlreadySubscribed => OpError::Failed(
            "this session already has a subscription (RFC 5277 allows one per session)".into(),
        ),
        Refusal::Mixed => OpError::Failed(
            "create-subscription and establish-subscription do not share a session (RFC 8639 1.3)"
                .into(),
        ),
    }
}

/// A filter given as an XPath string (`*-xpath-filter`), prefixes
/// resolved in the element's scope.
fn xpath_filter(agent: &Agent, el: &Element, scope: &[NsDecl]) -> Result<Filter, OpError> {
    let scope = el.scope_for_children(scope);
    Ok(Filter::XPaths(vec![filter::translate_xpath(
        agent.ctx,
        el.trimmed_text(),
        &scope,
    )?]))
}

/// A datastore identity (`ds:operational`) in the element's scope.
fn datastore_identity(el: &Element, scope: &[NsDecl]) -> Option<(String, String)> {
    let scope = el.scope_for_children(scope);
    let text = el.trimmed_text();
    let (prefix, name) = match text.split_once(':') {
        Some((p, n)) => (Some(p), n),
        None => (None, text),
    };
    let ns = scope
        .iter()
        .rev()
        .find(|(p, _)| p.as_deref() == prefix)
        .map(|(_, ns)| ns.to_string())
        // JSON-style module-name prefix
        .or_else(|| (prefix == Some("ietf-datastores")).then(|| DATASTORES_NS.to_string()))?;
    Some((ns, name.to_string()))
}

/// The datastore parameters of establish- and modify-subscription.
fn push_spec(
    agent: &Agent,
    op: &Element,
    scope: &[NsDecl],
    stop: Option<SystemTime>,
) -> Result<Spec, OpError> {
    let filter = if let Some(el) = op.child(YP_NS, "datastore-xpath-filter") {
        xpath_filter(agent, el, scope)?
    } else if let Some(el) = op.child(YP_NS, "datastore-subtree-filter") {
        filter::subtree_filter(agent.ctx, el, scope)
    } else if op.child(YP_NS, "selection-filter-ref").is_some() {
        return Err(sn_error(
            ErrorTag::InvalidValue,
            "ietf-subscribed-notifications:filter-unsupported",
            "no configured selection filters exist",
        ));
    } else {
        Filter::All
    };
    let trigger = if let Some(p) = op.child(YP_NS, "periodic") {
        let period = p
            .child(YP_NS, "period")
            .and_then(|e| e.trimmed_text().parse::<u32>().ok())
            .filter(|cs| *cs > 0)
            .ok_or_else(|| {
                sn_error(
                    ErrorTag::InvalidValue,
                    "ietf-yang-push:period-unsupported",
                    "period must be a positive number of centiseconds",
                )
            })?;
        Trigger::Periodic {
            period: Duration::from_millis(u64::from(period) * 10),
            anchor: time_param(p, YP_NS, "anchor-time")?,
        }
    } else if let Some(c) = op.child(YP_NS, "on-change") {
        let dampening = match c.child(YP_NS, "dampening-period") {
            Some(e) => e
                .trimmed_text()
                .parse::<u32>()
                .map_err(|_| OpError::InvalidValue {
                    message: "dampening-period must be centiseconds".into(),
                    element: Some("dampening-period"),
                    path: None,
                })?,
            None => 0,
        };
        if c.child(YP_NS, "excluded-change").is_some() {
            return Err(sn_error(
                ErrorTag::InvalidValue,
                "ietf-yang-push:cant-exclude",
                "excluded-change is not supported",
            ));
        }
        if on_change_selection(&filter).is_none() {
            return Err(sn_error(
                ErrorTag::InvalidValue,
                "ietf-yang-push:on-change-unsupported",
                "on-change covers the module list's state and the socket list only",
            ));
        }
        Trigger::OnChange {
            dampening: Duration::from_millis(u64::from(dampening) * 10),
            sync_on_start: c
                .child(YP_NS, "sync-on-start")
                .is_none_or(|e| e.trimmed_text() != "false"),
        }
    } else {
        return Err(OpError::MissingParameter {
            element: "periodic",
            message: "a datastore subscription needs periodic or on-change".into(),
        });
    };
    Ok(Spec {
        filter,
        trigger,
        stop,
        resync: 0,
    })
}

impl Agent {
    /// RFC 5277 `create-subscription`.
    pub(crate) fn op_create_subscription(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        if let Some(stream) = op.child(NOTIFICATION_NS, "stream") {
            if stream.trimmed_text() != NETCONF_STREAM {
                return Err(OpError::InvalidValue {
                    message: format!("no stream {}", stream.trimmed_text()),
                    element: Some("stream"),
                    path: None,
                });
            }
        }
        // RFC 5277's schema puts <filter> in its own namespace; clients
        // (ncclient) also send the base namespace's.
        let filter = filter::parse_filter(
            self.ctx,
            op.child(NOTIFICATION_NS, "filter")
                .or_else(|| op.child(l45_netconf_proto::BASE_NS, "filter")),
            &rpc.op_child_scope(),
        )?;
        let start = time_param(op, NOTIFICATION_NS, "startTime")?;
        let stop = time_param(op, NOTIFICATION_NS, "stopTime")?;
        let now = SystemTime::now();
        match (start, stop) {
            (Some(start), _) if start > now => {
                return Err(bad_element("startTime", "startTime is in the future"))
            }
            (None, Some(_)) => {
                return Err(OpError::MissingParameter {
                    element: "startTime",
                    message: "stopTime needs a startTime".into(),
                })
            }
            (Some(start), Some(stop)) if stop < start => {
                return Err(bad_element(
                    "stopTime",
                    "stopTime is earlier than startTime",
                ))
            }
            _ => {}
        }
        self.start_stream(s, Kind::Rfc5277, filter, start, stop)?;
        Ok(("<ok/>".into(), After::Subscribe))
    }

    fn start_stream(
        self: &Arc<Self>,
        s: &SessionInfo,
        kind: Kind,
        filter: Filter,
        start: Option<SystemTime>,
        stop: Option<SystemTime>,
    ) -> Result<u32, OpError> {
        let outbox = self.subscriptions.admit(s.id, kind).map_err(refusal)?;
        let id = self.subscriptions.new_id();
        let (events, replay) = self.notifier.subscribe_replay(start, stop);
        let sub = StreamSub {
            kind,
            id,
            session: s.id,
            user: s.username.clone(),
            filter,
            replay: start.is_some(),
            stop,
        };
        tracing::info!(
            subscription = id,
            ?kind,
            replayed = replay.len(),
            "event stream subscription"
        );
        let task = self
            .runtime
            .spawn(sub.run(Arc::clone(self), replay, events, outbox));
        self.subscriptions.started(s.id, id, kind, task, None);
        Ok(id)
    }

    /// RFC 8639 `establish-subscription` (RFC 8641 datastore targets).
    pub(crate) fn op_establish_subscription(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let scope = rpc.op_child_scope();
        if let Some(enc) = op.child(SN_NS, "encoding") {
            if !enc.trimmed_text().ends_with("encode-xml") {
                return Err(sn_error(
                    ErrorTag::InvalidValue,
                    "ietf-subscribed-notifications:encoding-unsupported",
                    "only encode-xml is supported",
                ));
            }
        }
        for unsupported in ["dscp", "weighting", "dependency", "stream-filter-name"] {
            if op.child(SN_NS, unsupported).is_some() {
                return Err(OpError::NotSupported {
                    element: Some(unsupported.into()),
                    message: format!("{unsupported} is not supported"),
                });
            }
        }
        let stop = time_param(op, SN_NS, "stop-time")?;
        let now = SystemTime::now();
        if let Some(stream) = op.child(SN_NS, "stream") {
            if stream.trimmed_text() != NETCONF_STREAM {
                return Err(OpError::InvalidValue {
                    message: format!("no stream {}", stream.trimmed_text()),
                    element: Some("stream"),
                    path: None,
                });
            }
            let filter = if let Some(el) = op.child(SN_NS, "stream-xpath-filter") {
                xpath_filter(self, el, &scope)?
            } else if let Some(el) = op.child(SN_NS, "stream-subtree-filter") {
                filter::subtree_filter(self.ctx, el, &scope)
            } else {
                Filter::All
            };
            let start = time_param(op, SN_NS, "replay-start-time")?;
            if start.is_some_and(|t| t > now) {
                return Err(sn_error(
                    ErrorTag::InvalidValue,
                    "ietf-subscribed-notifications:replay-unsupported",
                    "replay-start-time is in the future",
                ));
            }
            if let (Some(stop), Some(start)) = (stop, start) {
                if stop < start {
                    return Err(bad_element(
                        "stop-time",
                        "stop-time is earlier than replay-start-time",
                    ));
                }
            }
            if start.is_none() && stop.is_some_and(|t| t < now) {
                return Err(bad_element("stop-time", "stop-time is in the past"));
            }
            let id = self.start_stream(s, Kind::Stream, filter, start, stop)?;
            // RFC 8639 2.4.2.1: a start before the log's history is moved
            // to where the history begins, and said so.
            let (created, aged) = self.notifier.log_times();
            let first = aged.unwrap_or(created);
            let revision = match start {
                Some(t) if t < first => format!(
                    "<replay-start-time-revision xmlns=\"{SN_NS}\">{}</replay-start-time-revision>",
                    rfc3339(first)
                ),
                _ => String::new(),
            };
            return Ok((
                format!("<id xmlns=\"{SN_NS}\">{id}</id>{revision}"),
                After::Subscribe,
            ));
        }
        let Some(ds) = op.child(YP_NS, "datastore") else {
            return Err(OpError::MissingParameter {
                element: "stream",
                message: "establish-subscription needs a stream or a datastore".into(),
            });
        };
        if !self.opts.yang_push {
            return Err(OpError::NotSupported {
                element: Some("datastore".into()),
                message: "YANG-push is turned off on this agent (--no-yang-push)".into(),
            });
        }
        match datastore_identity(ds, &scope) {
            Some((ns, name)) if ns == DATASTORES_NS && name == "operational" => {}
            _ => {
                return Err(sn_error(
                    ErrorTag::InvalidValue,
                    "ietf-yang-push:datastore-not-subscribable",
                    "only ds:operational can be subscribed to",
                ))
            }
        }
        if stop.is_some_and(|t| t < now) {
            return Err(bad_element("stop-time", "stop-time is in the past"));
        }
        let spec = push_spec(self, op, &scope, stop)?;
        let outbox = self
            .subscriptions
            .admit(s.id, Kind::Datastore)
            .map_err(refusal)?;
        let id = self.subscriptions.new_id();
        tracing::info!(subscription = id, trigger = ?spec.trigger, "datastore subscription");
        let (control, spec_rx) = tokio::sync::watch::channel(spec);
        let sub = PushSub {
            id,
            session: s.clone(),
        };
        let task = self
            .runtime
            .spawn(sub.run(Arc::clone(self), spec_rx, outbox));
        self.subscriptions
            .started(s.id, id, Kind::Datastore, task, Some(control));
        Ok((format!("<id xmlns=\"{SN_NS}\">{id}</id>"), After::Subscribe))
    }

    /// The subscription `id` of `op` (its `id` in namespace `ns`), owned
    /// by session `s`.
    fn own_subscription(
        &self,
        s: &SessionInfo,
        op: &Element,
        ns: &str,
        identity: &str,
    ) -> Result<(u32, Kind), OpError> {
        let id = op
            .child(ns, "id")
            .ok_or(OpError::MissingParameter {
                element: "id",
                message: "the subscription id is missing".into(),
            })?
            .trimmed_text()
            .parse::<u32>()
            .ok();
        match id.and_then(|id| self.subscriptions.owner(id).map(|o| (id, o))) {
            Some((id, (owner, kind))) if owner == s.id => Ok((id, kind)),
            _ => Err(sn_error(
                ErrorTag::InvalidValue,
                identity,
                "no such subscription of this session",
            )),
        }
    }

    /// RFC 8639 `modify-subscription` of a datastore subscription.
    pub(crate) fn op_modify_subscription(self: &Arc<Self>, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let (id, kind) = self.own_subscription(
            s,
            op,
            SN_NS,
            "ietf-subscribed-notifications:no-such-subscription",
        )?;
        if kind != Kind::Datastore {
            return Err(OpError::NotSupported {
                element: Some("modify-subscription".into()),
                message: "only datastore subscriptions can be modified".into(),
            });
        }
        if op.child(YP_NS, "datastore").is_none() {
            return Err(OpError::MissingParameter {
                element: "datastore",
                message: "modify-subscription of a datastore subscription names its datastore"
                    .into(),
            });
        }
        let stop = time_param(op, SN_NS, "stop-time")?;
        let spec = push_spec(self, op, &rpc.op_child_scope(), stop)?;
        if !self.subscriptions.modify(id, spec) {
            return Err(OpError::Failed("the subscription ended meanwhile".into()));
        }
        // The subscriber's own change is confirmed on its session's stream
        // too, so a receiver reading only notifications sees it.
        self.subscriptions.notify(
            s.id,
            notification_message(
                SystemTime::now(),
                &format!("<subscription-modified xmlns=\"{SN_NS}\"><id>{id}</id></subscription-modified>"),
            ),
        );
        Ok(("<ok/>".into(), After::Subscribe))
    }

    /// RFC 8641 `resync-subscription`: the session's own on-change
    /// subscription sends a full `push-update` at once and reports changes
    /// against it from then on.
    pub(crate) fn op_resync_subscription(&self, s: &SessionInfo, rpc: &Rpc) -> Reply {
        const NO_SUCH: &str = "ietf-yang-push:no-such-subscription-resync";
        let (id, _) = self.own_subscription(s, &rpc.operation, YP_NS, NO_SUCH)?;
        if !self.subscriptions.resync(id) {
            return Err(sn_error(
                ErrorTag::InvalidValue,
                NO_SUCH,
                "only an on-change datastore subscription can be resynchronized",
            ));
        }
        Ok(("<ok/>".into(), After::Subscribe))
    }

    /// RFC 8639 `delete-subscription`: the session's own subscription.
    pub(crate) fn op_delete_subscription(&self, s: &SessionInfo, rpc: &Rpc) -> Reply {
        let (id, _) = self.own_subscription(
            s,
            &rpc.operation,
            SN_NS,
            "ietf-subscribed-notifications:no-such-subscription",
        )?;
        self.subscriptions.end(id, None);
        Ok(("<ok/>".into(), After::Continue))
    }

    /// RFC 8639 `kill-subscription`: any session's (NACM keeps it to
    /// administrators); its receiver is told with `subscription-terminated`.
    pub(crate) fn op_kill_subscription(&self, rpc: &Rpc) -> Reply {
        let op = &rpc.operation;
        let id = op
            .child(SN_NS, "id")
            .and_then(|e| e.trimmed_text().parse::<u32>().ok());
        let notice = |id: u32| {
            notification_message(
                SystemTime::now(),
                &format!(
                    "<subscription-terminated xmlns=\"{SN_NS}\"><id>{id}</id><reason>no-such-subscription</reason></subscription-terminated>"
                ),
            )
        };
        match id {
            Some(id)
                if self
                    .subscriptions
                    .owner(id)
                    .is_some_and(|(_, k)| k != Kind::Rfc5277)
                    && self.subscriptions.end(id, Some(notice(id))) =>
            {
                Ok(("<ok/>".into(), After::Continue))
            }
            _ => Err(sn_error(
                ErrorTag::InvalidValue,
                "ietf-subscribed-notifications:no-such-subscription",
                "no such subscription",
            )),
        }
    }

    /// `/nc-notifications:netconf/streams` and `/sn:streams`: the NETCONF
    /// stream with its replay log.
    pub(crate) fn add_streams(&self, tree: &mut DataTree<'static>) -> Result<(), yang3::Error> {
        let (created, aged) = self.notifier.log_times();
        let description = "Every notification of the agent (RFC 5277 NETCONF stream)";
        let p = format!("/nc-notifications:netconf/streams/stream[name='{NETCONF_STREAM}']");
        tree.new_path(&format!("{p}/description"), Some(description), false)?;
        tree.new_path(&format!("{p}/replaySupport"), Some("true"), false)?;
        tree.new_path(
            &format!("{p}/replayLogCreationTime"),
            Some(&rfc3339(created)),
            false,
        )?;
        if let Some(aged) = aged {
            tree.new_path(
                &format!("{p}/replayLogAgedTime"),
                Some(&rfc3339(aged)),
                false,
            )?;
        }
        let p = format!("/{SN_MODULE}:streams/stream[name='{NETCONF_STREAM}']");
        tree.new_path(&format!("{p}/description"), Some(description), false)?;
        tree.new_path(&format!("{p}/replay-support"), None, false)?;
        tree.new_path(
            &format!("{p}/replay-log-creation-time"),
            Some(&rfc3339(created)),
            false,
        )?;
        if let Some(aged) = aged {
            tree.new_path(
                &format!("{p}/replay-log-aged-time"),
                Some(&rfc3339(aged)),
                false,
            )?;
        }
        Ok(())
    }
}
