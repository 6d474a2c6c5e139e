//! Log lines. As text by default; under Lambda's `AWS_LAMBDA_LOG_FORMAT=JSON`, one flat JSON
//! object per line, with the fields of the event and of its spans (the request id, the
//! discount) at the top level, so that Logs Insights queries them by name. Fields named
//! `…Ids` are lists, logged with [`Ids`], and come out as JSON arrays.

use std::fmt;

use aws_sdk_dynamodb::primitives::{DateTime, DateTimeFormat};
use lambda_runtime::tracing::subscriber::{
    self,
    filter::{EnvFilter, LevelFilter},
    fmt::{format::JsonFields, FmtContext, FormatEvent, FormatFields, FormattedFields},
    registry::LookupSpan,
};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};

/// The subscriber for this process: Lambda's log level and format controls, on stdout.
pub fn init() {
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.parse().ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .from_env_lossy();
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout);
    if json {
        builder
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .init();
    } else {
        builder.with_target(false).without_time().init();
    }
}

/// A list of ids as a log field: `["a","b"]` in text, an array in JSON.
pub struct Ids<'a, T>(pub &'a [T]);

impl<T: fmt::Display> fmt::Display for Ids<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&serde_json::to_string(&ids).map_err(|_| fmt::Error)?)
    }
}

/// One JSON object per event: `timestamp`, `level`, `message`, then the span fields from
/// the outermost in, then the event's own fields.
pub struct FlatJson;

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: subscriber::fmt::format::Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut line = Map::new();
        let now = DateTime::from(std::time::SystemTime::now());
        if let Ok(timestamp) = now.fmt(DateTimeFormat::DateTime) {
            line.insert("timestamp".into(), timestamp.into());
        }
        line.insert("level".into(), event.metadata().level().as_str().into());
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                let fields = extensions.get::<FormattedFields<N>>();
                if let Some(Ok(Value::Object(fields))) =
                    fields.map(|fields| serde_json::from_str::<Value>(fields.as_str()))
                {
                    line.extend(fields);
                }
            }
        }
        event.record(&mut JsonValues(&mut line));
        writeln!(writer, "{}", Value::Object(line))
    }
}

/// Records fields as JSON values of their own type.
struct JsonValues<'a>(&'a mut Map<String, Value>);

impl JsonValues<'_> {
    fn insert(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().to_owned(), value);
    }
}

impl Visit for JsonValues<'_> {
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.insert(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.insert(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.insert(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.insert(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.insert(field, value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let value = match field.name().ends_with("Ids") {
            true => serde_json::from_str(&text).unwrap_or(Value::String(text)),
            false => Value::String(text),
        };
        self.insert(field, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tracing::{info, info_span};

    /// The lines `run` logs, formatted by [`FlatJson`] without a global subscriber.
    fn json_lines_for(run: impl FnOnce()) -> Vec<Value> {
        use std::sync::{Arc, Mutex};
        let written = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = written.clone();
        let subscriber = subscriber::fmt()
            .with_writer(move || TestWriter(sink.clone()))
            .fmt_fields(JsonFields::new())
            .event_format(FlatJson)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    struct TestWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for TestWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_json_line_is_flat_with_typed_values_and_lists_as_arrays() {
        let lines = json_lines_for(|| {
            let _request = info_span!("invoke", requestId = "req-1").entered();
            let _discount = info_span!("discount", discountId = "d-1").entered();
            let orders = ["o1".to_owned(), "o\"2".to_owned()];
            info!(orderIds = %Ids(&orders), k = 2_u64, applied = true, action = "decremented", "written");
        });
        let [line] = lines.as_slice() else {
            panic!("one line expected, got {lines:?}")
        };
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["message"], "written");
        assert_eq!(line["requestId"], "req-1");
        assert_eq!(line["discountId"], "d-1");
        assert_eq!(line["orderIds"], json!(["o1", "o\"2"]));
        assert_eq!(line["k"], json!(2));
        assert_eq!(line["applied"], json!(true));
        assert_eq!(line["action"], "decremented");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn only_fields_named_as_lists_are_read_as_json() {
        let lines = json_lines_for(|| {
            let id = "[1]";
            info!(orderId = %id, "an order id that looks like JSON stays a string");
        });
        assert_eq!(lines[0]["orderId"], "[1]");
    }
}
