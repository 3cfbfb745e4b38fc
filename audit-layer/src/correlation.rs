//! Tying a record to the distributed trace of its request, and to the service that made it.
//!
//! A record's `trace` holds the W3C Trace Context ids of the request: with the feature
//! `opentelemetry`, the current OpenTelemetry span when the request is served inside one (a
//! `tracing` span of a subscriber with a `tracing-opentelemetry` layer, as `TraceLayer` and
//! most OpenTelemetry setups make); otherwise, the request's `traceparent` header. A header
//! that does not follow the [W3C Trace Context](https://www.w3.org/TR/trace-context/#traceparent-header)
//! grammar exactly (or comes more than once) is ignored: the record then has no `trace`. Its
//! ids are taken for their syntax only; anyone can send any well-formed ids.
//!
//! The record's `service` is the name the app gave the layer
//! ([`AuditLayer::service_name`](crate::AuditLayer::service_name)), for a fleet of services
//! writing into one log.
//!
//! ```
//! use audit_layer::record::Trace;
//!
//! let trace = Trace::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
//! assert_eq!(trace.unwrap().trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
//! // Uppercase hex, an all-zero id, a wrong length: not a traceparent.
//! assert!(Trace::from_traceparent(b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none());
//! assert!(Trace::from_traceparent(b"00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
//! assert!(Trace::from_traceparent(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-").is_none());
//! ```

use std::sync::Arc;

use http::HeaderMap;

use crate::escape;
use crate::record::Trace;

/// The W3C Trace Context request header.
pub const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");

/// The most bytes of a service name; a longer one is cut, with the truncation marker.
pub const MAX_SERVICE_NAME: usize = 256;

/// The length of a version-00 `traceparent`: `vv-<32>-<16>-ff`.
const TRACEPARENT_LEN: usize = 55;

impl Trace {
    /// The ids of a W3C `traceparent` header value, or `None` when it is not one.
    ///
    /// Strictly by the [specification](https://www.w3.org/TR/trace-context/#traceparent-header):
    /// lowercase hex only; version `ff` is invalid; version `00` is exactly 55 bytes
    /// (`00-<trace-id>-<parent-id>-<flags>`); a later version may add fields after a `-`; the
    /// trace id and the parent id are not all zero.
    pub fn from_traceparent(value: &[u8]) -> Option<Self> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = &value[..2];
        if !is_lower_hex(version) || version == b"ff" {
            return None;
        }
        let longer = value.len() > TRACEPARENT_LEN;
        if longer && (version == b"00" || value[TRACEPARENT_LEN] != b'-') {
            return None;
        }
        let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
        let separated = value[2] == b'-' && value[35] == b'-' && value[52] == b'-';
        let valid = separated
            && is_lower_hex(trace_id)
            && is_lower_hex(parent_id)
            && is_lower_hex(flags)
            && !all_zero(trace_id)
            && !all_zero(parent_id);
        // ASCII hex digits, checked above.
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        valid.then(|| Self {
            trace_id: text(trace_id),
            span_id: text(parent_id),
        })
    }
}

fn is_lower_hex(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == b'0')
}

/// The trace of a request: the current OpenTelemetry span (feature `opentelemetry`), else its
/// one valid `traceparent` header.
pub(crate) fn request_trace(headers: &HeaderMap) -> Option<Trace> {
    #[cfg(feature = "opentelemetry")]
    if let Some(trace) = current_span() {
        return Some(trace);
    }
    let mut values = headers.get_all(TRACEPARENT).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => Trace::from_traceparent(value.as_bytes()),
        // None, or several: the specification has a vendor treat several as invalid.
        _ => None,
    }
}

/// The ids of the current `tracing` span's OpenTelemetry context, when it has a valid one.
#[cfg(feature = "opentelemetry")]
fn current_span() -> Option<Trace> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    span_context.is_valid().then(|| Trace {
        trace_id: span_context.trace_id().to_string(),
        span_id: span_context.span_id().to_string(),
    })
}

/// A service name as records carry it: hidden characters escaped, at most
/// [`MAX_SERVICE_NAME`] bytes; `None` when empty.
pub(crate) fn service_name(name: &str) -> Option<Arc<str>> {
    if name.is_empty() {
        return None;
    }
    Some(Arc::from(escape::visible_within(
        name.as_bytes(),
        MAX_SERVICE_NAME,
    )))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::{Request, Response};
    use http_body_util::{BodyExt, Full};
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    use super::*;
    use crate::sink::MemorySink;
    use crate::{AuditLayer, AuditPolicy, AuditRequestBody};

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(value: &str) -> Option<Trace> {
        Trace::from_traceparent(value.as_bytes())
    }

    #[test]
    fn a_valid_traceparent_gives_its_trace_and_parent_ids() {
        let trace = parse(VALID).unwrap();
        assert_eq!(trace.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(trace.span_id, "00f067aa0ba902b7");
        // Not sampled is still a trace.
        assert!(parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").is_some());
    }

    #[test]
    fn a_later_version_may_carry_more_fields_after_a_dash() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse(later).is_some());
        assert!(parse(&format!("{later}-what-the-future-holds")).is_some());
        assert!(parse(&format!("{later}x")).is_none());
    }

    #[test]
    fn anything_off_the_grammar_is_not_a_trace() {
        let zero_trace = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        let zero_parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01";
        let bad = [
            "",
            "00",
            &VALID[..54],
            &format!("{VALID}-01"),
            &format!(" {}", &VALID[1..]),
            &VALID.to_uppercase(),
            &VALID.replace("-01", "-0g"),
            &VALID.replacen('-', "_", 1),
            &VALID.replacen("00-", "ff-", 1),
            &VALID.replacen("00-", "0-0", 1),
            zero_trace,
            zero_parent,
            "00-4bf92f3577b34da6a3ce929d0e0e473\u{e9}-00f067aa0ba902b7-01",
        ];
        for value in bad {
            assert_eq!(parse(value), None, "{value:?}");
        }
        assert_eq!(Trace::from_traceparent(&[0xff; 55]), None);
    }

    /// What the record of a request with the `traceparent` headers `traceparents`, through a
    /// layer named `service_name`, says of its trace and service.
    async fn correlation_of(
        service_name: Option<&str>,
        traceparents: &[&str],
    ) -> (Option<Trace>, Option<Arc<str>>) {
        let sink = MemorySink::new();
        let mut layer = AuditLayer::new(AuditPolicy::default()).sink(sink.clone());
        if let Some(name) = service_name {
            layer = layer.service_name(name);
        }
        let mut req = Request::get("/status").body(Full::default()).unwrap();
        for value in traceparents {
            req.headers_mut()
                .append(TRACEPARENT, value.parse().unwrap());
        }
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            |_req: Request<AuditRequestBody<Full<Bytes>>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            },
        ));
        svc.oneshot(req)
            .await
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
        let record = sink
            .wait_for(1, std::time::Duration::from_secs(5))
            .await
            .remove(0);
        (record.trace, record.service)
    }

    #[tokio::test]
    async fn a_request_with_a_traceparent_is_recorded_with_its_trace_and_the_service() {
        let (trace, service) = correlation_of(Some("billing-api"), &[VALID]).await;
        assert_eq!(trace, parse(VALID));
        assert_eq!(service.as_deref(), Some("billing-api"));
    }

    #[tokio::test]
    async fn an_invalid_or_repeated_traceparent_is_ignored() {
        for values in [vec!["00-not-a-trace"], vec![VALID, VALID]] {
            let (trace, service) = correlation_of(None, &values).await;
            assert_eq!(trace, None);
            assert_eq!(service, None, "no service name configured");
        }
    }

    /// Served inside a span of a subscriber with an OpenTelemetry layer, the record carries
    /// that span's ids, not the header's.
    #[cfg(feature = "opentelemetry")]
    #[tokio::test]
    async fn the_current_opentelemetry_span_comes_before_the_header() {
        use opentelemetry::trace::{TraceContextExt, TracerProvider};
        use tracing::Instrument;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        use tracing_subscriber::layer::SubscriberExt;

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("audit-layer")));
        let _default = tracing::subscriber::set_default(subscriber);

        let span = tracing::info_span!("request");
        let expected = {
            let context = span.context();
            let span_context = context.span().span_context().clone();
            assert!(span_context.is_valid());
            Trace {
                trace_id: span_context.trace_id().to_string(),
                span_id: span_context.span_id().to_string(),
            }
        };
        let (trace, _) = correlation_of(None, &[VALID]).instrument(span).await;
        assert_eq!(trace, Some(expected));
        assert_ne!(trace, parse(VALID));

        // Outside any span, the header.
        assert_eq!(correlation_of(None, &[VALID]).await.0, parse(VALID));
    }

    #[test]
    fn a_service_name_is_escaped_and_bounded() {
        assert_eq!(service_name(""), None);
        assert_eq!(service_name("api\u{202e}").as_deref(), Some(r"api\u{202e}"));
        let long = service_name(&"s".repeat(10_000)).unwrap();
        assert_eq!(long.len(), MAX_SERVICE_NAME);
        assert!(long.contains(escape::TRUNCATION_MARKER));
    }
}
