//! Validates `telemetry:` (trace export over OTLP/HTTP).

use serde_saphyr::Spanned;

use super::{Validator, line_of, redact_url};
use crate::config::model::TelemetryConfig;
use crate::config::raw::RawTelemetry;

/// `service.name` when the config sets none.
const DEFAULT_SERVICE_NAME: &str = "tollgate";

impl Validator<'_> {
    pub(super) fn telemetry(&mut self, item: &Spanned<RawTelemetry>) -> Option<TelemetryConfig> {
        let raw = &item.value;
        let endpoint = self
            .required(
                &raw.otlp_endpoint,
                line_of(item),
                "telemetry",
                "otlp_endpoint",
            )
            .and_then(|t| self.http_url(t, "telemetry.otlp_endpoint"));
        let endpoint = endpoint.and_then(|url| {
            // The exporter appends `/v1/traces` itself: a URL that already
            // names it would post to `/v1/traces/v1/traces`, and every span
            // would be lost without a word.
            if url.ends_with("/v1/traces") {
                self.error(
                    raw.otlp_endpoint.as_ref().and_then(line_of),
                    format!(
                        "telemetry.otlp_endpoint: `{}` names the traces path; give the collector's base URL (e.g. `http://127.0.0.1:4318`), `/v1/traces` is added",
                        redact_url(&url)
                    ),
                );
                return None;
            }
            Some(url)
        });
        let service_name = match &raw.service_name {
            None => Some(DEFAULT_SERVICE_NAME.to_owned()),
            Some(t) => self.text(t, "telemetry.service_name").and_then(|name| {
                if name.trim().is_empty() {
                    self.error(
                        line_of(t),
                        "telemetry.service_name: must not be empty (leave it out for `tollgate`)"
                            .to_owned(),
                    );
                    None
                } else {
                    Some(name)
                }
            }),
        };
        Some(TelemetryConfig {
            otlp_endpoint: endpoint?,
            service_name: service_name?,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{AlertFormat, load_str};

    fn load(tail: &str) -> Result<crate::config::Config, Vec<String>> {
        let text = format!("listen: 127.0.0.1:0\n{tail}");
        let env = |_: &str| None;
        load_str(&text, "t.yaml", &env).map_err(|e| {
            e.problems
                .iter()
                .map(|p| format!("{}: {}", p.line.unwrap_or(0), p.message))
                .collect()
        })
    }

    #[test]
    fn telemetry_takes_an_http_endpoint_and_an_optional_service_name() {
        let c = load("telemetry: { otlp_endpoint: 'http://127.0.0.1:4318/' }\n").unwrap();
        let t = c.telemetry.unwrap();
        assert_eq!(t.otlp_endpoint, "http://127.0.0.1:4318");
        assert_eq!(t.service_name, "tollgate");
        let c =
            load("telemetry:\n  otlp_endpoint: https://otel.example.com\n  service_name: gw-eu\n")
                .unwrap();
        assert_eq!(c.telemetry.unwrap().service_name, "gw-eu");
        assert!(load("").unwrap().telemetry.is_none());
    }

    #[test]
    fn a_bad_telemetry_section_is_a_config_error_naming_the_key() {
        assert_eq!(
            load("telemetry: { otlp_endpoint: '127.0.0.1:4318' }\n").unwrap_err(),
            [
                "2: telemetry.otlp_endpoint: `127.0.0.1:4318` is not an absolute URL (it needs `http://` or `https://`)"
            ]
        );
        assert_eq!(
            load("telemetry: { otlp_endpoint: 'grpc://c:4317' }\n").unwrap_err(),
            ["2: telemetry.otlp_endpoint: `grpc://c:4317` is not an `http://` or `https://` URL"]
        );
        assert_eq!(
            load("telemetry: { otlp_endpoint: 'http://c:4318/v1/traces' }\n").unwrap_err(),
            [
                "2: telemetry.otlp_endpoint: `http://c:4318/v1/traces` names the traces path; give the collector's base URL (e.g. `http://127.0.0.1:4318`), `/v1/traces` is added"
            ]
        );
        assert_eq!(
            load("telemetry: { service_name: x }\n").unwrap_err(),
            ["2: telemetry: missing `otlp_endpoint`"]
        );
        assert_eq!(
            load("telemetry: { otlp_endpoint: 'http://c', service_name: ' ' }\n").unwrap_err(),
            ["2: telemetry.service_name: must not be empty (leave it out for `tollgate`)"]
        );
        assert_eq!(
            load("telemetry: { otlp_endpoint: 'http://c', endpoint: x }\n").unwrap_err(),
            ["2: telemetry: unknown key `endpoint`; expected one of otlp_endpoint, service_name"]
        );
    }

    #[test]
    fn alerts_format_is_json_by_default_or_slack() {
        let hook = "alerts: { webhook_url: 'http://127.0.0.1:9/hook'";
        let c = load(&format!("{hook} }}\n")).unwrap();
        assert_eq!(c.alerts.unwrap().format, AlertFormat::Json);
        let c = load(&format!("{hook}, format: slack }}\n")).unwrap();
        assert_eq!(c.alerts.unwrap().format, AlertFormat::Slack);
        assert_eq!(
            load(&format!("{hook}, format: teams }}\n")).unwrap_err(),
            ["2: alerts.format: `teams` is not one of json, slack"]
        );
    }
}
