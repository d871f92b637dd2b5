//! Logging as etcd logs: `--logger zap` (the default) writes one JSON object per line with
//! zap's keys — `level`, `ts` (RFC 3339 UTC, microseconds), `caller` (file:line), `msg`,
//! then the event's fields, their names with dashes as etcd's (`local-member-id`);
//! `--logger capnslog` writes plain text lines. `--log-outputs` names where lines go:
//! `default`/`stderr`, `stdout`, or files (appended to); `--log-level` filters, and
//! `RUST_LOG`, when set, overrides it. Dependencies log warnings and errors only.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use cairn_proto::json::JsonStyle;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// Sets up logging from `--logger`, `--log-outputs` and `--log-level`. An output file
/// that cannot be opened is an error (etcd refuses to start too). A second call (tests
/// calling the entry point twice) keeps the first set-up.
pub fn init(logger: &str, outputs: &[String], level: &str) -> io::Result<()> {
    let level = match level {
        "debug" | "info" | "warn" | "error" => level,
        _ => "error",
    };
    let deps = if level == "error" { "error" } else { "warn" };
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| {
        format!("{level},h2={deps},hyper={deps},hyper_util={deps},tower={deps},rustls={deps},sled={deps}")
    });
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let sinks = Sinks::open(outputs)?;
    let ansi = sinks.is_terminal();
    let builder = tracing_subscriber::fmt().with_writer(sinks).with_env_filter(filter);
    let result = if logger == "capnslog" {
        builder.with_ansi(ansi).try_init()
    } else {
        builder.event_format(ZapJson).try_init()
    };
    if result.is_err() {
        tracing::warn!("logging was already initialised");
    }
    Ok(())
}

/// Where log lines go (`--log-outputs`); every line goes to each.
#[derive(Clone)]
struct Sinks(Arc<Vec<Sink>>);

enum Sink {
    Stderr,
    Stdout,
    File(parking_lot::Mutex<File>),
}

impl Sinks {
    fn open(outputs: &[String]) -> io::Result<Sinks> {
        let mut sinks = Vec::new();
        for o in outputs.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            sinks.push(match o {
                "default" | "stderr" => Sink::Stderr,
                "stdout" => Sink::Stdout,
                path => Sink::File(parking_lot::Mutex::new(
                    std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| {
                        io::Error::new(e.kind(), format!("cannot open --log-outputs file {path}: {e}"))
                    })?,
                )),
            });
        }
        if sinks.is_empty() {
            sinks.push(Sink::Stderr);
        }
        Ok(Sinks(Arc::new(sinks)))
    }

    /// Colours only when every output is a terminal.
    fn is_terminal(&self) -> bool {
        self.0.iter().all(|s| match s {
            Sink::Stderr => io::stderr().is_terminal(),
            Sink::Stdout => io::stdout().is_terminal(),
            Sink::File(_) => false,
        })
    }
}

/// Writes to every sink; the fmt layer hands over one whole line per write.
struct SinkWriter(Arc<Vec<Sink>>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for sink in self.0.iter() {
            // a log line that cannot be written is dropped: logging must not stop the server
            let _ = match sink {
                Sink::Stderr => io::stderr().lock().write_all(buf),
                Sink::Stdout => io::stdout().lock().write_all(buf),
                Sink::File(f) => f.lock().write_all(buf),
            };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sinks {
    type Writer = SinkWriter;

    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(self.0.clone())
    }
}

/// zap's JSON encoder's line shape (see the module docs).
struct ZapJson;

impl<S, N> FormatEvent<S, N> for ZapJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        writer.write_str(&zap_line(event, SystemTime::now()))
    }
}

/// The JSON line for `event` at `now`, newline included.
fn zap_line(event: &Event<'_>, now: SystemTime) -> String {
    let meta = event.metadata();
    let mut fields = JsonFields::default();
    event.record(&mut fields);
    let level = match *meta.level() {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG | Level::TRACE => "debug",
    };
    let caller = match (meta.file(), meta.line()) {
        (Some(f), Some(l)) => format!("{}:{l}", f.rsplit_once("src/").map_or(f, |(_, tail)| tail)),
        _ => meta.target().to_owned(),
    };
    let mut line = String::with_capacity(128 + fields.rest.len());
    let _ = writeln!(
        line,
        "{{\"level\":\"{level}\",\"ts\":\"{}\",\"caller\":{},\"msg\":{}{}}}",
        rfc3339_micros(now),
        json_string(&caller),
        json_string(&fields.message),
        fields.rest
    );
    line
}

/// An event's fields: the message apart, the others as `,"key":value` (keys with dashes).
#[derive(Default)]
struct JsonFields {
    message: String,
    rest: String,
}

impl JsonFields {
    /// Adds a field whose value is already JSON.
    fn push(&mut self, field: &Field, json: String) {
        let _ = write!(self.rest, ",{}:{json}", json_string(&field.name().replace('_', "-")));
    }
}

impl Visit for JsonFields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        match field.name() {
            "message" => self.message = text,
            _ => self.push(field, json_string(&text)),
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "message" => self.message = value.to_owned(),
            _ => self.push(field, json_string(value)),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, serde_json::Value::from(value).to_string());
    }
}

/// A JSON string as zap writes it.
fn json_string(s: &str) -> String {
    cairn_proto::json::json_string(s, JsonStyle::Plain)
}

/// `2006-01-02T15:04:05.000000Z` for `t` (UTC).
fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// (year, month, day) of the `days`-th day after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_micros(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_796_425_199_123_456);
        assert_eq!(rfc3339_micros(t), "2026-12-04T22:59:59.123456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339_micros(leap), "2000-02-29T00:00:00.000000Z");
    }

    /// Captures the line the formatter writes for one event.
    struct Capture(Arc<parking_lot::Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn zap_lines_are_json_with_etcds_keys() {
        let out = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Capture(sink.clone()))
            .event_format(ZapJson)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(local_member_id = %"8e9e05c52164694d", took_ms = 12u64, ok = true, "quoted \"msg\"");
        });
        let text = String::from_utf8(out.lock().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text}");
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["msg"], "quoted \"msg\"");
        assert_eq!(v["local-member-id"], "8e9e05c52164694d");
        assert_eq!(v["took-ms"], 12);
        assert_eq!(v["ok"], true);
        assert!(v["caller"].as_str().unwrap().starts_with("startup/logging.rs:"), "{v}");
        assert!(v["ts"].as_str().unwrap().ends_with('Z'));
        assert!(text.starts_with("{\"level\":\"warn\",\"ts\":"), "zap's key order: {text}");
    }

    #[test]
    fn outputs_open_files_and_refuse_bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.log");
        let sinks = Sinks::open(&[path.display().to_string()]).unwrap();
        sinks.make_writer().write_all(b"one line\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one line\n");
        assert!(Sinks::open(&[dir.path().join("missing/x.log").display().to_string()]).is_err());
    }
}
