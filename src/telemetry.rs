//! Logging (a tracing subscriber, text for people or JSON for collectors), metrics, and the
//! optional export of the same `tracing` spans as OpenTelemetry traces over OTLP/HTTP.

pub mod http;
pub mod prometheus;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

use crate::cli::LogFormat;

/// OpenTelemetry's standard variables (the SDK specification's names).
const OTLP_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const OTLP_TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
const SERVICE_NAME_VAR: &str = "OTEL_SERVICE_NAME";
/// Where OTLP/HTTP takes traces, below a base endpoint.
const TRACES_PATH: &str = "v1/traces";

/// Where and as whom traces are exported; absent unless an endpoint is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The full URL the spans are POSTed to.
    pub traces_url: String,
    pub service_name: String,
}

impl TraceExport {
    /// The export `--otlp-endpoint` (a base URL, like `OTEL_EXPORTER_OTLP_ENDPOINT`) or the
    /// environment configures, in that order; `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is the
    /// full URL and wins over `OTEL_EXPORTER_OTLP_ENDPOINT`, as the specification says. The
    /// service is `OTEL_SERVICE_NAME`, else `default_service`. `env` reads a variable.
    pub fn configured(
        flag: Option<&str>,
        default_service: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Option<Self> {
        let set = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let traces_url = match flag.filter(|value| !value.trim().is_empty()) {
            Some(base) => below(base),
            None => match set(OTLP_TRACES_ENDPOINT_VAR) {
                Some(url) => url,
                None => below(&set(OTLP_ENDPOINT_VAR)?),
            },
        };
        Some(Self {
            traces_url,
            service_name: set(SERVICE_NAME_VAR).unwrap_or_else(|| default_service.to_owned()),
        })
    }
}

fn below(base: &str) -> String {
    format!("{}/{TRACES_PATH}", base.trim_end_matches('/'))
}

/// Keeps the trace exporter running; [`Telemetry::shutdown`] sends what is still buffered.
#[derive(Debug)]
#[must_use = "dropping it without shutdown loses the spans not yet exported"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporter (waits at most its export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not export the last traces");
        }
    }
}

/// Installs the global subscriber. `RUST_LOG` overrides the default `info` filter. With a
/// `traces` export, spans the filter lets through also go to the OTLP endpoint, in batches from
/// a background thread: an unreachable collector slows no request and no start-up.
pub fn init(format: LogFormat, traces: Option<TraceExport>) -> Telemetry {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let (provider, export_error) = match traces.map(|export| tracer_provider(&export)) {
        Some(Ok(provider)) => (Some(provider), None),
        Some(Err(error)) => (None, Some(error)),
        None => (None, None),
    };
    let otel = provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("ferroflow")));
    // A second init (tests) keeps the first subscriber; nothing to report.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(error) = export_error {
        tracing::error!(%error, "OTLP trace export is off: the exporter could not be built");
    }
    Telemetry { provider }
}

fn tracer_provider(
    export: &TraceExport,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(&export.traces_url)
        .build()?;
    let resource = Resource::builder()
        .with_service_name(export.service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(
            TraceExport::configured(None, "ferroflow-server", env(&[])),
            None
        );
        let blank = [(OTLP_ENDPOINT_VAR, " "), (OTLP_TRACES_ENDPOINT_VAR, "")];
        assert_eq!(TraceExport::configured(Some(""), "s", env(&blank)), None);
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path() {
        let vars = [(OTLP_ENDPOINT_VAR, "http://collector:4318/")];
        let export = TraceExport::configured(None, "ferroflow-operator", env(&vars));
        assert_eq!(
            export,
            Some(TraceExport {
                traces_url: "http://collector:4318/v1/traces".into(),
                service_name: "ferroflow-operator".into(),
            })
        );
    }

    #[test]
    fn the_traces_endpoint_is_taken_as_is_and_wins_over_the_base() {
        let vars = [
            (OTLP_ENDPOINT_VAR, "http://base:4318"),
            (OTLP_TRACES_ENDPOINT_VAR, "https://traces.example/otlp"),
            (SERVICE_NAME_VAR, "tracking"),
        ];
        let export = TraceExport::configured(None, "ferroflow-server", env(&vars));
        assert_eq!(
            export,
            Some(TraceExport {
                traces_url: "https://traces.example/otlp".into(),
                service_name: "tracking".into(),
            })
        );
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let vars = [(OTLP_TRACES_ENDPOINT_VAR, "http://env:4318/v1/traces")];
        let export = TraceExport::configured(Some("http://flag:4318"), "s", env(&vars));
        assert_eq!(
            export.map(|export| export.traces_url).as_deref(),
            Some("http://flag:4318/v1/traces")
        );
    }
}
